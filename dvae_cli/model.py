"""The categorical VAE (the thesis's: pixels-500-(30x10)-500-pixels, softplus, Bernoulli output; any
number of hidden layers and another activation too)
and the few functions every method shares: Gumbel noise, one-hot and relaxed samples, KL,
log-likelihood.

Owns: the network and the sampling math; every Gumbel draw in dvae goes through `gumbel_noise`
(training through methods.Noise, evaluation and encoding through `draw_gumbel`). Must not: know
about training loops, files or the CLI."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import DEFAULT_DATA
from .errors import DVAEError, Setting, SettingError
from .terminal import shown

MAX_PARAMETERS = 1 << 28  # a sane ceiling (1 GiB of float32) checked before anything is allocated
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU}


@dataclass(frozen=True)
class ModelConfig:
    """Network shape: D categorical variables of K classes; the encoder's hidden layers (the decoder
    mirrors them) and their activation; the input size comes from the data set (DataConfig.pixels).

    `hidden` is one width (the thesis: 500) or a tuple of widths, e.g. (512, 256) for P-512-256-(DxK)
    and (DxK)-256-512-P, P pixels. Records made before `activation` existed are softplus networks."""

    latent_vars: int = 30  # D
    classes: int = 10  # K
    hidden: int | tuple[int, ...] = 500
    input_size: int = DEFAULT_DATA.pixels
    activation: str = "softplus"

    def __post_init__(self) -> None:
        hidden = self.hidden
        if isinstance(hidden, (list, tuple)):
            object.__setattr__(self, "hidden", hidden := tuple(hidden) if len(hidden) != 1 else hidden[0])
        widths = hidden if isinstance(hidden, tuple) else (hidden,)
        if not widths:
            raise SettingError(Setting("hidden"), " needs at least one layer width")
        for name, value in [("latent_vars", self.latent_vars), ("classes", self.classes),
                            ("input_size", self.input_size), *(("hidden", w) for w in widths)]:
            if type(value) is not int or value < 1:
                raise SettingError(Setting(name), f" must be a positive integer, got {value!r}")
        if self.classes < 2:
            raise SettingError(Setting("classes"), f" must be at least 2, got {self.classes}")
        if self.activation not in ACTIVATIONS:
            raise SettingError(Setting("activation"), f" must be one of {', '.join(ACTIVATIONS)}, got '{shown(self.activation)}'")
        if self.parameter_count() > MAX_PARAMETERS:
            raise DVAEError(f"a model of {self.parameter_count():,} parameters is over dvae's ceiling of "
                            f"{MAX_PARAMETERS:,}; check D, K and the hidden sizes")

    @property
    def widths(self) -> tuple[int, ...]:
        """The encoder's hidden widths, input side first."""
        return self.hidden if isinstance(self.hidden, tuple) else (self.hidden,)

    def parameter_count(self) -> int:
        """The number of weights of a DiscreteVAE of this shape (computed, nothing allocated)."""
        sizes = (self.input_size, *self.widths, self.latent_vars * self.classes)
        one_side = sum(a * b for a, b in zip(sizes, sizes[1:]))
        return 2 * one_side + sum(sizes[1:]) + sum(sizes[:-1])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden) if isinstance(self.hidden, tuple) else self.hidden
        return d


def mlp(sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear layers through `sizes`, the activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1])


