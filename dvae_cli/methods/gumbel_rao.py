"""Gumbel-Rao (Paulus, Maddison and Krause, ICLR 2021, "Rao-Blackwellizing the Straight-Through
Gumbel-Softmax Gradient Estimator"): straight-through Gumbel-Softmax with its backward
Rao-Blackwellised over the Gumbel noise given the sample.

Forward: the exact one-hot sample D of pi (Gumbel-max). Backward: the gradient of
E[softmax((theta + g) / tau) | D], the mean over K draws of the Gumbel-perturbed logits
conditioned on their argmax being D (the paper's Monte Carlo estimator, GR-MCK): with Z = 1
(theta = log pi is normalized) the largest perturbed logit is G_D = g_D ~ Gumbel(0), independent of
D, and every other one is a Gumbel(theta_j) truncated below G_D,
G_j = -log(exp(-(theta_j + g_j)) + exp(-G_D)) (the top-down construction the paper uses, from
Maddison et al. 2014). The perturbation G - theta is a constant: the gradient flows through theta.
Since E[E[. | D]] = E[.], the update's expectation is ST Gumbel-Softmax's, with no more variance.

Owns: the Gumbel-Rao loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step


@dataclass
class GumbelRaoConfig(CommonConfig):
    rao_samples: int = field(
        default=100, metadata={"help": "Gumbel-Rao: K, conditional Gumbel draws averaged per sample", "min": 1}
    )
    rao_tau: float = field(default=1.0, metadata={"help": "Gumbel-Rao: temperature of the relaxed sample",
                                                  "above": 0})


def conditional_perturbed_logits(log_pi: Tensor, sample: Tensor, gumbel: Tensor) -> Tensor:
    """Gumbel-perturbed logits log pi + g given that their argmax is the one-hot `sample` (B, D, C),
    one set per draw of `gumbel` (B, K, D, C); log pi normalized, so the maximum is Gumbel(0)."""
    log_pi, sample = log_pi.detach().unsqueeze(1), sample.unsqueeze(1)
    top = (gumbel * sample).sum(dim=-1, keepdim=True)  # G_D = g_D
    below = -torch.logaddexp(-(log_pi + gumbel), -top)  # Gumbel(log pi_j) truncated at G_D
    return sample * top + (1 - sample) * below


class GumbelRao(Method):
    name = "gumbel-rao"
    summary = "Gumbel-Rao: ST Gumbel-Softmax, backward averaged over Gumbel noise given the sample (Paulus et al. 2021)"
    Config = GumbelRaoConfig
    temperature = ("rao_tau",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        perturbed = conditional_perturbed_logits(
            log_pi, sample, noise.gumbel(self.config.rao_samples, cfg.latent_vars, cfg.classes))
        shift = (perturbed - log_pi.detach().unsqueeze(1))  # a constant: the gradient is theta's
        soft = F.softmax((log_pi.unsqueeze(1) + shift) / self.config.rao_tau, dim=-1).mean(dim=1)
        y = sample + soft - soft.detach()
        return neg_elbo_step(model, x, log_pi, y)
