"""What a code file format is: the `CodeFormat` interface every format implements, and `Codes`,
what reading any of them gives.

Owns: the interface. Must not: list the formats (the registry in `__init__.py` does) or know
any format's bytes (each format's own module does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, ClassVar

import numpy as np


@dataclass(frozen=True)
class Shard:
    """Which part of which input a codes file holds: block `index` of `count` (I/N of `dvae encode
    --shard`; 0 of 1 for a whole input) of an input of `images` images, the input known by its
    `identity` (16 hex digits; docs/CODES.md says how it is computed)."""

    index: int
    count: int
    images: int
    identity: str

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count} of input {self.identity} ({self.images:,} images)"


@dataclass
class Codes:
    """Codes read from a file: the (N, D) class indices and what the file says about them."""

    indices: np.ndarray
    format: str
    classes: int | None  # K as recorded; None for formats that do not record it
    fingerprint: str | None  # of the checkpoint that made them; None when not recorded
    shard: Shard | None = None  # the part of the input they encode; None when not recorded


class FormatWriter:
    """Writes one format's records to a binary file, chunk by chunk (after its header, if any)."""

    def write(self, codes: np.ndarray) -> None:
        """Append (n, D) class indices, already checked against D and K."""
        raise NotImplementedError

    def close(self, written: int) -> None:
        """Finish the file after `written` codes in all."""


class CodeFormat:
    """A codes file format: one small unit plus one line in the registry (`formats/__init__.py`).

    Subclasses set `name` (the --format choice), `summary` (its --format help), `suffixes`
    (output names that choose it) and implement `sniff`, `writer` and `read`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    binary: ClassVar[bool] = True  # bytes a terminal should not get
    records_classes: ClassVar[bool] = False  # whether the file records K (and a fingerprint and shard)
    joins_verbatim: ClassVar[bool] = False  # files are joined byte for byte (when K is not recorded
    # but decides the layout), not re-written from their indices

    def sniff(self, data: bytes) -> bool:
        """Whether a file starting with `data` is in this format."""
        raise NotImplementedError

    def promised_bytes(self, head: bytes, name: str) -> int | None:
        """The most bytes a file starting with `head` (its first bytes) can hold by what its header
        says, so that a reader stops there; None when the format does not say."""
        return None

    def writer(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None,
               fingerprint: str | None, shard: Shard | None) -> FormatWriter:
        """Start a file of `count` codes (None: not known yet) on `file`; formats with a header record
        the producing checkpoint's `fingerprint` and the `shard` of the input (when given)."""
        raise NotImplementedError

    def read(self, data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
        """The codes of a whole file; `latent_vars`, `classes` help formats that do not record them."""
        raise NotImplementedError
