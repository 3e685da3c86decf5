"""The registry of training methods: one file each, one line here.

Owns: which methods exist and building one from its settings (the one check of those settings).
Must not: spell CLI flags (commandline.py does)."""

from __future__ import annotations

import dataclasses

from ..errors import DVAEError
from ..terminal import shown
from .base import Method, Noise, PresetNoise, Step
from .decoupled_st import DecoupledST
from .dtp import DTP
from .gst import GST
from .gumbel import Gumbel
from .gumbel_rao import GumbelRao
from .indecater import IndeCateR
from .loss import MethodLoss
from .reinmax import ReinMax
from .reinmax_cv import ReinMaxCV
from .rloo import RLOO
from .st import StraightThrough
from .st_gumbel import STGumbel

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (DTP, Gumbel, STGumbel, StraightThrough, ReinMax, RLOO, GumbelRao, GST, ReinMaxCV,
                         DecoupledST, IndeCateR)
}


def get_method(name: str) -> type[Method]:
    """The method class registered as `name`."""
    try:
        return METHODS[name]
    except KeyError:
        raise DVAEError(f"unknown method '{shown(name)}'; choose one of {', '.join(METHODS)}") from None


class UnknownSettings(DVAEError):
    """Settings that the method does not have (`names`)."""

    def __init__(self, method: str, names: list[str]):
        super().__init__(f"method {shown(method)} has no hyper-parameter(s) {shown(', '.join(map(str, names)))}")
        self.names = names


def make_method(name: str, hparams: dict | None = None) -> Method:
    """A method with its Config built from `hparams` (unknown keys are an error)."""
    cls = get_method(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = set(hparams or {}) - fields
    if unknown:
        raise UnknownSettings(name, sorted(unknown))
    config = cls.Config(**(hparams or {}))
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise DVAEError(f"{f.name} must be one of {', '.join(choices)}")
    return cls(config)


__all__ = ["METHODS", "Method", "MethodLoss", "Noise", "PresetNoise", "Step", "UnknownSettings", "get_method", "make_method"]
