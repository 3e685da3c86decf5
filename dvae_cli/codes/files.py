"""Code files as a whole: writing (`CodeWriter`, `write_codes`), reading any format (`read_codes`)
and joining shards (`join_codes`), through the format registry.

Owns: counting, checking and dispatching to the formats. Must not: know any format's bytes (the
format units do) or touch a model (model_side.py does).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

import numpy as np

from ..errors import DVAEError
from .. import fileio
from ..fileio import open_output
from .formats import DEFAULT, Codes, Shard, detect, get_format
from .packing import MAX_CLASSES, check_classes, check_codes

WRITE_CHUNK = 8192  # codes handed to a format writer at a time
MAX_FILE_BYTES = 1 << 32  # the most a codes or index file may hold (4 GiB: 140 million codes of D=30 as
# .npy); a larger file, or a stream (stdin, a FIFO, /dev/zero) that goes on past it, is refused
READ_BLOCK = 1 << 20  # bytes read from a stream at a time
HEAD = 128  # bytes enough to tell a format (`formats.detect`), checked before a stream is read on


class CodeWriter:
    """Writes codes chunk by chunk to a binary file in one of the registered formats.

    `fingerprint` (the checkpoint's) and `shard` (the part of which input) go into the header of the
    formats that have one. With `count` the header says N up front and `close` checks that
    exactly that many were written. With `count=None` each format does what it can: packed and
    onehot headers carry N = 2**64 - 1 ("as many records as the file holds"), indices are held back
    until `close` (D bytes per image), text has no header. Use it as a context manager."""

    def __init__(self, file: BinaryIO, format: str, latent_vars: int, classes: int,
                 count: int | None = None, fingerprint: str | None = None, shard: Shard | None = None):
        self.format = get_format(format)
        check_classes(latent_vars, classes)
        self.d, self.k, self.count, self.written = latent_vars, classes, count, 0
        self.sink = self.format.writer(file, latent_vars, classes, count, fingerprint, shard)

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
                format: str = DEFAULT, fingerprint: str | None = None, shard: Shard | None = None) -> None:
    """Write (N, D) class indices of K=`classes` to a path (atomically), "-" (stdout) or a binary file.
    `fingerprint`: the producing checkpoint's (`Checkpoint.fingerprint`), checked by `dvae decode`;
    `shard`: the part of which input they encode (`inputs.identity`), checked by `dvae cat`."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise DVAEError(f"codes must be a 2-d (N, D) array, got shape {codes.shape}")
    with open_output(target) as f, CodeWriter(f, format, codes.shape[1], classes, len(codes), fingerprint,
                                              shard) as w:
        for start in range(0, len(codes), WRITE_CHUNK):
            w.write(codes[start:start + WRITE_CHUNK])


def read_codes(source: str | os.PathLike | BinaryIO, latent_vars: int | None = None,
               classes: int | None = None) -> Codes:
    """Read a codes file of any format (detected from its first bytes) from a path, "-" (stdin)
    or a binary file. Codes files are small (at most D bytes an image), so it is read whole, in
    blocks, up to MAX_FILE_BYTES or the size its header promises, whichever is smaller (a stream
    that is not a codes file is refused at once).

    `latent_vars` and `classes` help the formats that do not record them (text: K decides between
    digits and numbers, D is the width of an empty file)."""
    name, data = read_source(source, _codes_head)
    return detect(data, name).read(data, name, latent_vars, classes)


def _codes_head(head: bytes, name: str) -> int | None:
    """A codes file's first bytes checked; the most bytes its header says the file holds."""
    return detect(head, name).promised_bytes(head, name)


def read_source(source: str | os.PathLike | BinaryIO, check_head=None,
                limit: int | None = None) -> tuple[str, bytes]:
    """(name, bytes) of a whole file: a path, "-" (stdin) or a binary file, read in blocks of
    READ_BLOCK, so memory grows with what is there and is never reserved up front. It stops at
    `limit` (default MAX_FILE_BYTES) bytes, or at the size the file's header promises when
    `check_head(head, name)` returns one; past the ceiling, a one-line error, so an endless stream
    ends dvae instead of filling memory; past the promise, reading stops and the format says what
    is wrong (the bytes returned then exceed the promise). `check_head` sees the first HEAD bytes (or all, if fewer) before
    the rest is read, and raises for a stream that is not what it should be."""
    limit = MAX_FILE_BYTES if limit is None else limit
    if isinstance(source, (str, os.PathLike)) and str(source) == "-":
        stream = fileio.stdin()  # open, and not a terminal
        try:
            return "stdin", _read_limited(stream, "stdin", limit, check_head)
        except (OSError, ValueError) as e:  # ValueError: a closed descriptor
            raise DVAEError(f"stdin: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(source, (str, os.PathLike)):
        name = getattr(source, "name", "codes")
        return str(name), _read_limited(source, str(name), limit, check_head)
    name = str(source)
    try:
        with open(source, "rb") as f:
            found = os.fstat(f.fileno())
            if stat.S_ISREG(found.st_mode) and found.st_size > limit:  # its size is known: checked first
                raise DVAEError(f"{name}: {found.st_size:,} bytes, over dvae's ceiling of {limit:,} for a "
                                f"codes or index file")
            return name, _read_limited(f, name, limit, check_head)
    except OSError as e:
        raise DVAEError(f"{name}: cannot read it ({e.strerror or e})") from None


def _read_limited(stream: BinaryIO, name: str, limit: int, check_head) -> bytes:
    """The stream's bytes, read in blocks up to `limit` or what `check_head` says its header promises."""
    parts, total, checked, promised = [], 0, check_head is None, None
    try:
        while True:
            block = stream.read(READ_BLOCK)
            if not block:
                break
            parts.append(block)
            total += len(block)
            if total > limit:
                raise DVAEError(f"{name}: more than {limit:,} bytes, over dvae's ceiling for a codes or "
                                f"index file (a stream that does not end?)")
            if not checked and total >= HEAD:
                promised, checked = check_head(b"".join(parts)[:HEAD], name), True
            if promised is not None and total > promised:
                break  # more than its header says: enough for the format to say so, nothing more read
        data = b"".join(parts)
    except MemoryError:
        raise DVAEError(f"{name}: out of memory after {total:,} bytes; free memory or give a smaller file") from None
    if not checked:
        check_head(data, name)
    return data


def join_codes(sources: list[str | os.PathLike], target: str | os.PathLike | BinaryIO) -> Codes:
    """Write the codes of `sources`, in order, into one file of their common format (e.g. the
    shards of `dvae encode --shard`); returns what was written. The files must agree in format,
    D, K and fingerprint (when recorded) and index type; else nothing is written."""
    if not sources:
        raise DVAEError("no codes files to join")
    read = [read_source(source, _codes_head) for source in sources]
    parts = [detect(data, name).read(data, name, None, None) for name, data in read]
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
    shard = joined_shard(parts, [str(source) for source in sources])
    indices = np.concatenate([p.indices for p in parts if len(p.indices)] or [first.indices])
    joined = Codes(indices, first.format, first.classes, first.fingerprint, shard)
    if get_format(first.format).joins_verbatim:
        with open_output(target) as f:
            for _, data in read:  # as read above: a FIFO cannot be read twice
                f.write(data + b"\n" if data and not data.endswith(b"\n") else data)
        return joined
    classes = first.classes or (256 if indices.dtype == np.uint8 else MAX_CLASSES)  # unrecorded K: as the index type
    write_codes(target, indices, classes, first.format, first.fingerprint, shard)
    return joined


def joined_shard(parts: list[Codes], names: list[str]) -> Shard | None:
    """The whole input that shards 0..N-1 of one input make, given in order; or None when no file
    records its shard (text, indices, files written without one). Anything else is an error:
    shards missing, repeated or out of order, from different inputs, or files with and without."""
    shards = [part.shard for part in parts]
    if all(shard is None for shard in shards):
        return None
    if any(shard is None for shard in shards):
        without, with_ = (names[i] for i in (shards.index(None), next(i for i, s in enumerate(shards) if s)))
        raise DVAEError(f"{without} does not record which shard of which input it holds, {with_} does; "
                        f"not joining them")
    first = shards[0]
    for shard, name in zip(shards, names):
        if (shard.identity, shard.images, shard.count) != (first.identity, first.images, first.count):
            raise DVAEError(f"{name} is {shard}, {names[0]} is {first}: not shards of one input; not joining them")
    indices = [shard.index for shard in shards]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        where = ", ".join(name for name, shard in zip(names, shards) if shard.index == repeated[0])
        raise DVAEError(f"shard {repeated[0]}/{first.count} is given more than once ({where}); not joining them")
    missing = sorted(set(range(first.count)) - set(indices))
    if missing:
        raise DVAEError(f"shard(s) {', '.join(map(str, missing))} of {first.count} missing (input {first.identity}); "
                        f"give all {first.count} shards to join them")
    if indices != sorted(indices):
        order = " ".join(f"{name}={shard.index}" for name, shard in zip(names, shards))
        raise DVAEError(f"shards out of order ({order}); give them in order 0..{first.count - 1}")
    count = sum(len(part.indices) for part in parts)
    if count != first.images:
        raise DVAEError(f"the shards hold {count:,} codes, their input has {first.images:,} images; not joining them")
    return Shard(0, 1, first.images, first.identity)
