"""`onehot`: the header, then the D*K one-hot bits of each image, packed 8 to a byte.

Owns: this format's records. Must not: be listed anywhere but the registry.
"""

from __future__ import annotations

import numpy as np

from ..packing import onehot_record_bytes, pack_onehot, unpack_onehot
from .records import RecordFormat


class OneHot(RecordFormat):
    name = "onehot"
    summary = "header + the D*K one-hot bits an image"
    packing = 2

    def group(self, latent_vars: int, classes: int) -> int:
        return 0

    def valid_group(self, latent_vars: int, classes: int, group: int) -> bool:
        return group == 0

    def record_bytes(self, latent_vars: int, classes: int, group: int = 0) -> int:
        return onehot_record_bytes(latent_vars, classes)

    def pack(self, codes: np.ndarray, classes: int, group: int) -> np.ndarray:
        return pack_onehot(codes, classes)

    def unpack(self, records: np.ndarray, latent_vars: int, classes: int, group: int) -> np.ndarray:
        return unpack_onehot(records, latent_vars, classes)
