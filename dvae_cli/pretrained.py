"""Checkpoints shipped inside the package, usable anywhere a checkpoint is: `pretrained:NAME`.

They are float32 checkpoints of recorded `dvae reproduce` runs (the best epoch of one seed each;
docs/RESULTS.md#pretrained-checkpoints gives the runs and their rows), with their full training
record in the safetensors metadata. Both learned MNIST thresholded at 0.5 (recorded before data
sets were, so they read as DEFAULT_DATA).

Owns: the `pretrained:NAME` names and their files. Must not: load them (checkpoint.py does).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import DVAEError

PREFIX = "pretrained:"
PRETRAINED = {  # see docs/RESULTS.md#pretrained-checkpoints for the runs they come from
    "dtp": "the thesis's method, target propagation with code diversity",
    "best": "the best model overall (lowest validation -ELBO)",
}
NAMES = " / ".join(PREFIX + name for name in PRETRAINED)  # for help texts


def is_pretrained(spec: str | os.PathLike) -> bool:
    """Whether a checkpoint argument names a shipped checkpoint (`pretrained:NAME`)."""
    return str(spec).startswith(PREFIX)


def pretrained_path(spec: str | os.PathLike) -> Path:
    """The file of `pretrained:NAME`; an error listing the names for an unknown one."""
    name = str(spec)[len(PREFIX):]
    if name not in PRETRAINED:
        known = ", ".join(f"{PREFIX}{n} ({about})" for n, about in PRETRAINED.items())
        raise DVAEError(f"unknown pretrained checkpoint {str(spec)!r}; choose from {known}")
    path = Path(str(resources.files(__package__) / "pretrained" / f"{name}.safetensors"))
    if not path.is_file():
        raise DVAEError(f"{path}: the package lacks its pretrained checkpoint; reinstall dvae")
    return path
