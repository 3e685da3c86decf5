"""MNIST from the original IDX files: locating, parsing (with checks), splitting, binarizing.

A data set in MNIST's file layout (IDX image files for a training and a test set) is one
`IdxDataset` description; MNIST is the one dvae trains on. Only the image files are read: the
label files may be absent.

Owns: finding and reading the data set's files. Must not: import torch at the top (opening and
checking files needs none) or know about models."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DVAEError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
ENV_DATA_DIR = "DVAE_DATA_DIR"


@dataclass(frozen=True)
class IdxDataset:
    """A data set in MNIST's file layout: a training and a test file of 28x28 images (IDX, raw or gzip)."""

    name: str  # the cache folder's name
    files: dict[str, str]  # "train", "test" (images, read) and "train-labels", "test-labels" (not read)
    valid_size: int  # the last images of the training file form the validation split
    torchvision: str  # the torchvision.datasets class that downloads it (its root holds <class>/raw/)


MNIST = IdxDataset("mnist", {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte",
                             "train-labels": "train-labels-idx1-ubyte", "test-labels": "t10k-labels-idx1-ubyte"},
                   valid_size=10_000, torchvision="MNIST")
FILES, VALID_SIZE = MNIST.files, MNIST.valid_size
IMAGE_FILES = ("train", "test")  # what dvae reads; the label files are optional
IDX_DTYPES = {0x08: np.uint8}  # MNIST only uses unsigned bytes
IDX_MAGIC = {"images": 2051, "labels": 2049}


def default_cache_dir(dataset: IdxDataset = MNIST) -> Path:
    """The user cache folder: $XDG_CACHE_HOME/dvae/<name>, else ~/.cache/dvae/<name>."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dvae" / dataset.name


def _missing_message(folder: Path, how: str, dataset: IdxDataset = MNIST) -> str:
    images = ", ".join(f"{dataset.files[key]}.gz" for key in IMAGE_FILES)
    labels = ", ".join(f"{stem}" for key, stem in dataset.files.items() if key not in IMAGE_FILES)
    return (
        f"{dataset.torchvision} not found in {folder} ({how}).\n"
        f"dvae needs its original IDX image files (gzip or raw): {images} (the label files {labels} "
        f"are not needed), in the folder or in its {dataset.torchvision}/raw (torchvision's layout).\n"
        f"Pass the folder with --data-dir DIR or the environment variable {ENV_DATA_DIR}=DIR; "
        f"otherwise dvae looks in {default_cache_dir(dataset)} and, if they are not there, tries to "
        f"download them (needs internet access)."
    )


def _find_file(folder: Path, stem: str, dataset: IdxDataset = MNIST) -> Path | None:
    """The IDX file `stem` in `folder` or in torchvision's `folder/<class>/raw`: raw or .gz, also in
    the 'train-images.idx3-ubyte' spelling."""
    dotted = stem.replace("-idx", ".idx")
    for place in (folder, folder / dataset.torchvision / "raw"):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (place / name).is_file():
                return place / name
    return None


def _download(folder: Path, dataset: IdxDataset = MNIST) -> None:
    """Download the data set's gzip files into `folder` with its torchvision class's mirrors."""
    import torchvision.datasets
    from torchvision.datasets.utils import download_url

    source = getattr(torchvision.datasets, dataset.torchvision)
    for filename, md5 in source.resources:
        for mirror in source.mirrors:
            try:
                download_url(mirror + filename, root=str(folder), filename=filename, md5=md5)
                break
            except Exception:  # noqa: BLE001 - any network failure: try the next mirror
                continue
        else:
            raise DVAEError(_missing_message(folder, "the download failed: are you offline?", dataset))


def _has_images(folder: Path, dataset: IdxDataset) -> bool:
    return all(_find_file(folder, dataset.files[key], dataset) is not None for key in IMAGE_FILES)


def resolve_data_dir(data_dir: str | os.PathLike | None = None, download: bool = True,
                     dataset: IdxDataset = MNIST) -> Path:
    """The folder holding the data set: `data_dir`, else $DVAE_DATA_DIR, else the cache (downloading)."""
    if data_dir is not None:
        folder, how = Path(data_dir), "from --data-dir"
    elif os.environ.get(ENV_DATA_DIR):
        folder, how = Path(os.environ[ENV_DATA_DIR]), f"from ${ENV_DATA_DIR}"
    else:
        folder, how = default_cache_dir(dataset), "the default cache folder"
        if download and not _has_images(folder, dataset):
            _download(folder, dataset)
    if not _has_images(folder, dataset):
        raise DVAEError(_missing_message(folder, how, dataset))
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


def load_images(split: str, data_dir: str | os.PathLike | None = None, dataset: IdxDataset = MNIST) -> np.ndarray:
    """The raw uint8 images (N, 28, 28) of a split: train = the training file less its last
    `valid_size` images (MNIST: 50k), valid = those, test = the test file."""
    if split not in SPLITS:
        raise DVAEError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = resolve_data_dir(data_dir, dataset=dataset)
    source = "test" if split == "test" else "train"
    images = read_idx(_find_file(folder, dataset.files[source], dataset), kind="images")
    if split == "test":
        return images
    valid = dataset.valid_size
    if len(images) <= valid:
        raise DVAEError(f"{folder}: the training file has {len(images)} images; need more than {valid}")
    return images[:-valid] if split == "train" else images[-valid:]


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
