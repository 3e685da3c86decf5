"""`text`: one line per image, the D indices as digits (K <= 10) or as zero-padded numbers
separated by spaces; K is not recorded, so readers are told it or guess it from the first line.

Owns: this format's bytes. Must not: be listed anywhere but the registry.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from ...errors import DVAEError
from .base import CodeFormat, Codes, FormatWriter


def text_lines(codes: np.ndarray, classes: int) -> bytes:
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


class TextWriter(FormatWriter):
    def __init__(self, file: BinaryIO, classes: int):
        self.file, self.classes = file, classes

    def write(self, codes: np.ndarray) -> None:
        self.file.write(text_lines(codes, self.classes))


class Text(CodeFormat):
    name = "text"
    summary = "a line an image"
    suffixes = (".txt",)
    binary = False
    joins_verbatim = True  # the digits-or-numbers layout depends on K, which is not recorded

    def sniff(self, data: bytes) -> bool:
        return not data or data[:1].isdigit()

    def writer(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None,
               fingerprint: str | None) -> FormatWriter:
        return TextWriter(file, classes)

    def read(self, data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
        if not data:
            return Codes(np.zeros((0, latent_vars or 0), np.uint8), self.name, None, None)
        first_line = data.split(b"\n", 1)[0]
        if (classes > 10) if classes is not None else any(c in first_line for c in b" \t"):
            try:
                indices = np.loadtxt(io.BytesIO(data), dtype=np.int64, ndmin=2)
            except ValueError as e:
                raise DVAEError(f"{name}: not valid text codes ({e})") from None
            if indices.min() < 0:
                raise DVAEError(f"{name}: negative class index {indices.min()}")
            return Codes(indices, self.name, None, None)
        if not data.endswith(b"\n"):
            data += b"\n"
        d = len(first_line)
        if len(data) % (d + 1):
            raise DVAEError(f"{name}: text codes lines differ in length (the first has {d} digits)")
        lines = np.frombuffer(data, np.uint8).reshape(-1, d + 1)
        bad = (lines[:, -1] != ord("\n")) | ((lines[:, :-1] - ord("0")) > 9).any(axis=1)
        if bad.any():
            raise DVAEError(f"{name}: line {int(bad.argmax()) + 1}: expected {d} digits 0-9 per line")
        return Codes(lines[:, :-1] - np.uint8(ord("0")), self.name, None, None)
