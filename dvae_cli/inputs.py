"""Images to encode: a .npy array, an IDX file, a PNG or a folder of PNGs, or a .npy on stdin.

Every source is checked against the image size of the model's data set (DataConfig: shape, dtype,
range, NaN) and turned into the targets the model learned, exactly as in training (threshold: uint8
x/255 >= 0.5, float x >= 0.5, bool as is; none: grey values; dynamic: its fixed evaluation draw). `.npy` files and stdin are read in chunks,
never memory-mapped or loaded whole, so resident memory stays bounded for any N; nothing
is ever unpickled.

Owns: reading and checking images to encode. Must not: run a model or know code formats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

import numpy as np

from . import fileio
from .data import DEFAULT_DATA, DataConfig, read_idx, targets
from .errors import DVAEError

if TYPE_CHECKING:
    import torch

# what numpy's .npy header parser raises on bad bytes (it tokenizes and literal-evals the header)
NPY_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, EOFError, OSError)

NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHUNK = 8192  # images per chunk: big enough for fast matrix products, small enough for < 1 GB resident
READ_BLOCK = 1 << 20  # bytes read at a time
IDENTITY_IMAGES = 1024  # the first images of an input that its identity hashes (with its image count)


@dataclass
class ImageSource:
    """An opened, checked image source: `len()` images of `data`'s size, yielded as its targets by `chunks()`."""

    name: str
    count: int
    raw_chunks: Callable[[int], Iterator[np.ndarray]]  # arrays (n, height, width) or (n, pixels) as stored
    data: DataConfig = DEFAULT_DATA

    def __len__(self) -> int:
        return self.count

    def chunks(self, size: int = CHUNK) -> Iterator[torch.Tensor]:
        """The images as float32 (n, pixels) targets, at most `size` per chunk."""
        first = 0
        for raw in self.raw_chunks(size):
            yield binarize_array(raw, self.name, first, self.data)
            first += len(raw)


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise DVAEError(f"{name}: object arrays are not accepted (dvae never unpickles); save a numeric array")
    if not (dtype == np.uint8 or dtype.kind in "bf"):
        hint = " (convert with .astype(np.uint8) if the values are 0-255)" if dtype.kind in "iu" else ""
        raise DVAEError(f"{name}: images of dtype {dtype} are not accepted; use uint8 0-255, "
                        f"float in [0, 1] or bool{hint}")


def is_image_shape(shape: tuple[int, ...], data: DataConfig = DEFAULT_DATA) -> bool:
    """Whether an array of `shape` holds images of `data`'s size: (N, height, width) or (N, pixels)."""
    return len(shape) == 3 and tuple(shape[1:]) == data.shape or len(shape) == 2 and shape[1] == data.pixels


def _check_shape(shape: tuple[int, ...], name: str, data: DataConfig) -> None:
    if not is_image_shape(shape, data):
        raise DVAEError(f"{name}: images must have shape (N, {data.height}, {data.width}) or (N, {data.pixels}) "
                        f"(the model learned {data.label}); got {shape}")


def binarize_array(array: np.ndarray, name: str = "images", first: int = 0,
                   data: DataConfig = DEFAULT_DATA) -> torch.Tensor:
    """Check an image array (uint8 0-255, float in [0, 1] or bool; (N, height, width) or (N, pixels))
    and make it the targets of `data` as in training: float32 (N, pixels). `first` numbers the images
    in errors."""
    import torch  # here, not at the top: opening and checking sources needs no torch

    array = np.asarray(array)
    _check_dtype(array.dtype, name)
    _check_shape(array.shape, name, data)
    flat = array.reshape(len(array), data.pixels)
    if array.dtype.kind == "f":
        bad = ~((flat >= 0) & (flat <= 1))  # NaN fails both comparisons
        if bad.any():
            row = int(bad.any(axis=1).argmax())
            value = flat[row][bad[row]][0]
            raise DVAEError(f"{name}: image {first + row} has the value {value}; float images must lie in [0, 1]")
        if data.binarize == "threshold":
            return torch.from_numpy((flat >= 0.5).astype(np.float32))
        flat = np.rint(flat * 255).astype(np.uint8)  # the grey levels a uint8 image of it has
    elif array.dtype != np.uint8:
        return torch.from_numpy(flat.astype(np.float32))  # bool: already 0/1
    return targets(flat, data)  # exactly the training targets


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream; read in blocks, so that memory grows
    with what is there, never reserved for what a header claims."""
    parts, left = [], size
    while left:
        part = stream.read(min(left, READ_BLOCK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _npy_header(stream: BinaryIO, name: str, data: DataConfig) -> tuple[tuple[int, ...], bool, np.dtype]:
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
    _check_shape(shape, name, data)
    return shape, fortran, dtype


def _npy_rows(stream: BinaryIO, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, name: str,
              size: int) -> Iterator[np.ndarray]:
    """The array's rows, `size` at a time, read from just after the header."""
    row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
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


