"""Gumbel-Softmax (Jang et al. 2017; Maddison et al. 2017): the relaxed sample
softmax((log pi + g) / tau), trained by backpropagation on -ELBO, tau annealed per epoch.

Owns: the Gumbel-Softmax loss, its settings and temperature schedule. Must not: draw noise
itself (methods.Noise; the relaxed sample is model.relaxed_sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

from ..model import DiscreteVAE, relaxed_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class GumbelConfig(CommonConfig):
    tau0: float = field(default=1.0, metadata={"help": "Gumbel: initial temperature", "above": 0})
    tau_min: float = field(default=0.5, metadata={"help": "Gumbel: final (minimum) temperature", "above": 0})
    anneal_rate: float = field(
        default=0.015,
        metadata={"help": "Gumbel: tau = max(tau_min, tau0 * exp(-rate * epoch))", "min": 0},
    )
    lr_decay: float = field(
        default=1.0, metadata={"help": "Gumbel: learning rate multiplied by this every epoch", "above": 0, "max": 1}
    )


def temperature_schedule(config: GumbelConfig, epoch: int) -> dict[str, float]:
    """tau and lr factor for an epoch (0-based)."""
    tau = max(config.tau_min, config.tau0 * math.exp(-config.anneal_rate * epoch))
    return {"tau": tau, "lr_scale": config.lr_decay**epoch}


class Gumbel(Method):
    name = "gumbel"
    summary = "relaxed Gumbel-Softmax, backpropagation on -ELBO"
    Config = GumbelConfig
    temperature = ("tau0", "tau_min")

    def anneal(self, epoch: int) -> dict[str, float]:
        return temperature_schedule(self.config, epoch)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        y = relaxed_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes), schedule["tau"])
        return neg_elbo_step(model, x, log_pi, y)
