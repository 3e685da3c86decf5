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

Cost: the K x D x C conditional softmaxes are the estimator's whole arithmetic, so they are computed
in closed form from the uniforms, in place (one logarithm each where the Gumbels took two and
logaddexp two more), and the backward is their mean's Jacobian, a C x C matrix per variable, put
in once (`mean_softmax_jacobian`): no autograd graph of K softmaxes. Same draws, same update, to
float32 rounding (tests/test_estimators_extra.py holds the first formulation and checks it).

Owns: the Gumbel-Rao loss and its settings. Must not: draw noise itself (methods.Noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
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


def conditional_softmaxes(log_pi: Tensor, sample: Tensor, uniform: Tensor, tau: float) -> Tensor:
    """softmax(G^(k) / tau) of the perturbed logits given their argmax, the one-hot `sample` (B, D, C),
    one set per draw of `uniform` (B, K, D, C); log pi normalized; no gradient. Laid out (B, D, K, C):
    each variable's K softmaxes are one matrix.

    With the Gumbels g = -log E of E = -log u (model.gumbel_noise), G_D = -log E_D and
    G_j = -log(E_j / pi_j + E_D), so exp(G_j - G_D) = 1 / (1 + (E_j / E_D) / pi_j), and 1 at D:
    one logarithm per draw (E_j / E_D = log u_j / log u_D), and the largest weight is 1, so the
    softmax needs no maximum. In place on one fresh tensor: this is the estimator's whole cost."""
    u = uniform.transpose(-3, -2)
    log_u = u.new_empty(u.shape).copy_(u).clamp_min_(torch.finfo(u.dtype).tiny).log_()  # (not clone: 10x slower)
    index = sample.argmax(-1, keepdim=True).unsqueeze(-2).expand(*log_u.shape[:-1], 1)
    inv_log_u_d = log_u.gather(-1, index).reciprocal_()
    inv_pi = torch.where(sample > 0, 0.0, torch.exp(-log_pi.detach())).unsqueeze(-2)  # 0 at D: weight 1
    weights = log_u.mul_(inv_pi).mul_(inv_log_u_d).add_(1)  # exp(G_D - G) = 1 + (E_j / E_D) / pi_j
    weights = weights.reciprocal_() if tau == 1 else weights.log_().mul_(-1 / tau).exp_()  # exp((G - G_D) / tau)
    return weights.div_(weights @ weights.new_ones(weights.shape[-1], 1))  # (a product: sum(-1) is 2x slower)


def mean_softmax_jacobian(probs: Tensor, tau: float) -> Tensor:
    """J = ds/dtheta (B, D, C, C) of s = mean_k softmax((theta + c_k) / tau), c_k constants, from the K
    softmaxes p_k `probs` (B, D, K, C, overwritten): (1/tau) mean_k (diag(p_k) - p_k p_k^T)
    = (diag(s) - s s^T - Cov_k(p_k)) / tau, the covariance from the centred p_k (as M - s s^T it
    would lose digits to cancellation)."""
    soft = probs.mean(dim=-2)
    spread = probs.sub_(soft.unsqueeze(-2))
    covariance = spread.transpose(-1, -2) @ spread / spread.shape[-2]
    return (torch.diag_embed(soft) - soft.unsqueeze(-1) * soft.unsqueeze(-2) - covariance) / tau


class GumbelRao(Method):
    name = "gumbel-rao"
    summary = "Gumbel-Rao: ST Gumbel-Softmax, backward averaged over Gumbel noise given the sample (Paulus et al. 2021)"
    Config = GumbelRaoConfig
    temperature = ("rao_tau",)

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg, tau = model.config, self.config.rao_tau
        log_pi = model.encode(x)
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        uniform = noise.uniform(self.config.rao_samples, cfg.latent_vars, cfg.classes)
        jacobian = mean_softmax_jacobian(conditional_softmaxes(log_pi, sample, uniform, tau), tau)
        # J is constant in theta and symmetric: J theta has s's gradient J^T g = J g; its value cancels
        # before it meets D (exactly, however large theta), so y is the sample, as D + s - stopgrad(s) is
        linear = (jacobian @ log_pi.unsqueeze(-1)).squeeze(-1)
        y = sample + (linear - linear.detach())
        return neg_elbo_step(model, x, log_pi, y)
