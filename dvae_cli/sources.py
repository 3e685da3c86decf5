"""What kind of file an argument is, told by its content: images (`inputs.open_images`), codes in any
format (`codes.read_codes`) or a search index (`search_file.read_index`), opened as such. `dvae search`
and `dvae index` take any of them as a database or a query.

Owns: recognising a file's kind. Must not: encode, search or print.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import fileio
from .codes import read_codes
from .codes.files import read_source
from .data import DataConfig
from .errors import DVAEError
from .inputs import NPY_MAGIC, PNG_MAGIC, ImageSource, is_image_shape, open_images
from .search import SearchIndex
from .search_file import is_index_file, read_index


@dataclass
class Opened:
    """An argument, recognised: exactly one of index, codes, images is set."""

    name: str
    index: Optional[SearchIndex] = None
    codes: Optional[np.ndarray] = None
    classes: Optional[int] = None  # K as the codes file records it
    fingerprint: Optional[str] = None
    images: Optional[ImageSource] = None


def _looks_like_images(head: bytes, stream: io.BufferedIOBase, data: Callable[[], DataConfig]) -> bool:
    """Whether a file's content is images: a PNG, an IDX file, or a .npy of 3 dimensions or of rows of
    the model's pixel count (a 2-D .npy of another width is codes)."""
    if head.startswith(PNG_MAGIC) or head[:2] == b"\x1f\x8b" or head[:3] == b"\x00\x00\x08":
        return True
    if head.startswith(NPY_MAGIC):
        try:
            version = np.lib.format.read_magic(stream)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape = read(stream)[0]
        except ValueError as e:
            raise DVAEError(f"{getattr(stream, 'name', 'stdin')}: not a valid .npy file ({e})") from None
        return len(shape) == 3 or len(shape) == 2 and is_image_shape(shape, data())
    return False


def open_source(source: str, what: str, data: Callable[[], DataConfig]) -> Opened:
    """Recognise an argument (a path, or "-" for stdin, read in blocks up to a ceiling) by its content
    and open it; `data()` gives the image size images must have (called only when it matters, so that
    codes need no checkpoint). `what` names the argument in errors."""
    if source == "-":
        fileio.stdin(f"{what} '-'")  # open, and not a terminal
        stream = io.BytesIO(read_source("-")[1])
        if _looks_like_images(stream.read(8), io.BytesIO(stream.getvalue()), data):
            return Opened("stdin", images=open_images("-", io.BytesIO(stream.getvalue()), data()))
        stream.seek(0)
        codes = read_codes(stream)
        return Opened("stdin", codes=codes.indices, classes=codes.classes, fingerprint=codes.fingerprint)
    path = Path(source)
    if path.is_dir():
        return Opened(source, images=open_images(path, data=data()))
    try:
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(0)
            images = _looks_like_images(head, f, data)
    except OSError as e:
        raise DVAEError(f"{source}: cannot read it ({e.strerror})") from None
    if is_index_file(head):
        return Opened(source, index=read_index(path))
    if images:
        return Opened(source, images=open_images(path, data=data()))
    codes = read_codes(path)
    return Opened(source, codes=codes.indices, classes=codes.classes, fingerprint=codes.fingerprint)
