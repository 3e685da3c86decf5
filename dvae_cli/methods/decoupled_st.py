"""Decoupled straight-through (Shah, Yan, Mozer and Liu, arXiv 2410.13331, "Improving Discrete
Optimisation Via Decoupled Straight-Through Estimator"): straight-through with one temperature for the
forward pass and another for the backward pass, so that how much the sample explores and how the
gradient spreads over the classes are tuned apart.

Forward: the one-hot Gumbel-max sample of softmax(theta / tau_f), i.e. argmax(theta / tau_f + g).
Backward: the gradient of softmax(theta / tau_b) (y = D_f + s_b - stopgrad(s_b)). With tau_f = 1 the
sample is q's own and the method is `st` at tau = tau_b. (The paper's first version, "Decoupled
ST-GS", used the Gumbel-Softmax softmax((theta + g) / tau_b) backward; this is its later form.)
With tau_f != 1 the decoder is trained on samples of softmax(theta / tau_f), not of q, while the
KL term is q's.

Owns: the decoupled-ST loss and its temperatures. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_argmax
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class DecoupledSTConfig(CommonConfig):
    tau_forward: float = field(default=1.0, metadata={
        "help": "decoupled ST: tau_f, the forward sample is drawn from softmax(theta / tau_f)", "above": 0})
    tau_backward: float = field(default=1.0, metadata={
        "help": "decoupled ST: tau_b, the gradient is that of softmax(theta / tau_b)", "above": 0})


class DecoupledST(Method):
    name = "decoupled-st"
    summary = ("decoupled straight-through: sample of softmax(theta / tau_f) forward, gradient of "
               "softmax(theta / tau_b) backward (Shah et al. 2024)")
    Config = DecoupledSTConfig
    # A preset's temperature is the backward one, the role st's single temperature plays; tau_f
    # stays its own setting (1: the sample is q's).
    temperature = ("tau_backward",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg, c = model.config, self.config
        log_pi = model.encode(x)
        gumbel = noise.gumbel(cfg.latent_vars, cfg.classes)
        sample = one_hot_argmax(log_pi.detach() / c.tau_forward + gumbel)
        soft = F.softmax(log_pi / c.tau_backward, dim=-1)
        y = sample + soft - soft.detach()
        return neg_elbo_step(model, x, log_pi, y)
