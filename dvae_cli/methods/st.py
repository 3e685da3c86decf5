"""Plain straight-through (Bengio et al. 2013): the exact one-hot Gumbel-max sample forward,
the gradient of softmax(theta / tau) backward (d y / d softmax(theta / tau) taken as the identity;
tau = 1 is the gradient of pi itself, the form the ReinMax paper, Liu et al. 2023, calls ST).

Owns: the straight-through loss and its temperature. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class StraightThroughConfig(CommonConfig):
    st_tau: float = field(
        default=1.0, metadata={"help": "ST: temperature of the softmax(theta / tau) the gradient goes through",
                               "above": 0}
    )


class StraightThrough(Method):
    name = "st"
    summary = "straight-through: one-hot sample forward, gradient of softmax(theta / tau) backward"
    Config = StraightThroughConfig
    temperature = ("st_tau",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)  # theta, normalized: softmax(theta / tau) is the same for any shift
        tau = self.config.st_tau
        # tau = 1: pi itself, the computation (and numbers) of st before it had a temperature
        soft = log_pi.exp() if tau == 1 else F.softmax(log_pi / tau, dim=-1)
        y = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes)) + soft - soft.detach()
        return neg_elbo_step(model, x, log_pi, y)
