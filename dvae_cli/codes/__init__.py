"""Codes: the D class indices (one per categorical variable) that a model gives an image, and the
files that hold them. The byte layout of every format is specified in docs/CODES.md.

    from dvae_cli.checkpoint import load_checkpoint
    from dvae_cli.codes import encode, decode, write_codes, read_codes
    from dvae_cli.inputs import read_images

    ckpt = load_checkpoint("runs/dtp-20250101-120000")
    codes = encode(ckpt.model, read_images("imgs.npy"))       # (N, D) uint8 class indices
    write_codes("codes.bin", codes, classes=10, fingerprint=ckpt.fingerprint)
    back = read_codes("codes.bin")                            # Codes(indices, format, classes, fingerprint)
    means = decode(ckpt.model, back.indices)                  # (N, height, width) float32 Bernoulli means

The package: `packing.py` (the arithmetic of records), `formats/` (the registry of file formats:
packed, onehot, indices, text; one unit each), `files.py` (writing, reading, joining through the
registry), `model_side.py` (encoding and decoding with a model; imports torch). This module only
re-exports; the model side is imported when first used, so reading and writing codes needs no torch.

Owns: the public names of codes. Must not: hold logic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .files import CodeWriter, join_codes, read_codes, write_codes
from .formats import FORMATS, HEADER_SIZE, Codes, Shard, format_for, record_bytes
from .packing import (check_codes, group_size, index_dtype, pack, pack_onehot, record_bits, unpack,
                      unpack_onehot)

if TYPE_CHECKING:
    from .model_side import decode, decode_chunks, encode, encode_block, encode_shared

MODEL_SIDE = ("decode", "decode_chunks", "encode", "encode_block", "encode_shared")


def __getattr__(name: str):
    if name in MODEL_SIDE:
        from . import model_side

        return getattr(model_side, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMATS", "HEADER_SIZE", "CodeWriter", "Codes", "Shard", "check_codes", "decode", "decode_chunks",
           "encode", "encode_block", "format_for", "group_size", "index_dtype", "join_codes",
           "pack", "pack_onehot", "read_codes", "record_bits", "record_bytes", "unpack",
           "unpack_onehot", "write_codes"]
