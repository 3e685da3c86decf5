"""IndeCateR (De Smet, Sansone and Zuidberg Dos Martires, NeurIPS 2023, "Differentiable Sampling of
Categorical Distributions Using the CatLog-Derivative Trick"): an unbiased gradient for a product of
independent categoricals that sums exactly over each variable's classes, the others at their sample:

    grad E_q[f(y)] = sum_d E_{y_-d ~ q} [ sum_c grad pi_dc f(y_-d, y_d = c) ]       (their eq. 9)

with f = log p(x|y); q's KL to the uniform prior is analytic, as for every method. The estimate is
the mean over S samples y_s of sum_d sum_c grad pi_dc f(y_s with variable d set to c), the surrogate
sum_d sum_c pi_dc stopgrad(f_sdc). A baseline per variable would change nothing: sum_c grad pi_dc = 0.
The decoder learns from the sampled codes' -log p(x|y_s), as in rloo.py.

Cost: D x C decoder passes per sample and image (300 at 10x30), batched in chunks of at most
CHUNK_ROWS codes, no gradient kept; the decoder's own update uses the S sampled codes.

Owns: the IndeCateR loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..model import DiscreteVAE, kl_to_uniform, log_likelihood, one_hot_sample
from .base import CommonConfig, Method, Noise, Step

CHUNK_ROWS = 20_000  # codes per decoder call for the D x C neighbours (bounds memory: ~60 MB at 784 pixels)


@dataclass
class IndeCateRConfig(CommonConfig):
    indecater_samples: int = field(default=1, metadata={
        "help": "IndeCateR: S, samples per image, each costing D x C decoder passes", "min": 1})


def neighbours(y: Tensor) -> Tensor:
    """Every code that differs from y (..., D, C) in at most variable d, set to class c: (..., D, C, D, C),
    index [..., d, c] being y with row d replaced by one_hot(c)."""
    d, c = y.shape[-2:]
    eye_d = torch.eye(d, dtype=y.dtype, device=y.device).view(d, 1, d, 1)  # which row is replaced
    one_hot = torch.eye(c, dtype=y.dtype, device=y.device).view(1, c, 1, c)  # by which class
    y = y.unsqueeze(-3).unsqueeze(-3)  # (..., 1, 1, D, C)
    return y * (1 - eye_d) + eye_d * one_hot


def neighbour_log_likelihoods(model: DiscreteVAE, x: Tensor, y: Tensor) -> Tensor:
    """f_dc = log p(x | y with variable d set to c), (S, B, D, C), without gradient."""
    s, b, d, c = y.shape
    codes = neighbours(y).reshape(s, b, d * c, d, c)
    per_image = d * c
    with torch.no_grad():
        values = []
        rows = max(1, CHUNK_ROWS // per_image)  # images per chunk
        for start in range(0, max(b, 1), rows):  # one (empty) chunk for an empty batch slice
            chunk = codes[:, start:start + rows]  # (S, b', D*C, D, C)
            logits = model.decode(chunk.flatten(0, 2))
            images = x[start:start + rows].unsqueeze(1).expand(-1, per_image, -1).repeat(s, 1, 1).flatten(0, 1)
            values.append(log_likelihood(logits, images).view(s, chunk.shape[1], d, c))
        return torch.cat(values, dim=1)


class IndeCateR(Method):
    name = "indecater"
    summary = ("IndeCateR: unbiased, each variable summed exactly over its classes, the others sampled "
               "(De Smet et al. 2023); D x C decoder passes per sample")
    Config = IndeCateRConfig

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg, s = model.config, self.config.indecater_samples
        log_pi = model.encode(x)  # (B, D, C)
        gumbel = noise.gumbel(s, cfg.latent_vars, cfg.classes).transpose(0, 1)  # (S, B, D, C)
        y = one_hot_sample(log_pi.expand_as(gumbel), gumbel)
        log_lik = log_likelihood(model.decode(y.flatten(0, 1)), x.repeat(s, 1)).view(s, len(x))  # decoder
        f = neighbour_log_likelihoods(model, x, y)  # (S, B, D, C), constants
        surrogate = (log_pi.exp() * f).sum(dim=(-2, -1)).mean(dim=0)  # encoder: sum_d sum_c pi_dc f_dc
        surrogate = surrogate - surrogate.detach()  # its gradient only: the loss reads as the -ELBO
        kl = kl_to_uniform(log_pi)
        loss = (kl - log_lik.mean(dim=0) - surrogate).mean()
        return Step(loss, log_lik.mean(dim=0).detach(), kl.detach(), log_pi)