class DiscreteVAE(nn.Module):
    """Encoder x -> logits of D categoricals; decoder one-hot codes (D*K) -> Bernoulli logits."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        sizes = (config.input_size, *config.widths, config.latent_vars * config.classes)
        self.encoder = mlp(sizes, config.activation)
        self.decoder = mlp(sizes[::-1], config.activation)

    def encode(self, x: Tensor) -> Tensor:
        """Log-probabilities log pi, shape (B, D, K)."""
        logits = self.encoder(x).view(len(x), self.config.latent_vars, self.config.classes)
        return F.log_softmax(logits, dim=-1)

    def decode(self, y: Tensor) -> Tensor:
        """Bernoulli logits of the pixels, (B, input_size), from codes y of shape (B, D, K)."""
        return self.decoder(y.flatten(1))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """decode(one_hot(indices)) for exact one-hot codes given as class indices (B, D).

        The first layer W y + b of a one-hot y is b plus the sum of the D columns of W that y
        selects: an embedding bag, D x hidden additions instead of D x K x hidden multiply-adds.
        Equal to the dense product up to float rounding, and differentiable in W and b.
        """
        first, rest = self.decoder[0], self.decoder[1:]
        offsets = torch.arange(self.config.latent_vars, device=indices.device) * self.config.classes
        columns = first.weight.t().contiguous()  # embedding_bag's fast path wants contiguous rows
        return rest(F.embedding_bag(indices + offsets, columns, mode="sum") + first.bias)


def gumbel_noise(uniform: Tensor) -> Tensor:
    """Standard Gumbel noise -log(-log u) from uniforms in [0, 1)."""
    tiny = torch.finfo(uniform.dtype).tiny
    return -torch.log(-torch.log(uniform.clamp_min(tiny)))


def draw_gumbel(generator: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    """Standard Gumbel noise of `shape` from `generator`, on the generator's device."""
    return gumbel_noise(torch.rand(shape, generator=generator, device=generator.device))


def relaxed_sample(log_pi: Tensor, gumbel: Tensor, tau: float) -> Tensor:
    """The Gumbel-Softmax sample softmax((log pi + g) / tau) (Jang et al. 2017, eq. 1)."""
    return F.softmax((log_pi + gumbel) / tau, dim=-1)


def one_hot_sample(log_pi: Tensor, gumbel: Tensor) -> Tensor:
    """Gumbel-max: an exact one-hot sample of Categorical(pi); it carries no gradient."""
    return one_hot_argmax((log_pi.detach() + gumbel))


def sample_indices(log_pi: Tensor, gumbel: Tensor) -> Tensor:
    """Gumbel-max class indices (..., D): the classes `one_hot_sample` sets, without the one-hot."""
    return (log_pi.detach() + gumbel).argmax(dim=-1)


def one_hot_argmax(scores: Tensor) -> Tensor:
    """One-hot of the argmax over the last dimension, in the dtype of `scores`."""
    index = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores).scatter(-1, index, 1.0)  # not in place: vmap batches it


def kl_to_uniform(log_pi: Tensor) -> Tensor:
    """KL(q(y|x) || uniform) per image: sum over variables of sum_k pi_k log(K pi_k) (eq. 5.2)."""
    classes = log_pi.shape[-1]
    return (log_pi.exp() * (log_pi + math.log(classes))).sum(dim=(-2, -1))


def code_diversity(log_pi: Tensor, mean_pi: Tensor | None = None) -> Tensor:
    """The code-diversity term sum_d KL(mean over the batch of pi_d || uniform), a scalar.

    Eq. 5.2's KL taken on the batch-averaged pi instead of per image (the idea of wav2vec 2.0's
    codebook diversity loss): small when every class of every variable is used across the batch,
    whatever each image's own pi. `mean_pi` (D, K), when given, is the mean over a larger batch
    that log_pi is a slice of: the value is then that batch's, and the gradient this slice's share
    of it (d/d pi_b = (log(K mean_pi) + 1) / B), so slices trained on separate processes add up to
    the whole batch's gradient.
    """
    pi = log_pi.exp()
    if mean_pi is None:
        mean_pi = pi.mean(dim=0)
    mean_pi = mean_pi.detach()
    classes = log_pi.shape[-1]
    log_ratio = (mean_pi * classes).clamp_min(torch.finfo(pi.dtype).tiny).log()
    value = (mean_pi * log_ratio).sum()
    share = (pi * (log_ratio + 1)).sum(dim=(-2, -1)).mean()  # the gradient of value w.r.t. this slice
    return value + share - share.detach()


def log_likelihood(x_logits: Tensor, x: Tensor) -> Tensor:
    """Bernoulli log p(x|y) per image, sum_j x_j l_j - log(1 + e^l_j), from the decoder's logits l.

    x broadcasts against the logits, e.g. (B, P) images against (S, B, P) decodes of S samples.
    """
    return (x_logits * x).sum(dim=-1) - F.softplus(x_logits).sum(dim=-1)
