"""Gapped straight-through, GST (Fan, Chi, Rudnicky and Ramadge, ICML 2022, "Training Discrete
Deep Generative Models via Gapped Straight-Through Estimator"): Gumbel-Rao's conditioning without
its Monte Carlo. Instead of averaging conditional Gumbel perturbations, the logits theta are moved
by a deterministic perturbation m(theta, D) that has the two properties the paper asks of it:
consistency (the sampled class D becomes the argmax) and a strict gap (it then leads every other
class by at least kappa), moving as little as that takes:

    theta'_D = max_k theta_k                          (D raised to the top)
    theta'_j = min(theta_j, max_k theta_k - kappa)    (j != D: the others at least kappa below)

Forward: the exact one-hot sample D. Backward: the gradient of softmax((theta + stopgrad(theta' -
theta)) / tau), i.e. J(softmax(theta' / tau)) / tau with J(p) = diag(p) - p p^T. (The paper's
kappa = 1 is its GST-1.0; its GST-p, with a gap that depends on pi_D, is not implemented.)

Owns: the GST loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class GSTConfig(CommonConfig):
    gst_gap: float = field(default=1.0, metadata={"help": "GST: kappa, the gap by which the sampled class's "
                                                  "moved logit leads the others", "min": 0})
    gst_tau: float = field(default=1.0, metadata={"help": "GST: temperature of the softmax of the moved logits",
                                                  "above": 0})


def gapped_logits_shift(log_pi: Tensor, sample: Tensor, gap: float) -> Tensor:
    """theta' - theta for theta = log pi and the one-hot `sample` (a constant: no gradient)."""
    theta = log_pi.detach()
    top = theta.max(dim=-1, keepdim=True).values
    raise_sampled = (top - theta) * sample
    lower_others = (theta - top + gap).clamp_min(0) * (1 - sample)
    return raise_sampled - lower_others


class GST(Method):
    name = "gst"
    summary = "gapped straight-through: the sample's logits moved to lead by a gap, softmax backward (Fan et al. 2022)"
    Config = GSTConfig
    temperature = ("gst_tau",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        soft = F.softmax((log_pi + gapped_logits_shift(log_pi, sample, self.config.gst_gap)) / self.config.gst_tau,
                         dim=-1)
        y = sample + soft - soft.detach()
        return neg_elbo_step(model, x, log_pi, y)
