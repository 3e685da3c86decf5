"""Code files as a whole: writing (`CodeWriter`, `write_codes`), reading any format (`read_codes`)
and joining shards (`join_codes`), through the format registry.

Owns: counting, checking and dispatching to the formats. Must not: know any format's bytes (the
format units do) or touch a model (model_side.py does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DVAEError
from ..fileio import open_output
from .formats import DEFAULT, Codes, detect, get_format
from .packing import MAX_CLASSES, check_classes, check_codes

WRITE_CHUNK = 8192  # codes handed to a format writer at a time


class CodeWriter:
    """Writes codes chunk by chunk to a binary file in one of the registered formats.

    With `count` the file's header (if its format has one) says N up front and `close` checks that
    exactly that many were written. With `count=None` each format does what it can: packed and
    onehot headers carry N = 2**64 - 1 ("as many records as the file holds"), indices are held back
    until `close` (D bytes per image), text has no header. Use it as a context manager."""

    def __init__(self, file: BinaryIO, format: str, latent_vars: int, classes: int,
                 count: int | None = None, fingerprint: str | None = None):
        self.format = get_format(format)
        check_classes(latent_vars, classes)
        self.d, self.k, self.count, self.written = latent_vars, classes, count, 0
        self.sink = self.format.writer(file, latent_vars, classes, count, fingerprint)

    def write(self, codes: np.ndarray) -> None:
        """Append (n, D) class indices."""
        codes = check_codes(codes, self.k, self.d)
        self.written += len(codes)
        if self.count is not None and self.written > self.count:
            raise DVAEError(f"more codes than the {self.count} announced")
        self.sink.write(codes)

    def close(self) -> None:
        """Finish the file; an error if fewer codes than announced were written."""
        if self.count is not None and self.written != self.count:
            raise DVAEError(f"{self.written} codes written, {self.count} announced")
        self.sink.close(self.written)

    def __enter__(self) -> CodeWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()


def write_codes(target: str | os.PathLike | BinaryIO, codes: np.ndarray, classes: int,
                format: str = DEFAULT, fingerprint: str | None = None) -> None:
    """Write (N, D) class indices of K=`classes` to a path (atomically), "-" (stdout) or a binary file.
    `fingerprint`: the producing checkpoint's (`Checkpoint.fingerprint`), checked by `dvae decode`."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise DVAEError(f"codes must be a 2-d (N, D) array, got shape {codes.shape}")
    with open_output(target) as f, CodeWriter(f, format, codes.shape[1], classes, len(codes), fingerprint) as w:
        for start in range(0, len(codes), WRITE_CHUNK):
            w.write(codes[start:start + WRITE_CHUNK])


def read_codes(source: str | os.PathLike | BinaryIO, latent_vars: int | None = None,
               classes: int | None = None) -> Codes:
    """Read a codes file of any format (detected from its first bytes) from a path, "-" (stdin)
    or a binary file. Codes files are small (at most D bytes an image), so it is read whole.

    `latent_vars` and `classes` help the formats that do not record them (text: K decides between
    digits and numbers, D is the width of an empty file)."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "codes")
    if name == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    elif isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise DVAEError(f"{source}: cannot read it ({e.strerror})") from None
    else:
        data = source.read()
    return detect(data, name).read(data, name, latent_vars, classes)


def join_codes(sources: list[str | os.PathLike], target: str | os.PathLike | BinaryIO) -> Codes:
    """Write the codes of `sources`, in order, into one file of their common format (e.g. the
    shards of `dvae encode --shard`); returns what was written. The files must agree in format,
    D, K and fingerprint (when recorded) and index type; else nothing is written."""
    if not sources:
        raise DVAEError("no codes files to join")
    parts = [read_codes(source) for source in sources]
    first, name = parts[0], str(sources[0])
    for part, source in zip(parts[1:], sources[1:]):
        for what, mine, theirs in (("format", part.format, first.format), ("K", part.classes, first.classes),
                                   ("fingerprint", part.fingerprint, first.fingerprint),
                                   ("index type", part.indices.dtype, first.indices.dtype)):
            if mine != theirs:
                raise DVAEError(f"{source}: {what} {mine} differs from {theirs} of {name}; not joining them")
        if len(part.indices) and len(first.indices) and part.indices.shape[1] != first.indices.shape[1]:
            raise DVAEError(f"{source}: D={part.indices.shape[1]} differs from D={first.indices.shape[1]} "
                            f"of {name}; not joining them")
    indices = np.concatenate([p.indices for p in parts if len(p.indices)] or [first.indices])
    joined = Codes(indices, first.format, first.classes, first.fingerprint)
    if get_format(first.format).joins_verbatim:
        with open_output(target) as f:
            for source in sources:
                data = Path(source).read_bytes()
                f.write(data + b"\n" if data and not data.endswith(b"\n") else data)
        return joined
    classes = first.classes or (256 if indices.dtype == np.uint8 else MAX_CLASSES)  # unrecorded K: as the index type
    write_codes(target, indices, classes, first.format, first.fingerprint)
    return joined
