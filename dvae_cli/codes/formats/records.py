"""The header that `packed` and `onehot` files share (docs/CODES.md), and `RecordFormat`, the base
of formats whose body is fixed-width records after that header.

Owns: the magic, the header layouts (versions 1 and 2), their CRC and version checks, record
reading and writing.
Must not: know how a record packs a code (each record format's own module does).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, ClassVar

import numpy as np

from ...errors import DVAEError
from ..packing import check_classes, index_dtype
from .base import CodeFormat, Codes, FormatWriter, Shard

MAGIC = b"\x89DVAE\r\n\x1a"
VERSION = 2  # version 1 (no shard fields, 56 bytes) is still read
HEADERS = {  # version -> the fields before the CRC
    1: struct.Struct("<8sHHIIIIQ16s"),  # magic, version, packing, D, K, group, record bytes, N, fingerprint
    2: struct.Struct("<8sHHIIIIQ16sIIQ16s"),  # ... then shard index, shard count, input images, input identity
}
HEADER_SIZE = HEADERS[VERSION].size + 4  # + CRC-32 of the fields
UNKNOWN_COUNT = 2**64 - 1  # N when the writer did not know it: then N = body bytes / record bytes
READ_CHUNK = 8192  # records unpacked at a time (their error messages count from the chunk's start)
HEX = "0123456789abcdef"


@dataclass
class Header:
    packing: int
    latent_vars: int
    classes: int
    group: int
    record_bytes: int
    count: int | None  # None: not known when written
    fingerprint: str | None
    shard: Shard | None = None  # None: not recorded (shard count 0, or a version-1 file)
    size: int = HEADER_SIZE  # bytes of the header, CRC included (56 in version 1)


def _hex16(value: str | None, what: str) -> bytes:
    """16 lowercase hex digits as ASCII, or 16 zero bytes for None."""
    if value is None:
        return b""
    if len(value) != 16 or not all(c in HEX for c in value):
        raise DVAEError(f"a{what} is 16 lowercase hex digits, not {value!r}")
    return value.encode("ascii")


def _text16(field: bytes, name: str, what: str) -> str | None:
    """A header's 16 hex digits (None for 16 zero bytes); anything else is a damaged header."""
    if not field.strip(b"\0"):
        return None
    if len(field) != 16 or not all(c in HEX.encode() for c in field):
        raise DVAEError(f"{name}: corrupt codes header (the {what} is not 16 lowercase hex digits)")
    return field.decode("ascii")


def header_bytes(packing: int, header: Header) -> bytes:
    """The header bytes of the current version, CRC included."""
    shard = header.shard
    if shard is not None and not (0 <= shard.index < shard.count and shard.images >= 0):
        raise DVAEError(f"a shard index lies in [0, count) and an input has images: not {shard}")
    fields = HEADERS[VERSION].pack(
        MAGIC, VERSION, packing, header.latent_vars, header.classes, header.group, header.record_bytes,
        UNKNOWN_COUNT if header.count is None else header.count, _hex16(header.fingerprint, " fingerprint"),
        shard.index if shard else 0, shard.count if shard else 0, shard.images if shard else 0,
        _hex16(shard.identity if shard else None, "n input identity"))
    return fields + struct.pack("<I", zlib.crc32(fields))


def packing_of(data: bytes) -> int | None:
    """The packing field of a file that starts with the magic (None for any other file)."""
    if not data.startswith(MAGIC) or len(data) < 12:
        return None
    return int.from_bytes(data[10:12], "little")


