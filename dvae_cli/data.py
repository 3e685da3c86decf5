"""MNIST from the original IDX files: locating, parsing (with checks), splitting, binarizing."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DVAEError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
VALID_SIZE = 10_000  # the last 10,000 training-file images are the validation split
FILES = {
    "train": "train-images-idx3-ubyte",
    "test": "t10k-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
ENV_DATA_DIR = "DVAE_DATA_DIR"
IDX_DTYPES = {0x08: np.uint8}  # MNIST only uses unsigned bytes
IDX_MAGIC = {"images": 2051, "labels": 2049}


def default_cache_dir() -> Path:
    """The user cache folder: $XDG_CACHE_HOME/dvae/mnist, else ~/.cache/dvae/mnist."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dvae" / "mnist"


def _missing_message(folder: Path, how: str) -> str:
    names = ", ".join(f"{name}.gz" for name in FILES.values())
    return (
        f"MNIST not found in {folder} ({how}).\n"
        f"dvae needs the four original IDX files (gzip or raw): {names}.\n"
        f"Put them in a folder and pass it with --data-dir DIR or the environment variable "
        f"{ENV_DATA_DIR}=DIR; otherwise dvae looks in {default_cache_dir()} and, if they are "
        f"not there, tries to download them (needs internet access)."
    )


def _find_file(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `folder`: raw or .gz, also in the 'train-images.idx3-ubyte' spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _download(folder: Path) -> None:
    """Download the four gzip files into `folder` with torchvision's MNIST mirrors."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    for filename, md5 in MNIST.resources:
        for mirror in MNIST.mirrors:
            try:
                download_url(mirror + filename, root=str(folder), filename=filename, md5=md5)
                break
            except Exception:  # noqa: BLE001 - any network failure: try the next mirror
                continue
        else:
            raise DVAEError(_missing_message(folder, "the download failed: are you offline?"))


def resolve_data_dir(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding MNIST: `data_dir`, else $DVAE_DATA_DIR, else the cache (downloading)."""
    if data_dir is not None:
        folder, how = Path(data_dir), "from --data-dir"
    elif os.environ.get(ENV_DATA_DIR):
        folder, how = Path(os.environ[ENV_DATA_DIR]), f"from ${ENV_DATA_DIR}"
    else:
        folder, how = default_cache_dir(), "the default cache folder"
        if download and any(_find_file(folder, stem) is None for stem in FILES.values()):
            _download(folder)
    missing = [stem for stem in FILES.values() if _find_file(folder, stem) is None]
    if missing:
        raise DVAEError(_missing_message(folder, how))
    return folder


def read_idx(path: str | os.PathLike, kind: str | None = None) -> np.ndarray:
    """Parse an IDX file (gzip or raw) into a uint8 array, checking magic, dimensions and size.

    `kind` ("images" or "labels") additionally checks the MNIST magic number.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DVAEError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DVAEError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DVAEError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = raw[2], raw[3]
    if dtype not in IDX_DTYPES:
        raise DVAEError(f"{path}: IDX data type 0x{dtype:02x} is not supported (only unsigned bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if kind is not None and magic != IDX_MAGIC[kind]:
        raise DVAEError(f"{path}: IDX magic {magic}, expected {IDX_MAGIC[kind]} for MNIST {kind}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DVAEError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DVAEError(
            f"{path}: IDX file {what}: header says {shape} = {expected} bytes, file has {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    if kind == "images" and shape[1:] != (28, 28):
        raise DVAEError(f"{path}: images are {shape[1:]}, expected 28x28")
    return array


def binarize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 0-255 images -> float32 {0,1}, flattened to (N, 784): scale to [0,1], then >= 0.5."""
    import torch  # here, not at the top: reading MNIST's files needs no torch

    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    scaled = np.asarray(images).reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return torch.from_numpy((scaled >= 0.5).astype(np.float32))


def load_images(split: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The raw uint8 images (N, 28, 28) of a split: train = first 50k, valid = last 10k, test."""
    if split not in SPLITS:
        raise DVAEError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = resolve_data_dir(data_dir)
    source = "test" if split == "test" else "train"
    images = read_idx(_find_file(folder, FILES[source]), kind="images")
    if split == "test":
        return images
    if len(images) <= VALID_SIZE:
        raise DVAEError(
            f"{folder}: the training file has {len(images)} images; need more than {VALID_SIZE}"
        )
    return images[:-VALID_SIZE] if split == "train" else images[-VALID_SIZE:]


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """A split as one binarized float32 tensor (N, 784) on `device`; `limit` keeps the first N."""
    images = load_images(split, data_dir)
    if limit is not None:
        if limit < 1:
            raise DVAEError(f"limit must be at least 1, got {limit}")
        images = images[:limit]
    return binarize(images).to(device)
