"""Checkpoints shipped inside the package, usable anywhere a checkpoint is: `pretrained:NAME`.

They are the float32 best checkpoints of `dvae reproduce` runs (docs/RESULTS.md gives their rows
and commands), with their full training record in the safetensors metadata.

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


def describe_pretrained() -> list[dict]:
    """One record per shipped checkpoint: name, description, method, epoch and its validation metrics."""
    from .checkpoint import load_checkpoint

    rows = []
    for name, about in PRETRAINED.items():
        ckpt = load_checkpoint(PREFIX + name)
        metrics = {k: ckpt.metrics.get(k) for k in
                   ("valid_log_lik", "valid_kl", "valid_neg_elbo", "valid_classes_used", "valid_mean_max_prob")}
        rows.append({"name": PREFIX + name, "description": about, "method": ckpt.method, "epoch": ckpt.epoch,
                     "hparams": ckpt.hparams, **metrics, "fingerprint": ckpt.fingerprint})
    return rows
