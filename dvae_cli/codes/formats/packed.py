"""`packed`: the header, then one mixed-radix record per image (13 bytes for D=30, K=10).

Owns: this format's records. Must not: be listed anywhere but the registry.
"""

from __future__ import annotations

import numpy as np

from ..packing import group_size, max_group, pack, packed_record_bytes, unpack
from .records import RecordFormat


class Packed(RecordFormat):
    name = "packed"
    summary = "header + 13 bytes an image for D=30, K=10"
    packing = 1

    def group(self, latent_vars: int, classes: int) -> int:
        return group_size(latent_vars, classes)

    def valid_group(self, latent_vars: int, classes: int, group: int) -> bool:
        return 1 <= group <= min(latent_vars, max_group(classes))  # K**g <= 2**63, no huge power

    def record_bytes(self, latent_vars: int, classes: int, group: int = 0) -> int:
        return packed_record_bytes(latent_vars, classes, group)

    def pack(self, codes: np.ndarray, classes: int, group: int) -> np.ndarray:
        return pack(codes, classes, group)

    def unpack(self, records: np.ndarray, latent_vars: int, classes: int, group: int) -> np.ndarray:
        return unpack(records, latent_vars, classes, group)
