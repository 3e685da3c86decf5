"""The interface every training method implements, and the noise source they draw from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ..model import DiscreteVAE, gumbel_noise


class Noise:
    """Per-example random numbers for one batch.

    Draws for the whole global batch and keeps this process's rows, so an example gets
    the same noise whichever process (or batch slice) it lands on.
    """

    def __init__(self, generator: torch.Generator, global_batch: int, rows: slice = slice(None)):
        self.generator = generator
        self.global_batch = global_batch
        self.rows = rows

    def uniform(self, *shape: int) -> Tensor:
        """U[0,1) of shape (batch, *shape)."""
        full = torch.rand(
            (self.global_batch, *shape), generator=self.generator, device=self.generator.device
        )
        return full[self.rows]

    def gumbel(self, *shape: int) -> Tensor:
        """Standard Gumbel noise of shape (batch, *shape)."""
        return gumbel_noise(self.uniform(*shape))


class Step(NamedTuple):
    """What a method returns for one batch."""

    loss: Tensor  # scalar to call .backward() on; each part's gradient reaches only its own parameters
    log_lik: Tensor  # (B,) log p(x|y) of the sample the method trained on (detached)
    kl: Tensor  # (B,) KL(q(y|x) || uniform) (detached)


@dataclass
class NoConfig:
    """A method without hyper-parameters."""


class Method:
    """A way to train the encoder through the discrete sample.

    Subclasses set `name`, `summary` and `Config` (a dataclass whose fields become
    `dvae train` flags: metadata 'help', optionally 'choices') and implement `loss`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type] = NoConfig

    def __init__(self, config: object | None = None):
        self.config = config if config is not None else self.Config()

    def schedule(self, epoch: int) -> dict[str, float]:
        """Values for epoch `epoch` (0-based), e.g. tau or beta; 'lr_scale' multiplies the lr."""
        return {}

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        """The training loss on the batch x (B, 784)."""
        raise NotImplementedError
