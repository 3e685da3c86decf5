"""`indices`: a NumPy .npy array (N, D) of uint8 (K <= 256) or uint16; never unpickled.

Owns: this format's bytes. Must not: be listed anywhere but the registry.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from ...errors import DVAEError
from ...inputs import NPY_ERRORS
from ..packing import MAX_LATENT_VARS, index_dtype
from .base import CodeFormat, Codes, FormatWriter, Shard


class IndicesWriter(FormatWriter):
    """With the count known the .npy header goes first; else the codes wait for `close` (D bytes an image)."""

    def __init__(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None):
        self.file, self.d, self.dtype, self.count = file, latent_vars, index_dtype(classes), count
        self.held: list[np.ndarray] = []
        if count is not None:
            self._header(count)

    def _header(self, count: int) -> None:
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (count, self.d)})

    def write(self, codes: np.ndarray) -> None:
        if self.count is None:
            self.held.append(codes.astype(self.dtype))
        else:
            self.file.write(codes.astype(self.dtype).tobytes())

    def close(self, written: int) -> None:
        if self.count is None:
            self._header(written)
            for codes in self.held:
                self.file.write(codes.tobytes())


class Indices(CodeFormat):
    name = "indices"
    summary = ".npy of the (N, D) indices"
    suffixes = (".npy",)

    def sniff(self, data: bytes) -> bool:
        return data.startswith(np.lib.format.MAGIC_PREFIX)

    def writer(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None,
               fingerprint: str | None, shard: Shard | None) -> FormatWriter:
        return IndicesWriter(file, latent_vars, classes, count)

    def read(self, data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
        _check_npy_header(data, name)
        try:
            indices = np.load(io.BytesIO(data), allow_pickle=False)
        except NPY_ERRORS as e:
            raise DVAEError(f"{name}: not a valid .npy file of indices ({e})") from None
        if indices.ndim != 2 or indices.dtype.kind not in "iu":
            raise DVAEError(f"{name}: indices must be an (N, D) integer array, got {indices.dtype} {indices.shape}")
        if indices.size and indices.min() < 0:
            raise DVAEError(f"{name}: negative class index {indices.min()}")
        return Codes(indices, self.name, None, None)


def _check_npy_header(data: bytes, name: str) -> None:
    """The header's shape and type against the bytes that follow it, before NumPy allocates the
    array it announces (np.load of a stream allocates first, then reads)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    except NPY_ERRORS as e:
        raise DVAEError(f"{name}: not a valid .npy file of indices ({e})") from None
    if dtype.hasobject:
        raise DVAEError(f"{name}: not a valid .npy file of indices (it holds Python objects, never unpickled)")
    if len(shape) != 2 or dtype.kind not in "iu":
        raise DVAEError(f"{name}: indices must be an (N, D) integer array, got {dtype} {shape}")
    if shape[1] > MAX_LATENT_VARS:
        raise DVAEError(f"{name}: indices of D={shape[1]:,} variables; codes have at most D={MAX_LATENT_VARS}")
    expected, found = shape[0] * shape[1] * dtype.itemsize, len(data) - stream.tell()
    if found != expected:
        raise DVAEError(f"{name}: the .npy header says {shape[0]:,} x {shape[1]:,} {dtype} ({expected:,} bytes), "
                        f"the file holds {found:,} bytes of data")
