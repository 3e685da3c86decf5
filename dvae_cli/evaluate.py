"""Evaluation with exact one-hot samples: reconstruction log-likelihood, KL, ELBO, an
importance-weighted estimate of log p(x), and statistics of the codes.

Owns: the metrics. Must not: train, write files or draw noise other than through model.draw_gumbel."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .model import DiscreteVAE, draw_gumbel, kl_to_uniform, log_likelihood, relaxed_sample, sample_indices
from .seeds import check_seed

DEFAULT_IW_SAMPLES = 100


class CodeUse:
    """The code statistics of `code_statistics`, gathered batch by batch from log pi (so that a pass
    that encodes the data anyway, as `elbo_terms`, need not encode it again)."""

    def __init__(self, latent_vars: int, classes: int, device: torch.device):
        self.max_prob = torch.zeros((), device=device, dtype=torch.float64)
        self.marginal = torch.zeros(latent_vars, classes, device=device, dtype=torch.float64)
        self.images = 0

    def add(self, log_pi: Tensor) -> None:
        pi = log_pi.exp()
        self.max_prob += pi.amax(dim=-1).sum().double()
        self.marginal += pi.sum(dim=0).double()
        self.images += len(log_pi)

    def result(self) -> dict:
        """Mean max-probability of pi, and each variable's perplexity exp(H(mean_x pi_d(x)))."""
        n = max(self.images, 1)
        marginal = self.marginal / n
        perplexity = torch.exp(-(marginal * marginal.clamp_min(1e-30).log()).sum(dim=-1)).tolist()
        return {
            "mean_max_prob": self.max_prob.item() / (n * marginal.shape[0]),
            "perplexity": perplexity,
            "perplexity_min": min(perplexity),
            "perplexity_mean": sum(perplexity) / len(perplexity),
            "perplexity_max": max(perplexity),
        }


@torch.no_grad()
def elbo_terms(
    model: DiscreteVAE, data: Tensor, generator: torch.Generator, batch_size: int = 1000,
    code_use: CodeUse | None = None,
) -> dict[str, float]:
    """Per-image means of log p(x|y) (y one Gumbel-max one-hot sample), KL and -ELBO; with `code_use`,
    the code statistics of the same pass gathered there too."""
    cfg = model.config
    totals = torch.zeros(2, device=data.device, dtype=torch.float64)
    for start in range(0, len(data), batch_size):
        x = data[start : start + batch_size]
        log_pi = model.encode(x)
        if code_use is not None:
            code_use.add(log_pi)
        codes = sample_indices(log_pi, draw_gumbel(generator, (len(x), cfg.latent_vars, cfg.classes)))
        log_lik = log_likelihood(model.decode_indices(codes), x)
        totals += torch.stack([log_lik.sum(), kl_to_uniform(log_pi).sum()]).double()
    log_lik, kl = (totals / max(len(data), 1)).tolist()
    return {"log_lik": log_lik, "kl": kl, "neg_elbo": kl - log_lik}


@torch.no_grad()
def iw_log_px(
    model: DiscreteVAE, x: Tensor, samples: int, generator: torch.Generator, rows: int = 10_000,
    decode_rows: int = 2_000,
) -> Tensor:
    """Importance-weighted estimate of log p(x) per image with `samples` draws from q(y|x).

    log p(x) ~ logmeanexp_s [log p(x|y_s) + log p(y_s) - log q(y_s|x)], log p(y) = -D log K.
    The noise is drawn for about `rows` (sample, image) pairs at a time: these draws fix the
    random stream, so the estimate depends on `rows` and the batch x. The codes are decoded as
    class indices (`DiscreteVAE.decode_indices`), about `decode_rows` pairs at a time so that the
    temporaries stay in cache; that does not change the numbers.
    """
    cfg = model.config
    log_prior = -cfg.latent_vars * math.log(cfg.classes)
    log_pi = model.encode(x)  # (B, D, K)
    per_draw = max(1, rows // max(len(x), 1))
    per_decode = max(1, decode_rows // max(len(x), 1))
    log_w = []
    for start in range(0, samples, per_draw):
        gumbel = draw_gumbel(generator, (min(per_draw, samples - start), *log_pi.shape))
        for g in gumbel.split(per_decode):  # (s, B, D, K)
            codes = sample_indices(log_pi, g)  # (s, B, D)
            log_q = log_pi.expand(len(g), *log_pi.shape).gather(-1, codes.unsqueeze(-1)).sum(dim=(-2, -1))
            x_logits = model.decode_indices(codes.flatten(0, 1)).view(len(g), len(x), -1)
            log_w.append(log_likelihood(x_logits, x) + log_prior - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(samples)


@torch.no_grad()
def code_statistics(model: DiscreteVAE, data: Tensor, batch_size: int = 1000) -> dict:
    """Mean max-probability of pi, and each variable's perplexity exp(H(mean_x pi_d(x)))."""
    use = CodeUse(model.config.latent_vars, model.config.classes, data.device)
    for start in range(0, len(data), batch_size):
        use.add(model.encode(data[start : start + batch_size]))
    return use.result()


@torch.no_grad()
def evaluate(
    model: DiscreteVAE,
    data: Tensor,
    iw_samples: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """All metrics of `model` on `data` (N, pixels), averaged per image.

    ELBO terms use one exact one-hot sample per image; `iw_samples` (0 = skip) sets the
    importance-weighted bound. `on_batch(n)` is called after each batch of n images.
    """
    model.eval()
    generator = torch.Generator(device=data.device).manual_seed(check_seed(seed))
    result = {"images": len(data), **elbo_terms(model, data, generator)}
    if iw_samples > 0:
        total = torch.zeros((), device=data.device, dtype=torch.float64)
        for start in range(0, len(data), batch_size):
            x = data[start : start + batch_size]
            total += iw_log_px(model, x, iw_samples, generator).sum().double()
            if on_batch:
                on_batch(len(x))
        result["iw_log_px"] = total.item() / max(len(data), 1)
        result["iw_samples"] = iw_samples
    result.update(code_statistics(model, data))
    return result


@torch.no_grad()
def relaxed_log_lik(
    model: DiscreteVAE, data: Tensor, tau: float, generator: torch.Generator, batch_size: int = 1000
) -> float:
    """Per-image mean of log p(x|y) with y the relaxed Gumbel-Softmax sample at temperature tau.

    What Gumbel-Softmax training measures on its relaxed codes (not a one-hot evaluation);
    used to compare with the thesis's Gumbel numbers like for like.
    """
    cfg = model.config
    total = torch.zeros((), device=data.device, dtype=torch.float64)
    for start in range(0, len(data), batch_size):
        x = data[start : start + batch_size]
        log_pi = model.encode(x)
        y = relaxed_sample(log_pi, draw_gumbel(generator, (len(x), cfg.latent_vars, cfg.classes)), tau)
        total += log_likelihood(model.decode(y), x).sum().double()
    return total.item() / max(len(data), 1)
