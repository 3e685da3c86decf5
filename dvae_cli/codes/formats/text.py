"""`text`: one line per image, the D indices as digits (K <= 10) or as zero-padded numbers
separated by spaces; K is not recorded, so readers are told it or guess it from the first line.
Reading is lenient as docs/CODES.md says: CRLF line ends, whitespace around a line, blank lines at
the end, numbers separated by any whitespace; errors name the line and D.

Owns: this format's bytes. Must not: be listed anywhere but the registry.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from ...errors import DVAEError
from ...terminal import show_bytes
from ..packing import MAX_LATENT_VARS
from .base import CodeFormat, Codes, FormatWriter, Shard

NUMBER_DIGITS = 9  # a class index has at most 4 digits (K <= 4096); longer numbers are refused unread


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
        start = data[:64].lstrip()[:1]
        return start.isdigit() if start else not data.strip()

    def writer(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None,
               fingerprint: str | None, shard: Shard | None) -> FormatWriter:
        return TextWriter(file, classes)

    def read(self, data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
        lines = data.split(b"\n")
        while lines and not lines[-1].strip():  # the last line's end, and blank lines after it
            lines.pop()
        if not lines:
            return Codes(np.zeros((0, latent_vars or 0), np.uint8), self.name, None, None)
        first = lines[0].strip()
        numbers = classes is not None and classes > 10 or any(c in first for c in b" \t\v\f\r")
        indices = _numbers(lines, name, latent_vars) if numbers else _digits(data, lines, name, latent_vars)
        return Codes(indices, self.name, None, None)


def _check_width(d: int, name: str, what: str) -> None:
    """The first line's D within dvae's ceiling, before it sizes anything."""
    if d > MAX_LATENT_VARS:
        raise DVAEError(f"{name}: line 1 has {d:,} {what}; codes have at most D={MAX_LATENT_VARS} variables")


def _digits(data: bytes, lines: list[bytes], name: str, latent_vars: int | None) -> np.ndarray:
    """Lines of D digits each; whitespace around a line (a CRLF ending too) is ignored."""
    if any(c in data for c in b" \t\v\f\r"):  # the rare layout: strip each line, then read as usual
        lines = [line.strip() for line in lines]
    d = latent_vars if latent_vars is not None else len(lines[0])
    _check_width(d, name, "digits")
    lengths = np.fromiter(map(len, lines), np.int64, len(lines))
    if (lengths != d).any():
        row = int((lengths != d).argmax())
        raise DVAEError(f"{name}: line {row + 1}: expected D={d} digits, found {lengths[row]} characters")
    chars = np.frombuffer(b"".join(lines), np.uint8).reshape(len(lines), d)
    bad = ((chars - np.uint8(ord("0"))) > 9).any(axis=1)
    if bad.any():
        row = int(bad.argmax())
        raise DVAEError(f"{name}: line {row + 1}: expected D={d} digits 0-9, found '{show_bytes(lines[row])}'")
    return chars - np.uint8(ord("0"))


def _numbers(lines: list[bytes], name: str, latent_vars: int | None) -> np.ndarray:
    """Lines of D decimal numbers separated by any whitespace."""
    d = latent_vars if latent_vars is not None else len(lines[0].split())
    _check_width(d, name, "numbers")
    rows = [line.split() for line in lines]
    for number, row in enumerate(rows, 1):
        if len(row) != d or not all(token.isdigit() for token in row):
            what = f"{len(row)} numbers" if len(row) != d else f"'{show_bytes(b' '.join(row))}'"
            raise DVAEError(f"{name}: line {number}: expected D={d} whole numbers, found {what}")
        if any(len(token) > NUMBER_DIGITS for token in row):
            raise DVAEError(f"{name}: line {number}: a class index is far too large")
    try:
        indices = np.array([[int(t) for t in row] for row in rows], np.int64).reshape(len(rows), d)
    except OverflowError:
        raise DVAEError(f"{name}: a class index is far too large") from None
    return indices
