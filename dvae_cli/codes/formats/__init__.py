"""The registry of code file formats: one module each, one line here (as `methods/` does for
estimators). docs/CODES.md specifies every format's bytes.

Owns: which formats exist, which one a file or an output name is. Must not: know any format's
bytes (their modules do) or open files (`codes/files.py` does).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import DVAEError
from .base import CodeFormat, Codes, FormatWriter, Shard
from .indices import Indices
from .onehot import OneHot
from .packed import Packed
from .records import HEADER_SIZE, MAGIC, parse_header
from .text import Text

FORMATS: dict[str, CodeFormat] = {f.name: f for f in (Packed(), OneHot(), Indices(), Text())}
DEFAULT = "packed"  # what `dvae encode` writes when neither --format nor the output's suffix says


def get_format(name: str) -> CodeFormat:
    """The format registered as `name`."""
    try:
        return FORMATS[name]
    except KeyError:
        raise DVAEError(f"unknown codes format {name!r}; choose one of {', '.join(FORMATS)}") from None


def format_for(output: str | os.PathLike) -> str:
    """The format an output name suggests by its suffix (.npy -> indices, .txt -> text), else DEFAULT."""
    suffix = Path(output).suffix.lower()
    return next((f.name for f in FORMATS.values() if suffix in f.suffixes), DEFAULT)


def detect(data: bytes, name: str) -> CodeFormat:
    """The format of a file that starts with `data`, from its first bytes."""
    for format in FORMATS.values():
        if format.sniff(data):
            return format
    if data.startswith(MAGIC):  # dvae's header, but no registered format claims it
        header = parse_header(data, name)  # a damaged header says so
        raise DVAEError(f"{name}: unknown packing {header.packing}")
    raise DVAEError(f"{name}: not a codes file (no dvae codes header, not a .npy of indices, not text codes)")


def record_bytes(format: str, latent_vars: int, classes: int, group: int = 0) -> int:
    """Bytes of one record in a record format (packed needs `group`)."""
    return get_format(format).record_bytes(latent_vars, classes, group)


def formats_help() -> str:
    """'packed (header + ...), onehot (...), ...; default: indices for *.npy, ..., else packed.'"""
    by_suffix = ", ".join(f"{f.name} for *{s}" for f in FORMATS.values() for s in f.suffixes)
    return (", ".join(f"{f.name} ({f.summary})" for f in FORMATS.values())
            + f". Default: {by_suffix}, else {DEFAULT}.")


__all__ = ["DEFAULT", "FORMATS", "HEADER_SIZE", "CodeFormat", "Codes", "FormatWriter", "Shard", "detect",
           "format_for", "formats_help", "get_format", "record_bytes"]
