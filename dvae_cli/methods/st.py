"""Plain straight-through (Bengio et al. 2013): the exact one-hot Gumbel-max sample forward,
the gradient of pi = softmax(logits) backward (d y / d pi taken as the identity).

Owns: the straight-through loss. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import Method, Noise, Step, neg_elbo_step


class StraightThrough(Method):
    name = "st"
    summary = "straight-through: one-hot sample forward, gradient of pi backward"

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        pi = log_pi.exp()
        y = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes)) + pi - pi.detach()
        return neg_elbo_step(model, x, log_pi, y)
