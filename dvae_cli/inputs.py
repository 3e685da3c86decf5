"""Images to encode: a .npy array, an MNIST IDX file, a PNG or a folder of PNGs, or a .npy on stdin.

Every source is checked (shape, dtype, range, NaN) and binarized exactly as in training
(uint8 x/255 >= 0.5, float x >= 0.5, bool as is). `.npy` files and stdin are read in chunks,
never memory-mapped or loaded whole, so resident memory stays bounded for any N; nothing
is ever unpickled.

Owns: reading and checking images to encode. Must not: run a model or know code formats.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

import numpy as np

from .data import binarize, read_idx
from .errors import DVAEError

if TYPE_CHECKING:
    import torch

# what numpy's .npy header parser raises on bad bytes (it tokenizes and literal-evals the header)
NPY_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, EOFError, OSError)

SIDE = 28
PIXELS = SIDE * SIDE
NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHUNK = 8192  # images per chunk: big enough for fast matrix products, small enough for < 1 GB resident
IDENTITY_IMAGES = 1024  # the first images of an input that its identity hashes (with its image count)


@dataclass
class ImageSource:
    """An opened, checked image source: `len()` images, yielded binarized by `chunks()`."""

    name: str
    count: int
    raw_chunks: Callable[[int], Iterator[np.ndarray]]  # arrays (n, 28, 28) or (n, 784) as stored

    def __len__(self) -> int:
        return self.count

    def chunks(self, size: int = CHUNK) -> Iterator[torch.Tensor]:
        """The images as float32 (n, 784) tensors of 0/1, at most `size` per chunk."""
        first = 0
        for raw in self.raw_chunks(size):
            yield binarize_array(raw, self.name, first)
            first += len(raw)


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise DVAEError(f"{name}: object arrays are not accepted (dvae never unpickles); save a numeric array")
    if not (dtype == np.uint8 or dtype.kind in "bf"):
        hint = " (convert with .astype(np.uint8) if the values are 0-255)" if dtype.kind in "iu" else ""
        raise DVAEError(f"{name}: images of dtype {dtype} are not accepted; use uint8 0-255, "
                        f"float in [0, 1] or bool{hint}")


def _check_shape(shape: tuple[int, ...], name: str) -> None:
    if not (len(shape) == 3 and shape[1:] == (SIDE, SIDE) or len(shape) == 2 and shape[1] == PIXELS):
        raise DVAEError(f"{name}: images must have shape (N, 28, 28) or (N, 784); got {shape}")


def binarize_array(array: np.ndarray, name: str = "images", first: int = 0) -> torch.Tensor:
    """Check an image array (uint8 0-255, float in [0, 1] or bool; (N, 28, 28) or (N, 784))
    and binarize it as in training: float32 (N, 784) of 0/1. `first` numbers the images in errors."""
    import torch  # here, not at the top: opening and checking sources needs no torch

    array = np.asarray(array)
    _check_dtype(array.dtype, name)
    _check_shape(array.shape, name)
    flat = array.reshape(len(array), PIXELS)
    if array.dtype.kind == "f":
        bad = ~((flat >= 0) & (flat <= 1))  # NaN fails both comparisons
        if bad.any():
            row = int(bad.any(axis=1).argmax())
            value = flat[row][bad[row]][0]
            raise DVAEError(f"{name}: image {first + row} has the value {value}; float images must lie in [0, 1]")
        bits = flat >= 0.5
    elif array.dtype == np.uint8:
        return binarize(flat)  # exactly the training binarization
    else:
        bits = flat
    return torch.from_numpy(bits.astype(np.float32))


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream."""
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _npy_header(stream: BinaryIO, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a .npy header, checked; no unpickling."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise DVAEError(f"{name}: .npy format version {version} is not supported")
    except NPY_ERRORS as e:
        raise DVAEError(f"{name}: not a valid .npy file ({e})") from None
    _check_dtype(dtype, name)
    _check_shape(shape, name)
    return shape, fortran, dtype


def _npy_rows(stream: BinaryIO, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, name: str,
              size: int) -> Iterator[np.ndarray]:
    """The array's rows, `size` at a time, read from just after the header."""
    row_bytes = dtype.itemsize * PIXELS
    if fortran:  # column-major: the rows are interleaved, so this rare case is read whole
        data = _read_exact(stream, shape[0] * row_bytes)
        if len(data) < shape[0] * row_bytes:
            raise DVAEError(f"{name}: truncated .npy file: the header says {shape[0]} images")
        array = np.frombuffer(data, dtype).reshape(shape, order="F")
        for start in range(0, shape[0], size):
            yield array[start:start + size]
        return
    for start in range(0, shape[0], size):
        rows = min(size, shape[0] - start)
        data = _read_exact(stream, rows * row_bytes)
        if len(data) < rows * row_bytes:
            got = start + len(data) // row_bytes
            raise DVAEError(f"{name}: truncated .npy data: the header says {shape[0]} images, "
                            f"the data ends after {got}")
        yield np.frombuffer(data, dtype).reshape(rows, *shape[1:])


def _npy_file(path: Path) -> ImageSource:
    with path.open("rb") as f:
        shape, fortran, dtype = _npy_header(f, str(path))
        offset = f.tell()

    def raw_chunks(size: int) -> Iterator[np.ndarray]:
        with path.open("rb") as f:
            f.seek(offset)
            yield from _npy_rows(f, shape, fortran, dtype, str(path), size)

    return ImageSource(str(path), shape[0], raw_chunks)


class _Replay(io.RawIOBase):
    """A stream's bytes again: `head` (already read from it), then the rest of the stream."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head, self.stream = memoryview(head), stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            part, self.head = bytes(self.head[:size]), self.head[size:]
            return part
        return self.stream.read(size)


def _npy_stream(stream: BinaryIO, name: str) -> ImageSource:
    """A .npy on a stream. Its first images are read up front and kept, so that `identity` can hash
    them before the images are read once from the start."""
    shape, fortran, dtype = _npy_header(stream, name)
    if fortran:  # column-major: read whole anyway
        return in_memory(next(_npy_rows(stream, shape, fortran, dtype, name, max(shape[0], 1)),
                              np.zeros(shape, dtype)), name)
    head = _read_exact(stream, min(shape[0], IDENTITY_IMAGES) * dtype.itemsize * PIXELS)
    return ImageSource(name, shape[0], lambda size: _npy_rows(_Replay(head, stream), shape, fortran, dtype,
                                                               name, size))


def _png(path: Path) -> np.ndarray:
    """One 28x28 grayscale PNG as uint8 (28, 28)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DVAEError(f"{path}: not a PNG file ({image.format})")
            if image.mode not in ("L", "1"):
                raise DVAEError(f"{path}: PNG mode {image.mode}; images must be 8-bit grayscale (mode L)")
            if image.size != (SIDE, SIDE):
                raise DVAEError(f"{path}: image is {image.size[0]}x{image.size[1]}, expected 28x28")
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DVAEError(f"{path}: not a readable PNG file ({e})") from None


def _png_files(paths: list[Path], name: str) -> ImageSource:
    def raw_chunks(size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(paths), size):
            yield np.stack([_png(p) for p in paths[start:start + size]])

    return ImageSource(name, len(paths), raw_chunks)


def in_memory(array: np.ndarray, name: str = "images") -> ImageSource:
    """An image source over an array already in memory."""
    return ImageSource(name, len(array), lambda size: (array[i:i + size] for i in range(0, len(array), size)))


def open_images(source: str | Path, stdin: BinaryIO | None = None) -> ImageSource:
    """Open and check an image source: a .npy file, an MNIST IDX file (gzip or raw), a PNG, a folder
    of PNGs (sorted by name), or "-" for a .npy stream on `stdin` (default: the process's stdin)."""
    if str(source) == "-":
        return _npy_stream(stdin or sys.stdin.buffer, "stdin")
    path = Path(source)
    if path.is_dir():
        pngs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not pngs:
            raise DVAEError(f"{path}: folder without .png files")
        return _png_files(pngs, str(path))
    try:
        with path.open("rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise DVAEError(f"{path}: cannot read it ({e.strerror})") from None
    if magic.startswith(NPY_MAGIC):
        return _npy_file(path)
    if magic == PNG_MAGIC:
        return _png_files([path], str(path))
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"\x00\x00\x08":
        return in_memory(read_idx(path, kind="images"), str(path))
    raise DVAEError(f"{path}: not an image file dvae reads: expected a .npy array, an MNIST IDX file "
                    f"(gzip or raw), a PNG or a folder of PNGs")


def read_images(source: str | Path, stdin: BinaryIO | None = None) -> torch.Tensor:
    """All images of a source (see `open_images`) as one float32 (N, 784) tensor of 0/1."""
    import torch

    return torch.cat([torch.zeros(0, PIXELS), *open_images(source, stdin).chunks()])


def identity(images: ImageSource) -> str:
    """The identity of an input that codes files record (docs/CODES.md): the first 16 hex digits of
    the SHA-256 of its image count N (uint64, little-endian) followed by its first min(N, 1024)
    images binarized as in training, 784 bytes of 0 or 1 each, row by row. Shards of one input
    agree on it whatever container (.npy, IDX, PNGs, stdin) or path the images came in."""
    digest = hashlib.sha256(len(images).to_bytes(8, "little"))
    if len(images):
        with contextlib.closing(images.raw_chunks(IDENTITY_IMAGES)) as chunks:
            first = next(chunks)[:IDENTITY_IMAGES]
        digest.update(binarize_array(first, images.name).numpy().astype(np.uint8).tobytes())
    return digest.hexdigest()[:16]
