"""Straight-through Gumbel-Softmax: the one-hot of the relaxed sample forward, its
relaxed gradient backward (Jang et al. 2017, "ST Gumbel-Softmax").

Owns: the straight-through Gumbel-Softmax loss. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from torch import Tensor

from ..model import DiscreteVAE, one_hot_argmax, relaxed_sample
from .base import Method, Noise, Step, neg_elbo_step
from .gumbel import GumbelConfig, temperature_schedule


class STGumbel(Method):
    name = "st-gumbel"
    summary = "straight-through Gumbel-Softmax (hard forward, relaxed backward)"
    Config = GumbelConfig
    temperature = ("tau0", "tau_min")

    def anneal(self, epoch: int) -> dict[str, float]:
        return temperature_schedule(self.config, epoch)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        soft = relaxed_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes), schedule["tau"])
        hard = one_hot_argmax(soft.detach())
        y = hard + soft - soft.detach()
        return neg_elbo_step(model, x, log_pi, y)
