"""Straight-through Gumbel-Softmax: the one-hot of the relaxed sample forward, its
relaxed gradient backward (Jang et al. 2017, "ST Gumbel-Softmax")."""

from __future__ import annotations

from torch import Tensor

from ..model import DiscreteVAE, kl_to_uniform, log_likelihood, one_hot_argmax
from .base import Method, Noise, Step
from .gumbel import GumbelConfig, relaxed_sample, temperature_schedule


class STGumbel(Method):
    name = "st-gumbel"
    summary = "straight-through Gumbel-Softmax (hard forward, relaxed backward)"
    Config = GumbelConfig

    def anneal(self, epoch: int) -> dict[str, float]:
        return temperature_schedule(self.config, epoch)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        soft = relaxed_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes), schedule["tau"])
        hard = one_hot_argmax(soft.detach())
        y = hard + soft - soft.detach()
        log_lik = log_likelihood(model.decode(y), x)
        kl = kl_to_uniform(log_pi)
        return Step((kl - log_lik).mean(), log_lik.detach(), kl.detach(), log_pi)
