"""The search index file (`dvae index`): a dvae header, the codes, and FAISS's own serialized indexes.

Byte layout (little-endian; also in docs/SEARCH.md):

    offset  size  field
    0       8     magic  89 44 56 49 58 0d 0a 1a  ("\\x89DVIX\\r\\n\\x1a")
    8       2     format version (1)
    10      4     D, variables per code
    14      4     K, classes per variable
    18      8     N, codes
    26      2     S, sections that follow
    28      16    fingerprint of the checkpoint that made the codes (16 hex digits; zeros: unknown)
    44      4     CRC-32 of bytes 0-43
    48            S sections, each: name (16 bytes, ASCII, zero-padded), payload bytes P (u64),
                  CRC-32 of the payload (u32), the payload (P bytes)

Sections: `codes` (always, first): the N codes as `packed` records of docs/CODES.md (13 bytes
for D=30, K=10); then one per FAISS index kind (`fastscan`, `binary`: search.KINDS), the output of
`faiss.serialize_index` (`serialize_index_binary` for `binary`), readable by FAISS alone. dvae
reads the codes and rebuilds each listed index from them (the same index, exactly) rather than
deserializing FAISS's bytes, whose inner sizes FAISS trusts. A truncated, corrupt or inconsistent
file, or one made by another model, is a DVAEError.

Owns: the index file's byte layout. Must not: score or search.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from .codes import pack, unpack
from .codes.files import read_source
from .codes.formats.records import HEX
from .codes.packing import check_classes, group_size, packed_record_bytes
from .errors import DVAEError
from .fileio import open_output
from .terminal import escape
from .search import KINDS, SearchIndex, load_faiss

MAGIC = b"\x89DVIX\r\n\x1a"
VERSION = 1
HEADER = struct.Struct("<8sHIIQH16s")
HEADER_SIZE = HEADER.size + 4  # + CRC-32
SECTION = struct.Struct("<16sQI")
CODES = "codes"


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _section(name: str, payload: bytes) -> bytes:
    return SECTION.pack(name.encode("ascii"), len(payload), _crc(payload)) + payload


def _serialize(kind: str, index) -> bytes:
    faiss = load_faiss()
    serialize = faiss.serialize_index_binary if KINDS[kind].binary else faiss.serialize_index
    return serialize(index).tobytes()


def write_index(path: str | os.PathLike, index: SearchIndex) -> None:
    """Write `index` (its codes and every FAISS index it holds) to `path`, atomically."""
    fingerprint = (index.fingerprint or "").encode("ascii")
    fields = HEADER.pack(MAGIC, VERSION, index.latent_vars, index.classes, len(index),
                         1 + len(index.indexes), fingerprint)
    records = pack(index.codes, index.classes).tobytes() if len(index) else b""
    with open_output(path) as f:
        f.write(fields + struct.pack("<I", _crc(fields)))
        f.write(_section(CODES, records))
        for kind, faiss_index in index.indexes.items():
            f.write(_section(kind, _serialize(kind, faiss_index)))


def is_index_file(head: bytes) -> bool:
    """Whether a file's first bytes are those of a search index file."""
    return head.startswith(MAGIC)


def _check_magic(head: bytes, name: str) -> None:
    if not is_index_file(head[:8]):
        raise DVAEError(f"{name}: not a dvae search index (make one with: dvae index CODES -o FILE)")


def read_index(path: str | os.PathLike, fingerprint: str | None = None) -> SearchIndex:
    """Read a search index file; with `fingerprint`, its codes must come from that checkpoint."""
    name, data = read_source(path, _check_magic)
    data = memoryview(data)
    _check_magic(bytes(data[:8]), name)
    if len(data) < HEADER_SIZE:
        raise DVAEError(f"{name}: truncated index header ({len(data)} of {HEADER_SIZE} bytes)")
    _, version, d, k, n, sections, fp = HEADER.unpack(data[:HEADER.size])
    if version != VERSION:
        newer = " (written by a newer dvae: upgrade)" if version > VERSION else ""
        raise DVAEError(f"{name}: index format version {version}; this dvae reads version {VERSION}{newer}")
    if _crc(data[:HEADER.size]) != int.from_bytes(data[HEADER.size:HEADER_SIZE], "little"):
        raise DVAEError(f"{name}: corrupt index header (checksum mismatch)")
    try:
        check_classes(d, k)  # before D, K or N size anything, or reach FAISS as an argument it refuses
    except DVAEError as e:
        raise DVAEError(f"{name}: corrupt index header ({e})") from None
    if fp.strip(b"\0") and not all(c in HEX.encode() for c in fp):
        raise DVAEError(f"{name}: corrupt index header (the fingerprint is not 16 lowercase hex digits)")
    made_by = fp.decode("ascii") if fp.strip(b"\0") else None
    if fingerprint is not None and made_by not in (None, fingerprint):
        raise DVAEError(f"{name}: indexes codes of another model (fingerprint {made_by}; the checkpoint has "
                        f"{fingerprint}): use the checkpoint that made it, or rebuild it with dvae index")
    payloads: dict[str, memoryview] = {}
    offset = HEADER_SIZE
    for _ in range(sections):
        if offset + SECTION.size > len(data):
            raise DVAEError(f"{name}: truncated index file (a section header is cut off at byte {offset})")
        raw_name, size, crc = SECTION.unpack(data[offset:offset + SECTION.size])
        section = escape(raw_name.rstrip(b"\0").decode("ascii", "backslashreplace"))
        start = offset + SECTION.size
        if start + size > len(data):
            raise DVAEError(f"{name}: truncated index file (section '{section}' needs {size} bytes, "
                            f"{len(data) - start} are left)")
        payload = data[start:start + size]
        if _crc(payload) != crc:
            raise DVAEError(f"{name}: corrupt index file (checksum mismatch in section '{section}')")
        if section != CODES and section not in KINDS or section in payloads:
            raise DVAEError(f"{name}: unexpected section '{section}' (written by a newer dvae?)")
        payloads[section] = payload
        offset = start + size
    if offset != len(data):
        raise DVAEError(f"{name}: {len(data) - offset} bytes after the last section: not a valid index file")
    if CODES not in payloads:
        raise DVAEError(f"{name}: corrupt index file (no codes section)")
    size = packed_record_bytes(d, k, group_size(d, k))
    if len(payloads[CODES]) != n * size:
        raise DVAEError(f"{name}: corrupt codes section ({len(payloads[CODES]):,} bytes; the header says {n:,} "
                        f"codes of {size} bytes)")
    try:
        records = np.frombuffer(payloads[CODES], np.uint8).reshape(n, size)
        codes = unpack(records, d, k) if n else np.zeros((0, d), np.uint8)
    except (ValueError, DVAEError) as e:
        raise DVAEError(f"{name}: corrupt codes section ({e})") from None
    index = SearchIndex(codes, k, made_by)
    for kind in [s for s in payloads if s != CODES]:
        # rebuilt from the checked codes, not deserialized: FAISS trusts the sizes inside its own bytes,
        # so a crafted section could make it allocate without bound; the build is exact and fast
        if KINDS[kind].supports(d, k):
            index.indexes[kind] = KINDS[kind].build(index.codes, k)
    return index