def parse_header(data: bytes, name: str) -> Header:
    """The header of a file that starts with the magic, with its version, CRC, D and K checked."""
    if len(data) < 10:
        raise DVAEError(f"{name}: truncated codes header")
    version = int.from_bytes(data[8:10], "little")
    if version not in HEADERS:
        newer = " (written by a newer dvae: upgrade)" if version > VERSION else ""
        raise DVAEError(f"{name}: codes format version {version}; this dvae reads versions "
                        f"{', '.join(map(str, HEADERS))}{newer}")
    layout = HEADERS[version]
    size = layout.size + 4
    if len(data) < size:
        raise DVAEError(f"{name}: truncated codes header ({len(data)} of {size} bytes)")
    fields = data[:layout.size]
    if zlib.crc32(fields) != int.from_bytes(data[layout.size:size], "little"):
        raise DVAEError(f"{name}: corrupt codes header (checksum mismatch)")
    _, _, packing, d, k, group, record, count, fp, *rest = layout.unpack(fields)
    try:
        check_classes(d, k)  # before D or K size anything
    except DVAEError as e:
        raise DVAEError(f"{name}: corrupt codes header ({e})") from None
    shard = None
    if rest and rest[1]:  # shard count 0: not recorded
        index, parts, images, identity = rest
        if index >= parts:
            raise DVAEError(f"{name}: inconsistent codes header (shard {index}/{parts})")
        identity = _text16(identity, name, "input identity")
        if identity is None:
            raise DVAEError(f"{name}: inconsistent codes header (shard {index}/{parts} of no input identity)")
        shard = Shard(index, parts, images, identity)
    return Header(packing, d, k, group, record, None if count == UNKNOWN_COUNT else count,
                  _text16(fp, name, "fingerprint"), shard, size)


class RecordWriter(FormatWriter):
    def __init__(self, format: RecordFormat, file: BinaryIO, classes: int, group: int):
        self.format, self.file, self.classes, self.group = format, file, classes, group

    def write(self, codes: np.ndarray) -> None:
        self.file.write(self.format.pack(codes, self.classes, self.group).tobytes())


class RecordFormat(CodeFormat):
    """The header, then one fixed-width record per image. Subclasses set `packing` (the header's
    field) and say how a record packs a code: `group`, `valid_group`, `record_bytes`, `pack`, `unpack`."""

    packing: ClassVar[int]
    records_classes = True

    def group(self, latent_vars: int, classes: int) -> int:
        """The header's group field for new files."""
        raise NotImplementedError

    def valid_group(self, latent_vars: int, classes: int, group: int) -> bool:
        raise NotImplementedError

    def record_bytes(self, latent_vars: int, classes: int, group: int = 0) -> int:
        raise NotImplementedError

    def pack(self, codes: np.ndarray, classes: int, group: int) -> np.ndarray:
        """(n, D) class indices -> (n, R) uint8 records."""
        raise NotImplementedError

    def unpack(self, records: np.ndarray, latent_vars: int, classes: int, group: int) -> np.ndarray:
        """(n, R) uint8 records -> (n, D) class indices; corrupt records are an error."""
        raise NotImplementedError

    def sniff(self, data: bytes) -> bool:
        return packing_of(data) == self.packing

    def promised_bytes(self, head: bytes, name: str) -> int | None:
        """The header's size plus N records (None when the header says "as many as the file holds")."""
        header = parse_header(head, name)
        return None if header.count is None else header.size + header.count * header.record_bytes

    def writer(self, file: BinaryIO, latent_vars: int, classes: int, count: int | None,
               fingerprint: str | None, shard: Shard | None) -> FormatWriter:
        group = self.group(latent_vars, classes)
        size = self.record_bytes(latent_vars, classes, group)
        file.write(header_bytes(self.packing, Header(self.packing, latent_vars, classes, group, size, count,
                                                     fingerprint, shard)))
        return RecordWriter(self, file, classes, group)

    def read(self, data: bytes, name: str, latent_vars: int | None, classes: int | None) -> Codes:
        header = parse_header(data, name)
        d, k, group, size = header.latent_vars, header.classes, header.group, header.record_bytes
        if not self.valid_group(d, k, group) or size != self.record_bytes(d, k, group):
            raise DVAEError(f"{name}: inconsistent codes header (group {group}, record size {size})")
        body, count = len(data) - header.size, header.count
        if count is None:
            if body % size:
                raise DVAEError(f"{name}: truncated: {body} bytes of records is not a whole number of {size}-byte records")
            count = body // size
        elif body != count * size:
            raise DVAEError(f"{name}: record count mismatch: the header says {count} records ({count * size} bytes), "
                            f"the file has {body} bytes of records")
        records = np.frombuffer(data, np.uint8, offset=header.size).reshape(count, size)
        indices = np.empty((count, d), index_dtype(k))
        for start in range(0, count, READ_CHUNK):
            try:
                indices[start:start + READ_CHUNK] = self.unpack(records[start:start + READ_CHUNK], d, k, group)
            except DVAEError as e:
                raise DVAEError(f"{name}: {e} (record numbers count from {start})") from None
        return Codes(indices, self.name, k, header.fingerprint, header.shard)
