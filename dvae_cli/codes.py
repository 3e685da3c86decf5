"""Codes: the D class indices (one per categorical variable) that a model gives an image, and the
files that hold them. The byte layout of every format is specified in docs/CODES.md.

    from dvae_cli import load_checkpoint
    from dvae_cli.codes import encode, decode, write_codes, read_codes
    from dvae_cli.inputs import read_images

    ckpt = load_checkpoint("runs/dtp-20250101-120000")
    codes = encode(ckpt.model, read_images("imgs.npy"))       # (N, D) uint8 class indices
    write_codes("codes.bin", codes, classes=10, fingerprint=ckpt.fingerprint)
    back = read_codes("codes.bin")                            # Codes(indices, classes, format, fingerprint)
    means = decode(ckpt.model, back.indices)                  # (N, 28, 28) float32 Bernoulli means

Formats: `packed` (header + fixed-width mixed-radix records: 13 bytes per image for D=30, K=10),
`onehot` (header + the D*K one-hot bits per image), `indices` (an (N, D) .npy), `text` (a line per image).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import torch

from .checkpoint import BEST, LAST, resolve_checkpoint
from .errors import DVAEError
from .fileio import atomic_open
from .inputs import CHUNK, NPY_MAGIC, SIDE, ImageSource, binarize_array, in_memory
from .model import DiscreteVAE, gumbel_noise

FORMATS = ("packed", "onehot", "indices", "text")
MAX_CLASSES = 4096
MAGIC = b"\x89DVAE\r\n\x1a"
VERSION = 1
PACKING = {"packed": 1, "onehot": 2}  # the header's packing field
HEADER = struct.Struct("<8sHHIIIIQ16s")  # magic, version, packing, D, K, group, record bytes, N, fingerprint
HEADER_SIZE = HEADER.size + 4  # + CRC-32 of the fields
UNKNOWN_COUNT = 2**64 - 1  # N when the writer did not know it: then N = body bytes / record bytes
ENV_CKPT = "DVAE_CKPT"


# ---- mixed-radix packing ---------------------------------------------------------------------


def _bits(classes: int, digits: int) -> int:
    """Bits for a group of `digits` base-K digits: those of K**digits - 1 (0 bits for 0 digits)."""
    return (classes**digits - 1).bit_length()


def record_bits(latent_vars: int, classes: int, group: int) -> int:
    """Bits of a packed record: D // g full groups and one group of the D % g remaining digits."""
    return latent_vars // group * _bits(classes, group) + _bits(classes, latent_vars % group)


def group_size(latent_vars: int, classes: int) -> int:
    """The digits per group g (K**g <= 2**63) that make the smallest record; the smallest g on ties."""
    sizes = [g for g in range(1, latent_vars + 1) if classes**g <= 2**63]
    return min(sizes, key=lambda g: (record_bits(latent_vars, classes, g), g))


def record_bytes(format: str, latent_vars: int, classes: int, group: int = 0) -> int:
    """Bytes of one record in the packed (needs `group`) or onehot format."""
    bits = record_bits(latent_vars, classes, group) if format == "packed" else latent_vars * classes
    return math.ceil(bits / 8)


def index_dtype(classes: int) -> np.dtype:
    """The smallest unsigned type for class indices: uint8 for K <= 256, else uint16."""
    return np.dtype(np.uint8 if classes <= 256 else np.uint16)


def _check_classes(latent_vars: int, classes: int) -> None:
    if latent_vars < 1 or not 2 <= classes <= MAX_CLASSES:
        raise DVAEError(f"codes need D >= 1 and 2 <= K <= {MAX_CLASSES}; got D={latent_vars}, K={classes}")


