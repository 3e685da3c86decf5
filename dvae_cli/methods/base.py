"""The interface every training method implements, the noise source they draw from, and the
-ELBO that every method backpropagating through its code shares.

Owns: Method, Noise, Step, the common settings. Must not: know any one method."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ..errors import Setting, SettingError
from ..model import DiscreteVAE, gumbel_noise, kl_to_uniform, log_likelihood


class Noise:
    """Per-example random numbers for one batch.

    Draws for the whole global batch and keeps this process's rows, so an example gets
    the same noise whichever process (or batch slice) it lands on.
    """

    def __init__(self, generator: torch.Generator, global_batch: int, rows: slice = slice(None)):
        self.generator = generator
        self.global_batch = global_batch
        self.rows = rows
        self.shapes: list[tuple[int, ...]] = []  # every draw's per-example shape, in order

    def uniform(self, *shape: int) -> Tensor:
        """U[0,1) of shape (batch, *shape)."""
        self.shapes.append(shape)
        full = torch.rand(
            (self.global_batch, *shape), generator=self.generator, device=self.generator.device
        )
        return full[self.rows]

    def gumbel(self, *shape: int) -> Tensor:
        """Standard Gumbel noise of shape (batch, *shape)."""
        return gumbel_noise(self.uniform(*shape))


class PresetNoise(Noise):
    """Noise drawn beforehand, handed out in the order a method asks for it: what several runs
    trained as one batched computation (multirun.py) use, each run's draws made by its own
    generator exactly as Noise makes them, outside the vectorized loss."""

    def __init__(self, draws: list[Tensor], global_batch: int):
        self.draws, self.global_batch, self.rows = list(draws), global_batch, slice(None)

    def uniform(self, *shape: int) -> Tensor:
        if not self.draws or self.draws[0].shape[1:] != shape:
            raise RuntimeError(f"a method drew noise of shape {shape} that was not drawn beforehand")
        return self.draws.pop(0)


class Step(NamedTuple):
    """What a method returns for one batch."""

    loss: Tensor  # scalar to call .backward() on; each part's gradient reaches only its own parameters
    log_lik: Tensor  # (B,) log p(x|y) of the sample the method trained on (detached)
    kl: Tensor  # (B,) KL(q(y|x) || uniform) (detached)
    log_pi: Tensor  # (B, D, K) the encoder's log-probabilities, with their gradient (for the diversity term)


def neg_elbo_step(model: DiscreteVAE, x: Tensor, log_pi: Tensor, y: Tensor) -> Step:
    """The batch's -ELBO = KL(q(y|x) || uniform) - log p(x|y) (eq. 5.1) with the code y standing in
    for the sample: the loss of the methods whose gradient reaches the encoder through y."""
    log_lik = log_likelihood(model.decode(y), x)
    kl = kl_to_uniform(log_pi)
    return Step((kl - log_lik).mean(), log_lik.detach(), kl.detach(), log_pi)


def ramp(epoch: int, warmup: int) -> float:
    """Linear warm-up from 0 at epoch 0 to 1 at epoch `warmup` (0-based epochs; 1 when warmup <= 0)."""
    return 1.0 if warmup <= 0 else min(1.0, epoch / warmup)


def range_problem(value: object, metadata: dict) -> str | None:
    """What is wrong with a setting's value for the range its field's metadata gives ('min' and
    'max' inclusive, 'above' exclusive; a number is finite), or None when it lies in the range.
    The CLI gives 'min' and 'max' to Typer and checks the rest with this function too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be a finite number, not {value}"
    low, high, above = metadata.get("min"), metadata.get("max"), metadata.get("above")
    if above is not None and not value > above:
        return f"must be greater than {above}, not {value}"
    if low is not None and value < low or high is not None and value > high:
        bounds = " and ".join(b for b in (low is not None and f">= {low}", high is not None and f"<= {high}") if b)
        return f"must be {bounds}, not {value}"
    return None


def diversity_field(default: float = 0.0):
    """The `diversity` option (a method with another default redeclares it with this)."""
    return field(default=default, metadata={
        "help": "weight w of the code-diversity term w * sum_d KL(batch-mean pi_d || uniform)", "min": 0})


def diversity_warmup_field(default: int = 0):
    """The `diversity_warmup` option (a method with another default redeclares it with this)."""
    return field(default=default, metadata={"help": "epochs over which the diversity weight rises linearly from 0",
                                            "min": 0})


@dataclass
class CommonConfig:
    """Options every method has: the weight of the code-diversity term (model.code_diversity).

    A field's metadata gives its range ('min', 'max' inclusive; 'above' exclusive), checked here
    for every method and given to the CLI's flags (exit 2 before any data is read)."""

    diversity: float = diversity_field()
    diversity_warmup: int = diversity_warmup_field()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, (int, float)) and not isinstance(value, (int, float)):
                raise SettingError(Setting(f.name), f" must be a number, not {value!r}")
            problem = range_problem(value, f.metadata)
            if problem:
                raise SettingError(Setting(f.name), f" {problem}")


class Method:
    """A way to train the encoder through the discrete sample.

    Subclasses set `name`, `summary` and `Config` (a CommonConfig subclass whose fields become
    `dvae train` flags: metadata 'help', optionally 'choices'), implement `loss` and, when
    something is annealed, `anneal`. The training loop adds the diversity term to `loss`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    elbo_gradient: ClassVar[bool] = True  # whether the encoder's update estimates the -ELBO's gradient
    temperature: ClassVar[tuple[str, ...]] = ()  # the settings that together fix its temperature (presets set them)
    Config: ClassVar[type] = CommonConfig

    def __init__(self, config: CommonConfig | None = None):
        self.config = config if config is not None else self.Config()

    def anneal(self, epoch: int) -> dict[str, float]:
        """The method's own values for epoch `epoch` (0-based), e.g. tau or beta; 'lr_scale' multiplies the lr."""
        return {}

    def schedule(self, epoch: int) -> dict[str, float]:
        """Everything that varies by epoch: `anneal`'s values and, when used, the diversity weight."""
        values = self.anneal(epoch)
        if self.config.diversity:
            values["diversity"] = self.config.diversity * ramp(epoch, self.config.diversity_warmup)
        return values

    def loss(self, model: DiscreteVAE, x: Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        """The training loss on the batch x (B, pixels)."""
        raise NotImplementedError
