"""Difference target propagation through the one-hot Gumbel-max sample (the thesis, 3 and 5.2.1).

Decoder: -log p(x|y) (eq. 5.3). Encoder: ||pi(x) - pi_hat||^2 + beta * KL (eq. 5.4), with the
constant target  pi_hat = h + pi(x) - pi(x'),  x' = dec(y)  (eq. 3.6 with the encoder as the
decoder's approximate inverse), where h = pi(x) ("prob": eq. 3.7, 2 pi(x) - pi(x')) or the
sample y ("sample"). No gradient crosses the sample.

The thesis's future work (6.1), as options: the "log" correction takes the difference in log
space and renormalizes, pi_hat = softmax(2 log pi(x) - log pi(x')), always a distribution; the
"ce" loss replaces the squared error by the cross-entropy -sum_k pi_hat_k log pi_k.

By default the encoder also carries the code-diversity term (model.code_diversity): eq. 5.4's KL
taken on the batch-mean pi rather than per image, its weight warmed up 0 -> 1 over 10 epochs as
the thesis warms up beta. Without it (`diversity=0`, the literal reading) each variable collapses
onto about 2 of its 10 classes (docs/RESULTS.md).

Owns: the DTP loss and its settings. Must not: draw noise itself (methods.Noise) or add the
diversity term (the training loop does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import Setting, SettingError
from ..model import DiscreteVAE, kl_to_uniform, log_likelihood, one_hot_sample
from .base import CommonConfig, Method, Noise, Step, diversity_field, diversity_warmup_field, ramp


@dataclass
class DTPConfig(CommonConfig):
    diversity: float = diversity_field(1.0)  # dvae's reading: eq. 5.4's KL on the batch-mean pi,
    diversity_warmup: int = diversity_warmup_field(10)  # warmed up as the thesis warms up beta
    dtp_target: str = field(
        default="prob",
        metadata={"help": "DTP target: prob = 2 pi(x) - pi(x'), sample = y + pi(x) - pi(x')",
                  "choices": ("prob", "sample")},
    )
    beta_max: float = field(default=0.0, metadata={"help": "DTP: final weight of the KL term", "min": 0})
    beta_warmup: int = field(
        default=10, metadata={"help": "DTP: epochs over which beta rises linearly from 0", "min": 0}
    )
    dtp_inverse_loss: bool = field(
        default=False,
        metadata={"help": "DTP: also train the encoder as the decoder's inverse, ||pi(dec(y)) - y||^2"},
    )
    dtp_correction: str = field(
        default="linear",
        metadata={"help": "DTP: linear = h + pi(x) - pi(x'); log = softmax(2 log pi(x) - log pi(x'))",
                  "choices": ("linear", "log")},
    )
    dtp_loss: str = field(
        default="mse",
        metadata={"help": "DTP: target loss, mse = ||pi - pi_hat||^2, ce = -sum pi_hat log pi",
                  "choices": ("mse", "ce")},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtp_correction == "log" and self.dtp_target != "prob":
            raise SettingError(Setting("dtp_correction"), " log needs ", Setting("dtp_target"),
                               " prob (log of a one-hot y is -inf)")


class DTP(Method):
    name = "dtp"
    summary = "difference target propagation through the one-hot sample (the thesis)"
    Config = DTPConfig
    elbo_gradient = False  # the encoder follows a target

    def anneal(self, epoch: int) -> dict[str, float]:
        return {"beta": self.config.beta_max * ramp(epoch, self.config.beta_warmup)}

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        cfg = model.config
        log_pi = model.encode(x)
        y = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        x_logits = model.decode(y)
        log_lik = log_likelihood(x_logits, x)  # decoder loss (5.3): y carries no gradient

        x_rec = torch.sigmoid(x_logits.detach())  # Bernoulli means of the reconstruction
        with torch.set_grad_enabled(self.config.dtp_inverse_loss):
            log_pi_rec = model.encode(x_rec)
        pi = log_pi.exp()
        if self.config.dtp_correction == "linear":
            h = pi.detach() if self.config.dtp_target == "prob" else y
            target = h + pi.detach() - log_pi_rec.detach().exp()
        else:
            target = F.softmax(2 * log_pi.detach() - log_pi_rec.detach(), dim=-1)
        if self.config.dtp_loss == "mse":
            target_loss = (pi - target).square().sum(dim=(1, 2))
        else:
            target_loss = -(target * log_pi).sum(dim=(1, 2))
        kl = kl_to_uniform(log_pi)
        encoder_loss = target_loss + schedule["beta"] * kl  # (5.4); the target is a constant

        loss = (encoder_loss - log_lik).mean()
        if self.config.dtp_inverse_loss:  # eq. 3.4 with the encoder as the decoder's inverse
            loss = loss + (log_pi_rec.exp() - y).square().sum(dim=(1, 2)).mean()
        return Step(loss, log_lik.detach(), kl.detach(), log_pi)
