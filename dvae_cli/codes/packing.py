"""Codes as numbers: the checks on (N, D) class indices and the two bit layouts of records,
mixed radix (`pack`) and one-hot bits (`pack_onehot`); docs/CODES.md specifies both.

Owns: the arithmetic of records. Must not: know about files, headers or models (formats/ and
model_side.py do).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DVAEError

MAX_CLASSES = 4096
# Sane ceilings for anything a header or a line of text says (the thesis's model: D=30, K=10). A model
# within model.py's parameter ceiling with any useful hidden layer stays far below them; they keep a
# crafted header from driving an allocation, a loop or a FAISS index of billions of variables.
MAX_LATENT_VARS = 1 << 16
MAX_CODE_BITS = 1 << 24  # D*K: the one-hot bits of one code (2 MiB), FAISS's dimension for it
GROUP_LIMIT = 2**63  # K**g of a packed group fits a signed 64-bit integer


def _bits(classes: int, digits: int) -> int:
    """Bits for a group of `digits` base-K digits: those of K**digits - 1 (0 bits for 0 digits)."""
    return (classes**digits - 1).bit_length()


def record_bits(latent_vars: int, classes: int, group: int) -> int:
    """Bits of a packed record: D // g full groups and one group of the D % g remaining digits."""
    return latent_vars // group * _bits(classes, group) + _bits(classes, latent_vars % group)


def max_group(classes: int) -> int:
    """The largest g with K**g <= 2**63 (63 for K=2, 5 for K=4096): at most 63 steps, whatever D."""
    g = 1
    while classes ** (g + 1) <= GROUP_LIMIT:
        g += 1
    return g


def group_size(latent_vars: int, classes: int) -> int:
    """The digits per group g (g <= D, K**g <= 2**63) that make the smallest record; the smallest g on
    ties. At most 63 candidates, so a header's D, however large, costs no time here."""
    check_classes(latent_vars, classes)
    sizes = range(1, min(latent_vars, max_group(classes)) + 1)
    return min(sizes, key=lambda g: (record_bits(latent_vars, classes, g), g))


def packed_record_bytes(latent_vars: int, classes: int, group: int) -> int:
    """Bytes of one mixed-radix record: its bits rounded up to whole bytes."""
    return math.ceil(record_bits(latent_vars, classes, group) / 8)


def onehot_record_bytes(latent_vars: int, classes: int) -> int:
    """Bytes of one one-hot record: D*K bits rounded up to whole bytes."""
    return math.ceil(latent_vars * classes / 8)


def index_dtype(classes: int) -> np.dtype:
    """The smallest unsigned type for class indices: uint8 for K <= 256, else uint16."""
    return np.dtype(np.uint8 if classes <= 256 else np.uint16)


def check_classes(latent_vars: int, classes: int) -> None:
    """D and K within dvae's ceilings (1 <= D <= 65536, 2 <= K <= 4096, D*K <= 2**24), or a clear error."""
    if not 1 <= latent_vars <= MAX_LATENT_VARS or not 2 <= classes <= MAX_CLASSES:
        raise DVAEError(f"codes need 1 <= D <= {MAX_LATENT_VARS} and 2 <= K <= {MAX_CLASSES}; "
                        f"got D={latent_vars}, K={classes}")
    if latent_vars * classes > MAX_CODE_BITS:
        raise DVAEError(f"codes of D={latent_vars}, K={classes} have {latent_vars * classes:,} one-hot bits, "
                        f"over dvae's ceiling of {MAX_CODE_BITS:,}")


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
    check_classes(d, classes)
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
    check_classes(latent_vars, classes)
    g = group or group_size(latent_vars, classes)
    size = packed_record_bytes(latent_vars, classes, g)
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
    check_classes(latent_vars, classes)
    size = onehot_record_bytes(latent_vars, classes)
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
