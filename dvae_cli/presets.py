"""Named protocols: the settings a benchmark fixes, applied to a run's settings in one step
(`dvae train --preset NAME`, `dvae reproduce --suite NAME`).

`reinmax` is the MNIST-VAE protocol of the categorical-estimator papers (GST, Fan et al. ICML 2022;
ReinMax, Liu et al. NeurIPS 2023), read from the ReinMax repository's mnist_vae/gumbel_softmax_vae.py,
model/vae.py and reinmax_C_L.sh (github.com/LiyuanLucasLiu/ReinMax, commit 2367056): encoder
784-512-256-(L x C) and the mirrored decoder with ReLU, grey-scale targets in [0, 1] with the
Bernoulli cross-entropy, RAdam, batch 100, 160 epochs on all 60,000 training images (no validation
split: the checkpoint is the last epoch), and per shape (C classes, L variables) the learning rate and
temperature the repository's scripts give for ReinMax, used for every method with a temperature.

Owns: the presets and applying one. Must not: spell CLI flags or train.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from .errors import DVAEError
from .methods import get_method

if TYPE_CHECKING:
    from .train import TrainConfig


@dataclass(frozen=True)
class Tuned:
    """A shape's tuned settings: learning rate, temperature, optimizer."""

    lr: float
    temperature: float
    optimizer: str = "radam"


@dataclass(frozen=True)
class Preset:
    """A protocol: settings by name (TrainConfig's, ModelConfig's and DataConfig's) and, per shape
    (classes, latent_vars), the tuned learning rate and temperature."""

    name: str
    summary: str
    settings: dict
    tuned: dict[tuple[int, int], Tuned] = field(default_factory=dict)
    shapes: tuple[tuple[int, int], ...] = ()  # (classes, latent_vars) its suite runs, in its table's order

    def tuned_for(self, classes: int, latent_vars: int) -> Tuned | None:
        return self.tuned.get((classes, latent_vars))


# reinmax_C_L.sh: --lr, --temperature, --optim for --categorical-dim C --latent-dim L (ReinMax's own tuning)
REINMAX_TUNED = {
    (8, 4): Tuned(5e-4, 1.3, "adam"),
    (4, 24): Tuned(5e-4, 1.5),
    (8, 16): Tuned(7e-4, 1.5),
    (16, 12): Tuned(7e-4, 1.5),
    (64, 8): Tuned(5e-4, 1.5),
    (10, 30): Tuned(5e-4, 1.3),
}
REINMAX = Preset(
    "reinmax",
    "the MNIST-VAE protocol of GST and ReinMax: pixels-512-256 ReLU, grey-scale targets, RAdam, batch 100, "
    "160 epochs on all 60,000 training images, per-shape lr and temperature",
    {"hidden": (512, 256), "activation": "relu", "binarize": "none", "valid_size": 0, "optimizer": "radam",
     "batch_size": 100, "epochs": 160},
    REINMAX_TUNED,
    shapes=((8, 4), (4, 24), (8, 16), (16, 12), (64, 8), (10, 30)),
)
PRESETS = {p.name: p for p in (REINMAX,)}

MODEL_SETTINGS, DATA_SETTINGS = ("hidden", "activation"), ("binarize", "valid_size")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DVAEError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def apply_preset(config: TrainConfig, name: str, given: frozenset[str] | set[str] = frozenset()) -> TrainConfig:
    """`config` under preset `name`: the preset's settings, and its shape's tuned lr, temperature and
    optimizer, replace those of `config`, except the settings named in `given` (a user's own choice).
    A shape the preset has no tuning for keeps config's lr and temperature."""
    preset = get_preset(name)
    values = dict(preset.settings)
    tuned = preset.tuned_for(config.model.classes, config.model.latent_vars)
    if tuned is not None:
        values.update(lr=tuned.lr, optimizer=tuned.optimizer)
    values = {k: v for k, v in values.items() if k not in given}
    hparams = dict(config.hparams)
    if tuned is not None:
        hparams.update({k: tuned.temperature for k in get_method(config.method).temperature if k not in given})
    model = dataclasses.replace(config.model, **{k: values.pop(k) for k in MODEL_SETTINGS if k in values})
    data = dataclasses.replace(config.data, **{k: values.pop(k) for k in DATA_SETTINGS if k in values})
    return dataclasses.replace(config, model=model, data=data, hparams=hparams, preset=name, **values)