def check_codes(codes: np.ndarray, classes: int, latent_vars: int | None = None) -> np.ndarray:
    """Codes as an (N, D) array of integers in [0, K) (D = `latent_vars` when given), or a clear error."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or latent_vars is not None and codes.shape[1] != latent_vars:
        expected = f"(N, {latent_vars})" if latent_vars is not None else "(N, D)"
        raise DVAEError(f"codes have shape {codes.shape}; expected {expected}")
    if codes.dtype.kind not in "iu":
        raise DVAEError(f"codes must be integer class indices, not {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= classes):
        raise DVAEError(f"class indices must lie in [0, {classes}) for K={classes}; "
                        f"found {codes.min()}..{codes.max()}")
    return codes


def _segments(latent_vars: int, group: int) -> list[tuple[int, int]]:
    """(digits per group, groups) of a record: D // g groups of g, then one of the D % g left."""
    return [(group, latent_vars // group)] + ([(latent_vars % group, 1)] if latent_vars % group else [])


def _to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """(N, G) uint64 values -> (N, G * bits) uint8 bits, each value most significant bit first."""
    as_bytes = values.astype(">u8").view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1)[..., 64 - bits:].reshape(len(values), values.shape[1] * bits)


def _from_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `_to_bits`: (N, G * width) bits -> (N, G) uint64 values."""
    grouped = bits.reshape(len(bits), bits.shape[1] // width, width)
    padded = np.zeros((*grouped.shape[:2], 64), np.uint8)
    padded[..., 64 - width:] = grouped
    return np.packbits(padded, axis=-1).view(">u8")[..., 0].astype(np.uint64)


def pack(codes: np.ndarray, classes: int, group: int | None = None) -> np.ndarray:
    """Pack (N, D) class indices into (N, R) uint8 records, mixed radix (see docs/CODES.md).

    Each group of g consecutive indices c_1..c_g becomes the number (..(c_1 K + c_2) K ..) + c_g,
    written in as many bits as K**g - 1 needs, most significant first; the groups follow each
    other and the record is padded with zero bits to whole bytes. `group` defaults to `group_size`."""
    codes = check_codes(codes, classes)
    n, d = codes.shape
    _check_classes(d, classes)
    g = group or group_size(d, classes)
    codes, column, parts = codes.astype(np.uint64), 0, []
    for digits, groups in _segments(d, g):
        block = codes[:, column:column + digits * groups].reshape(n, groups, digits)
        column += digits * groups
        values = np.zeros((n, groups), np.uint64)
        for j in range(digits):  # Horner over the digit positions, vectorized over images and groups
            values = values * np.uint64(classes) + block[..., j]
        parts.append(_to_bits(values, _bits(classes, digits)))
    return np.packbits(np.concatenate(parts, axis=1), axis=1)


def unpack(records: np.ndarray, latent_vars: int, classes: int, group: int | None = None) -> np.ndarray:
    """Inverse of `pack`: (N, R) uint8 records -> (N, D) class indices; corrupt records are an error."""
    _check_classes(latent_vars, classes)
    g = group or group_size(latent_vars, classes)
    size = record_bytes("packed", latent_vars, classes, g)
    records = np.asarray(records, dtype=np.uint8)
    if records.ndim != 2 or records.shape[1] != size:
        raise DVAEError(f"packed records have shape {records.shape}; expected (N, {size}) "
                        f"for D={latent_vars}, K={classes}")
    n = len(records)
    bits = np.unpackbits(records, axis=1)
    offset, columns, bad = 0, [], np.zeros(n, bool)
    for digits, groups in _segments(latent_vars, g):
        width = _bits(classes, digits)
        values = _from_bits(bits[:, offset:offset + groups * width], width)
        offset += groups * width
        block = np.empty((n, groups, digits), np.uint64)
        for j in range(digits - 1, -1, -1):
            block[..., j] = values % np.uint64(classes)
            values = values // np.uint64(classes)
        bad |= values.any(axis=1)  # a group value of K**g or more
        columns.append(block.reshape(n, groups * digits))
    bad |= bits[:, offset:].any(axis=1)  # the padding must be zero
    if bad.any():
        raise DVAEError(f"corrupt packed record {int(bad.argmax())}: not a valid code for D={latent_vars}, K={classes}")
    return np.concatenate(columns, axis=1).astype(index_dtype(classes))


def pack_onehot(codes: np.ndarray, classes: int) -> np.ndarray:
    """(N, D) class indices -> (N, ceil(D*K/8)) uint8: the one-hot bits, variable by variable, packed."""
    codes = check_codes(codes, classes)
    n, d = codes.shape
    one_hot = np.zeros((n, d, classes), np.uint8)
    np.put_along_axis(one_hot, codes[..., None].astype(np.intp), 1, axis=2)
    return np.packbits(one_hot.reshape(n, d * classes), axis=1)


def unpack_onehot(records: np.ndarray, latent_vars: int, classes: int) -> np.ndarray:
    """Inverse of `pack_onehot`; a record without exactly one bit per variable is an error."""
    _check_classes(latent_vars, classes)
    size = record_bytes("onehot", latent_vars, classes)
    records = np.asarray(records, dtype=np.uint8)
    if records.ndim != 2 or records.shape[1] != size:
        raise DVAEError(f"onehot records have shape {records.shape}; expected (N, {size}) "
                        f"for D={latent_vars}, K={classes}")
    bits = np.unpackbits(records, axis=1)
    one_hot = bits[:, :latent_vars * classes].reshape(len(records), latent_vars, classes)
    bad = (one_hot.sum(axis=2, dtype=np.int64) != 1).any(axis=1) | bits[:, latent_vars * classes:].any(axis=1)
    if bad.any():
        raise DVAEError(f"corrupt onehot record {int(bad.argmax())}: each variable needs exactly one bit set")
    return one_hot.argmax(axis=2).astype(index_dtype(classes))


# ---- the model side --------------------------------------------------------------------------


def encode_block(model: DiscreteVAE, images: ImageSource, start: int, stop: int, batch_size: int = CHUNK,
                 sample: bool = False, seed: int = 0) -> Iterator[np.ndarray]:
    """Class indices (n, D) of images[start:stop], chunk by chunk: the argmax of pi, or with `sample`
    a Gumbel-max sample (one generator seeded with `seed` runs through all chunks).

    Every chunk of `batch_size` images is encoded whole and draws its noise whatever the block, so
    blocks encoded apart join into the file that encoding everything gives, byte for byte. The
    images before `start` are read but not encoded (with `sample`, their noise is drawn)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    dtype = index_dtype(model.config.classes)
    shape = (model.config.latent_vars, model.config.classes)
    first = 0
    with torch.inference_mode():
        for raw in images.raw_chunks(batch_size):
            if first >= stop:
                break
            noise = torch.rand((len(raw), *shape), generator=generator, device=device) if sample else None
            lo, hi = max(start, first) - first, min(stop, first + len(raw)) - first
            if lo < hi:  # encode the whole chunk and keep the block's rows
                # the encoder's logits: log pi less a constant per variable, which neither the
                # argmax nor Gumbel-max depends on (so the log-softmax of `model.encode` is skipped)
                scores = model.encoder(binarize_array(raw, images.name, first).to(device)).view(len(raw), *shape)
                if sample:
                    scores = scores + gumbel_noise(noise)
                yield scores[lo:hi].argmax(dim=-1).cpu().numpy().astype(dtype)
            first += len(raw)


def encode(model: DiscreteVAE, images: np.ndarray | torch.Tensor, sample: bool = False,
           seed: int = 0) -> np.ndarray:
    """Codes (N, D) of images (uint8 0-255, float in [0, 1] or bool; (N, 28, 28) or (N, 784)),
    binarized as in training; see `encode_block`."""
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    empty = np.zeros((0, model.config.latent_vars), index_dtype(model.config.classes))
    return np.concatenate([empty, *encode_block(model, in_memory(array), 0, len(array), CHUNK, sample, seed)])


def decode_chunks(model: DiscreteVAE, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Bernoulli means (n, 28, 28) float32 for each chunk of codes (n, D)."""
    device = next(model.parameters()).device
    d, k = model.config.latent_vars, model.config.classes
    with torch.inference_mode():
        for codes in chunks:
            index = torch.from_numpy(check_codes(codes, k, d).astype(np.int64)).to(device)
            yield torch.sigmoid(model.decode_indices(index)).view(len(index), SIDE, SIDE).cpu().numpy()


def decode(model: DiscreteVAE, codes: np.ndarray) -> np.ndarray:
    """Bernoulli means (N, 28, 28) float32 of the images that codes (N, D) stand for."""
    codes = np.asarray(codes)
    chunks = (codes[i:i + CHUNK] for i in range(0, len(codes), CHUNK))
    return np.concatenate([np.zeros((0, SIDE, SIDE), np.float32), *decode_chunks(model, chunks)])


def default_checkpoint(runs: str | Path = "runs") -> Path:
    """The checkpoint to use when none is given: $DVAE_CKPT, else the best checkpoint of the run
    under `runs` that wrote a checkpoint last, else the shipped `pretrained:best`."""
    if os.environ.get(ENV_CKPT):
        return resolve_checkpoint(os.environ[ENV_CKPT])
    found = [f for d in Path(runs).glob("*") for f in (d / BEST, d / LAST) if f.is_file()]
    if not found:
        return resolve_checkpoint("pretrained:best")
    return resolve_checkpoint(max(found, key=lambda f: f.stat().st_mtime).parent)


# ---- writing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def open_output(target: str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    """A binary output: "-" is stdout, a path is written atomically, a file object is used as is."""
    if isinstance(target, (str, os.PathLike)) and str(target) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    elif isinstance(target, (str, os.PathLike)):
        with atomic_open(target) as f:
            yield f
    else:
        yield target


def _header(packing: int, d: int, k: int, group: int, size: int, count: int | None,
            fingerprint: str | None) -> bytes:
    if fingerprint is not None and (len(fingerprint) != 16 or not all(c in "0123456789abcdef" for c in fingerprint)):
        raise DVAEError(f"a fingerprint is 16 lowercase hex digits, not {fingerprint!r}")
    fields = HEADER.pack(MAGIC, VERSION, packing, d, k, group, size,
                         UNKNOWN_COUNT if count is None else count, (fingerprint or "").encode("ascii"))
    return fields + struct.pack("<I", zlib.crc32(fields))


def _text(codes: np.ndarray, classes: int) -> bytes:
    """One line per image: D digits for K <= 10, else D zero-padded numbers separated by spaces."""
    width = len(str(classes - 1))
    powers = 10 ** np.arange(width - 1, -1, -1)
    chars = (codes[..., None] // powers % 10 + ord("0")).astype(np.uint8)  # (N, D, width)
    if classes > 10:
        chars = np.concatenate([chars, np.full((*chars.shape[:2], 1), ord(" "), np.uint8)], axis=2)
        lines = chars.reshape(len(codes), chars.shape[1] * chars.shape[2])
        lines[:, -1] = ord("\n")
    else:
        lines = np.concatenate([chars.reshape(len(codes), chars.shape[1] * width),
                                np.full((len(codes), 1), ord("\n"), np.uint8)], axis=1)
    return lines.tobytes()


class CodeWriter:
    """Writes codes chunk by chunk to a binary file in one of FORMATS.

    With `count` the header (packed, onehot) or .npy header (indices) says N up front and `close`
    checks that exactly that many were written. With `count=None` packed and onehot headers carry
    N = 2**64 - 1, meaning "as many records as the file holds"; indices are held back until `close`
    (D bytes per image); text has no header. Use it as a context manager."""

    def __init__(self, file: BinaryIO, format: str, latent_vars: int, classes: int,
                 count: int | None = None, fingerprint: str | None = None):
        if format not in FORMATS:
            raise DVAEError(f"unknown codes format {format!r}; choose one of {', '.join(FORMATS)}")
        _check_classes(latent_vars, classes)
        self.file, self.format, self.d, self.k, self.count = file, format, latent_vars, classes, count
        self.group = group_size(latent_vars, classes) if format == "packed" else 0
        self.written = 0
        self.held: list[np.ndarray] = []
        if format in PACKING:
            size = record_bytes(format, latent_vars, classes, self.group)
            file.write(_header(PACKING[format], latent_vars, classes, self.group, size, count, fingerprint))
        elif format == "indices" and count is not None:
            self._npy_header(count)

    def _npy_header(self, count: int) -> None:
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(index_dtype(self.k)), "fortran_order": False,
            "shape": (count, self.d)})

    def write(self, codes: np.ndarray) -> None:
        """Append (n, D) class indices."""
        codes = check_codes(codes, self.k, self.d)
        self.written += len(codes)
        if self.count is not None and self.written > self.count:
            raise DVAEError(f"more codes than the {self.count} announced")
        if self.format == "packed":
            self.file.write(pack(codes, self.k, self.group).tobytes())
        elif self.format == "onehot":
            self.file.write(pack_onehot(codes, self.k).tobytes())
        elif self.format == "text":
            self.file.write(_text(codes, self.k))
        elif self.count is None:
            self.held.append(codes.astype(index_dtype(self.k)))
        else:
            self.file.write(codes.astype(index_dtype(self.k)).tobytes())

    def close(self) -> None:
        """Finish the file; an error if fewer codes than announced were written."""
        if self.count is not None and self.written != self.count:
            raise DVAEError(f"{self.written} codes written, {self.count} announced")
        if self.format == "indices" and self.count is None:
            self._npy_header(self.written)
            for codes in self.held:
                self.file.write(codes.tobytes())

    def __enter__(self) -> CodeWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()


def write_codes(target: str | os.PathLike | BinaryIO, codes: np.ndarray, classes: int,
                format: str = "packed", fingerprint: str | None = None) -> None:
    """Write (N, D) class indices of K=`classes` to a path (atomically), "-" (stdout) or a binary file.
    `fingerprint`: the producing checkpoint's (`Checkpoint.fingerprint`), checked by `dvae decode`."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise DVAEError(f"codes must be a 2-d (N, D) array, got shape {codes.shape}")
    with open_output(target) as f, CodeWriter(f, format, codes.shape[1], classes, len(codes), fingerprint) as w:
        for start in range(0, len(codes), CHUNK):
            w.write(codes[start:start + CHUNK])


# ---- reading ---------------------------------------------------------------------------------


@dataclass
class Codes:
    """Codes read from a file: the (N, D) class indices and what the file says about them."""

    indices: np.ndarray
    format: str
    classes: int | None  # K as recorded; None for indices and text, which do not record it
    fingerprint: str | None  # of the checkpoint that made them; None when not recorded


def _parse_header(data: bytes, name: str) -> tuple[str, int, int, int, int, int | None, str | None]:
    """Format, D, K, group, record bytes, N (None: unknown) and fingerprint of a packed/onehot file."""
    if len(data) < 10:
        raise DVAEError(f"{name}: truncated codes header")
    version = int.from_bytes(data[8:10], "little")
    if version != VERSION:
        newer = " (written by a newer dvae: upgrade)" if version > VERSION else ""
        raise DVAEError(f"{name}: codes format version {version}; this dvae reads version {VERSION}{newer}")
    if len(data) < HEADER_SIZE:
        raise DVAEError(f"{name}: truncated codes header ({len(data)} of {HEADER_SIZE} bytes)")
    fields = data[:HEADER.size]
    if zlib.crc32(fields) != int.from_bytes(data[HEADER.size:HEADER_SIZE], "little"):
        raise DVAEError(f"{name}: corrupt codes header (checksum mismatch)")
    _, _, packing, d, k, group, size, count, fp = HEADER.unpack(fields)
    formats = {v: f for f, v in PACKING.items()}
    if packing not in formats:
        raise DVAEError(f"{name}: unknown packing {packing}")
    format = formats[packing]
    _check_classes(d, k)
    valid_group = group == 0 if format == "onehot" else 1 <= group <= d and k**group <= 2**63
    if not valid_group or size != record_bytes(format, d, k, group):
        raise DVAEError(f"{name}: inconsistent codes header (group {group}, record size {size})")
    fingerprint = fp.decode("ascii", "replace") if fp.strip(b"\0") else None
    return format, d, k, group, size, None if count == UNKNOWN_COUNT else count, fingerprint


def _read_records(data: bytes, name: str) -> Codes:
    format, d, k, group, size, count, fingerprint = _parse_header(data, name)
    body = len(data) - HEADER_SIZE
    if count is None:
        if body % size:
            raise DVAEError(f"{name}: truncated: {body} bytes of records is not a whole number of {size}-byte records")
        count = body // size
    elif body != count * size:
        raise DVAEError(f"{name}: record count mismatch: the header says {count} records ({count * size} bytes), "
                        f"the file has {body} bytes of records")
    records = np.frombuffer(data, np.uint8, offset=HEADER_SIZE).reshape(count, size)
    indices = np.empty((count, d), index_dtype(k))
    for start in range(0, count, CHUNK):
        part = records[start:start + CHUNK]
        try:
            indices[start:start + CHUNK] = unpack(part, d, k, group) if format == "packed" else unpack_onehot(part, d, k)
        except DVAEError as e:
            raise DVAEError(f"{name}: {e} (record numbers count from {start})") from None
    return Codes(indices, format, k, fingerprint)


def _read_npy(data: bytes, name: str) -> Codes:
    try:
        indices = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise DVAEError(f"{name}: not a valid .npy file of indices ({e})") from None
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise DVAEError(f"{name}: indices must be an (N, D) integer array, got {indices.dtype} {indices.shape}")
    if indices.size and indices.min() < 0:
        raise DVAEError(f"{name}: negative class index {indices.min()}")
    return Codes(indices, "indices", None, None)


def _read_text(data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
    if not data:
        return Codes(np.zeros((0, latent_vars or 0), np.uint8), "text", None, None)
    first_line = data.split(b"\n", 1)[0]
    if (classes > 10) if classes is not None else any(c in first_line for c in b" \t"):
        try:
            indices = np.loadtxt(io.BytesIO(data), dtype=np.int64, ndmin=2)
        except ValueError as e:
            raise DVAEError(f"{name}: not valid text codes ({e})") from None
        if indices.min() < 0:
            raise DVAEError(f"{name}: negative class index {indices.min()}")
        return Codes(indices, "text", None, None)
    if not data.endswith(b"\n"):
        data += b"\n"
    d = len(first_line)
    if len(data) % (d + 1):
        raise DVAEError(f"{name}: text codes lines differ in length (the first has {d} digits)")
    lines = np.frombuffer(data, np.uint8).reshape(-1, d + 1)
    bad = (lines[:, -1] != ord("\n")) | ((lines[:, :-1] - ord("0")) > 9).any(axis=1)
    if bad.any():
        raise DVAEError(f"{name}: line {int(bad.argmax()) + 1}: expected {d} digits 0-9 per line")
    return Codes(lines[:, :-1] - np.uint8(ord("0")), "text", None, None)


def read_codes(source: str | os.PathLike | BinaryIO, latent_vars: int | None = None,
               classes: int | None = None) -> Codes:
    """Read a codes file of any format (detected from its first bytes) from a path, "-" (stdin)
    or a binary file. Codes files are small (at most D bytes an image), so it is read whole.

    `latent_vars` and `classes` help the text format, which does not record them: K decides
    between digits (K <= 10) and numbers (else: whitespace in the first line), D is the width of
    an empty file."""
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
    if data.startswith(MAGIC):
        return _read_records(data, name)
    if data.startswith(NPY_MAGIC):
        return _read_npy(data, name)
    if not data or data[:1].isdigit():
        return _read_text(data, name, latent_vars, classes)
    raise DVAEError(f"{name}: not a codes file (no dvae codes header, not a .npy of indices, not text codes)")


# ---- joining ---------------------------------------------------------------------------------


def join_codes(sources: list[str | os.PathLike], target: str | os.PathLike | BinaryIO) -> Codes:
    """Write the codes of `sources`, in order, into one file of their common format (e.g. the
    shards of `dvae encode --shard`); returns what was written. The files must agree in format,
    D, K and fingerprint (packed, onehot) or index type (indices); else nothing is written."""
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
    if first.format == "text":  # K is not recorded: the lines are joined as they are
        with open_output(target) as f:
            for source in sources:
                data = Path(source).read_bytes()
                f.write(data + b"\n" if data and not data.endswith(b"\n") else data)
        return joined
    classes = first.classes or (256 if indices.dtype == np.uint8 else MAX_CLASSES)  # indices: as their type
    write_codes(target, indices, classes, first.format, first.fingerprint)
    return joined
