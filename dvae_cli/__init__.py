"""dvae: variational autoencoders with a discrete (one-hot categorical) latent space.

Python API (the `dvae` command is a thin layer over it)::

    from dvae_cli import TrainConfig, train, load_checkpoint, load_split, evaluate
    run_dir = train(TrainConfig(method="dtp", epochs=1, train_limit=2000))
    ckpt = load_checkpoint(run_dir)            # a file or a run folder (its best checkpoint)
    print(evaluate(ckpt.model, load_split("valid")))
    codes = encode(ckpt.model, read_images("digits.npy"))   # (N, 30) class indices
    write_codes("codes.bin", codes, classes=10)              # 13 bytes per image

The names below are imported on first use (PEP 562), so `import dvae_cli` (and `dvae --version`)
does not import torch. docs/ARCHITECTURE.md maps the modules.

Owns: the public API's names. Must not: hold logic, or be imported from by a submodule (they
import each other directly).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

PUBLIC = {  # name -> the submodule that owns it
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "decode": "codes", "encode": "codes", "pack": "codes", "read_codes": "codes", "unpack": "codes",
    "write_codes": "codes",
    "binarize": "data", "load_images": "data", "load_split": "data", "read_idx": "data",
    "DVAEError": "errors",
    "evaluate": "evaluate",
    "read_images": "inputs",
    "METHODS": "methods", "Method": "methods", "make_method": "methods",
    "DiscreteVAE": "model", "ModelConfig": "model",
    "TrainConfig": "train", "resume": "train", "train": "train",
}

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
    from .codes import decode, encode, pack, read_codes, unpack, write_codes
    from .data import binarize, load_images, load_split, read_idx
    from .errors import DVAEError
    from .evaluate import evaluate
    from .inputs import read_images
    from .methods import METHODS, Method, make_method
    from .model import DiscreteVAE, ModelConfig
    from .train import TrainConfig, resume, train


def __getattr__(name: str):
    if name in PUBLIC:
        value = getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps `dvae_cli.train` and `dvae_cli.evaluate` the API's functions when their submodules of
    the same name are imported (Python binds a submodule on its package; the eager imports this
    file used to make rebound them afterwards)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and PUBLIC.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted([*globals(), *PUBLIC])


__all__ = ["__version__", *PUBLIC]
