"""What a seed is, in one place: an integer from 0 to 2^63 - 1, the range a torch.Generator takes
(a signed 64-bit seed) with negative values left out, so that every command and every setting
accepts the same seeds and refuses the same ones with one line.

Owns: the seed range and its check. Must not: draw anything or spell a flag.
"""

from __future__ import annotations

from .errors import Setting, SettingError

MAX_SEED = 2**63 - 1
RANGE = "an integer from 0 to 2^63 - 1"


def is_seed(value: object) -> bool:
    """Whether `value` is a seed dvae takes (a bool is not)."""
    return type(value) is int and 0 <= value <= MAX_SEED


def check_seed(value: object, name: str = "seed") -> int:
    """`value` when it is a seed; else a one-line error naming the setting."""
    if not is_seed(value):
        raise SettingError(Setting(name), f" must be {RANGE}, got {value!r}")
    return value
