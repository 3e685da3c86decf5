"""ReinMax (Liu et al., NeurIPS 2023, "Bridging Discrete and Backpropagation: Straight-Through
and Beyond", Algorithm 2): a straight-through estimator with second-order accuracy (Heun's
method). Forward: the exact one-hot sample D of pi0 = softmax(theta). Backward: the gradient of
pi2 = 2 pi1 - pi0 / 2, where pi1 = (D + softmax(theta / tau)) / 2 enters through a softmax
Jacobian taken at pi1.

Owns: the ReinMax loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class ReinMaxConfig(CommonConfig):
    reinmax_tau: float = field(
        default=1.0, metadata={"help": "ReinMax: temperature of the softmax in pi1 (the paper wants >= 1)", "above": 0}
    )


def reinmax_pi2(log_pi: Tensor, sample: Tensor, tau: float) -> Tensor:
    """pi2 = 2 pi1 - pi0 / 2 with pi1 = (D + softmax(theta / tau)) / 2 entering through the softmax
    Jacobian at pi1: y = D + pi2 - stopgrad(pi2) is ReinMax's code."""
    pi0 = log_pi.exp()
    pi1 = 0.5 * (sample + F.softmax(log_pi / tau, dim=-1))
    pi1 = F.softmax((pi1.log() - log_pi).detach() + log_pi, dim=-1)  # value pi1, Jacobian at pi1
    return 2 * pi1 - 0.5 * pi0


class ReinMax(Method):
    name = "reinmax"
    summary = "ReinMax, the second-order straight-through estimator (Liu et al. 2023)"
    Config = ReinMaxConfig
    temperature = ("reinmax_tau",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)  # theta, normalized: softmax(log pi) = pi
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        pi2 = reinmax_pi2(log_pi, sample, self.config.reinmax_tau)
        y = sample + pi2 - pi2.detach()
        return neg_elbo_step(model, x, log_pi, y)
