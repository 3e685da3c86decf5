"""ReinMax-CV (Wang and Bui, arXiv 2603.08257, 2026, "Beyond ReinMax: Low-Variance Gradient Estimators
for Discrete Latent Variables"): ReinMax with a control variate built from Gumbel-Rao.

ReinMax's noisy part is the softmax Jacobian at pi1 = (pi0 + D) / 2, which changes with the sample D.
The control variate is the straight-through Gumbel-Softmax backward at the same midpoint, taken with
the Gumbel noise g that drew D, minus its Rao-Blackwellised version (Gumbel-Rao: the mean over K
Gumbel perturbations of log pi_half conditioned on their argmax being D):

    grad = ReinMax - eta * ( J(softmax((log pi_half + g) / tau2)) - E_K[ J(softmax(G_k / tau2)) | D ] ) dL/dD / tau2

with pi_half = (pi0 + D) / 2 (pi0 = softmax(theta), no temperature), G_k the conditional perturbed
logits of log pi_half (gumbel_rao.conditional_softmaxes) and J(p) = diag(p) - p p^T. The
Gumbel-Softmax term follows g, which also moves ReinMax's D, so it cancels part of ReinMax's noise;
its Rao-Blackwellised mean puts back what it removed on average. Since g perturbs theta, not
log pi_half, the two terms' means given D agree only approximately: the estimator's expectation is
ReinMax's up to that difference (eta = 0 is ReinMax).

Forward: the exact one-hot sample D. Each term is a softmax of theta plus a constant shift, so its
gradient is that softmax's Jacobian (the same construction as gumbel_rao.py and gst.py).

Owns: the ReinMax-CV loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import DiscreteVAE, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, neg_elbo_step
from .gumbel_rao import conditional_softmaxes, mean_softmax_jacobian
from .reinmax import reinmax_pi2


@dataclass
class ReinMaxCVConfig(CommonConfig):
    # Defaults: the best of the reference's grid at 10x30 (ReinMax_ASC analyse_results.py names
    # 'reinmax_cv-160-RAdam-10x30-0.7-0.0005-1.0': tau2 0.7, eta 1.0, run at ReinMax's own lr and
    # temperature 1.3 there); K = 100 is the reference's fixed number of conditional draws.
    reinmax_tau: float = field(
        default=1.3, metadata={"help": "ReinMax: temperature of the softmax in pi1 (the paper wants >= 1)", "above": 0}
    )
    cv_eta: float = field(default=1.0, metadata={"help": "ReinMax-CV: eta, the weight of the control variate "
                                                         "(0 is ReinMax)", "min": 0})
    cv_tau2: float = field(default=0.7, metadata={"help": "ReinMax-CV: tau2, the temperature of the control "
                                                          "variate's Gumbel-Softmax and Gumbel-Rao", "above": 0})
    rao_samples: int = field(
        default=100, metadata={"help": "Gumbel-Rao: K, conditional Gumbel draws averaged per sample", "min": 1}
    )


def shifted_softmax(log_pi: Tensor, target: Tensor, tau: float) -> Tensor:
    """softmax(target / tau) in value, with the gradient of softmax((theta + const) / tau) w.r.t. theta."""
    return F.softmax((log_pi + (target - log_pi).detach()) / tau, dim=-1)


class ReinMaxCV(Method):
    name = "reinmax-cv"
    summary = ("ReinMax-CV: ReinMax with a Gumbel-Softmax minus Gumbel-Rao control variate at (pi + D) / 2 "
               "(Wang and Bui 2026)")
    Config = ReinMaxCVConfig
    temperature = ("reinmax_tau",)  # the reference's temperature is ReinMax's; tau2 is tuned on its own

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg, c = model.config, self.config
        log_pi = model.encode(x)
        gumbel = noise.gumbel(cfg.latent_vars, cfg.classes)
        sample = one_hot_sample(log_pi, gumbel)
        log_half = torch.logaddexp(log_pi.detach(), sample.log()) - math.log(2)  # log((pi0 + D) / 2)
        relaxed = shifted_softmax(log_pi, log_half + gumbel, c.cv_tau2)  # ST Gumbel-Softmax at pi_half
        uniform = noise.uniform(c.rao_samples, cfg.latent_vars, cfg.classes)  # the draws noise.gumbel would make
        jacobian = mean_softmax_jacobian(conditional_softmaxes(log_half, sample, uniform, c.cv_tau2), c.cv_tau2)
        rao = (jacobian @ log_pi.unsqueeze(-1)).squeeze(-1)  # its mean given D: gradient J g (gumbel_rao.py)
        pi2 = reinmax_pi2(log_pi, sample, c.reinmax_tau)
        control = rao - relaxed
        y = sample + (pi2 - pi2.detach()) + c.cv_eta * (control - control.detach())
        return neg_elbo_step(model, x, log_pi, y)
