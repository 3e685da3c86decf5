"""A method's training loss with the code-diversity term, as one module.

Owns: `MethodLoss`, what the training loop differentiates (one run, DistributedDataParallel, or
several runs under torch.func.vmap). Must not: know any one method or draw noise itself."""

from __future__ import annotations

import torch

from .. import distributed
from ..model import DiscreteVAE, code_diversity
from .base import Method, Noise, Step


class MethodLoss(torch.nn.Module):
    """A method's loss as a module, so that DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: DiscreteVAE, method: Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        step = self.method.loss(self.model, x, noise, schedule)
        if "diversity" in schedule:  # batch-mean pi over the global batch: every process adds the same term
            weight = schedule["diversity"]
            mean_pi = distributed.all_reduce_sum(step.log_pi.detach().exp().sum(dim=0)) / noise.global_batch
            step = step._replace(loss=step.loss + weight * code_diversity(step.log_pi, mean_pi))
        return step