def _npy_file(path: Path, data: DataConfig) -> ImageSource:
    with path.open("rb") as f:
        shape, fortran, dtype = _npy_header(f, str(path), data)
        offset = f.tell()

    def raw_chunks(size: int) -> Iterator[np.ndarray]:
        with path.open("rb") as f:
            f.seek(offset)
            yield from _npy_rows(f, shape, fortran, dtype, str(path), size)

    return ImageSource(str(path), shape[0], raw_chunks, data)


class _Replay(io.RawIOBase):
    """A stream's bytes again: `head` (already read from it), then the rest of the stream."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head, self.stream = memoryview(head), stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            part, self.head = bytes(self.head[:size]), self.head[size:]
            return part
        return self.stream.read(size)


def _npy_stream(stream: BinaryIO, name: str, data: DataConfig) -> ImageSource:
    """A .npy on a stream. Its first images are read up front and kept, so that `identity` can hash
    them before the images are read once from the start."""
    shape, fortran, dtype = _npy_header(stream, name, data)
    if fortran:  # column-major: read whole anyway
        return in_memory(next(_npy_rows(stream, shape, fortran, dtype, name, max(shape[0], 1)),
                              np.zeros(shape, dtype)), name, data)
    head = _read_exact(stream, min(shape[0], IDENTITY_IMAGES) * dtype.itemsize * data.pixels)
    return ImageSource(name, shape[0], lambda size: _npy_rows(_Replay(head, stream), shape, fortran, dtype,
                                                               name, size), data)


def _png(path: Path, data: DataConfig) -> np.ndarray:
    """One grayscale PNG of the data set's size as uint8 (height, width)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DVAEError(f"{path}: not a PNG file ({image.format})")
            if image.mode not in ("L", "1"):
                raise DVAEError(f"{path}: PNG mode {image.mode}; images must be 8-bit grayscale (mode L)")
            if image.size != (data.width, data.height):
                raise DVAEError(f"{path}: image is {image.size[0]}x{image.size[1]} (width x height), expected "
                                f"{data.width}x{data.height} (the model learned {data.label})")
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise DVAEError(f"{path}: the PNG claims more pixels than dvae will decode (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DVAEError(f"{path}: not a readable PNG file ({e})") from None


def _png_files(paths: list[Path], name: str, data: DataConfig) -> ImageSource:
    def raw_chunks(size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(paths), size):
            yield np.stack([_png(p, data) for p in paths[start:start + size]])

    return ImageSource(name, len(paths), raw_chunks, data)


def in_memory(array: np.ndarray, name: str = "images", data: DataConfig = DEFAULT_DATA) -> ImageSource:
    """An image source over an array already in memory."""
    return ImageSource(name, len(array), lambda size: (array[i:i + size] for i in range(0, len(array), size)), data)


def open_images(source: str | Path, stdin: BinaryIO | None = None, data: DataConfig = DEFAULT_DATA) -> ImageSource:
    """Open and check an image source of `data`'s image size: a .npy file, an IDX file (gzip or raw), a
    PNG, a folder of PNGs (sorted by name), or "-" for a .npy stream on `stdin` (default: the process's stdin)."""
    if str(source) == "-":
        return _npy_stream(stdin or fileio.stdin(), "stdin", data)
    path = Path(source)
    if path.is_dir():
        pngs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not pngs:
            raise DVAEError(f"{path}: folder without .png files")
        return _png_files(pngs, str(path), data)
    try:
        with path.open("rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise DVAEError(f"{path}: cannot read it ({e.strerror})") from None
    if magic.startswith(NPY_MAGIC):
        return _npy_file(path, data)
    if magic == PNG_MAGIC:
        return _png_files([path], str(path), data)
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"\x00\x00\x08":
        images = read_idx(path, kind="images")
        _check_shape(images.shape, str(path), data)
        return in_memory(images, str(path), data)
    raise DVAEError(f"{path}: not an image file dvae reads: expected a .npy array, an IDX file "
                    f"(gzip or raw), a PNG or a folder of PNGs")


def read_images(source: str | Path, stdin: BinaryIO | None = None, data: DataConfig = DEFAULT_DATA) -> torch.Tensor:
    """All images of a source (see `open_images`) as one float32 (N, pixels) tensor of `data`'s targets."""
    import torch

    return torch.cat([torch.zeros(0, data.pixels), *open_images(source, stdin, data).chunks()])


def identity(images: ImageSource) -> str:
    """The identity of an input that codes files record (docs/CODES.md): the first 16 hex digits of
    the SHA-256 of its image count N (uint64, little-endian) followed by its first min(N, 1024)
    images thresholded at 0.5 (whatever the model's binarization), one byte of 0 or 1 a pixel, row by
    row. Shards of one input agree on it whatever container (.npy, IDX, PNGs, stdin) or
    path the images came in."""
    digest = hashlib.sha256(len(images).to_bytes(8, "little"))
    if len(images):
        with contextlib.closing(images.raw_chunks(IDENTITY_IMAGES)) as chunks:
            first = next(chunks)[:IDENTITY_IMAGES]
        thresholded = dataclasses.replace(images.data, binarize="threshold")
        digest.update(binarize_array(first, images.name, data=thresholded).numpy().astype(np.uint8).tobytes())
    return digest.hexdigest()[:16]
