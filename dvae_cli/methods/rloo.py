"""Score-function (REINFORCE) gradient with a leave-one-out baseline (Kool et al. 2019):
S one-hot samples per image; the decoder is trained on their -log p(x|y); the encoder on
-(1/S) sum_s (f_s - mean of the other f) log q(y_s|x) + KL, with f_s = log p(x|y_s).

Owns: the RLOO loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..model import DiscreteVAE, kl_to_uniform, log_likelihood, one_hot_sample
from .base import CommonConfig, Method, Noise, Step


@dataclass
class RLOOConfig(CommonConfig):
    samples: int = field(default=4, metadata={"help": "RLOO: samples per image (at least 2: a leave-one-out "
                                                      "baseline needs another sample)", "min": 2})


class RLOO(Method):
    name = "rloo"
    summary = "score function (REINFORCE) with a leave-one-out baseline over S samples"
    Config = RLOOConfig

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg, s = model.config, self.config.samples
        log_pi = model.encode(x)  # (B, D, K)
        gumbel = noise.gumbel(s, cfg.latent_vars, cfg.classes).transpose(0, 1)  # (S, B, D, K)
        y = one_hot_sample(log_pi.expand_as(gumbel), gumbel)
        log_lik = log_likelihood(model.decode(y.flatten(0, 1)), x.repeat(s, 1)).view(s, len(x))
        log_q = (y * log_pi).sum(dim=(-2, -1))  # (S, B): the gradient reaches the encoder here only
        reward = log_lik.detach()
        baseline = (reward.sum(dim=0, keepdim=True) - reward) / (s - 1)
        surrogate = ((reward - baseline) * log_q).mean(dim=0)
        kl = kl_to_uniform(log_pi)
        loss = (kl - log_lik.mean(dim=0) - surrogate).mean()
        return Step(loss, log_lik.mean(dim=0).detach(), kl.detach(), log_pi)
