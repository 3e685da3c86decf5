"""The data sets: which ones exist (MNIST and the sets in its file layout, and any pair of .npy arrays
of grey images), finding and parsing their files, splitting, and how images become the targets the
model reconstructs.

A data set is one `DataSet` entry in `DATASETS`: its files (IDX, as MNIST's, or .npy) for a training
and a test set. What a run learned from is a `DataConfig` (the set's name, its image height and
width, read from the files' header, the binarization and the validation split): it is recorded in
config.json and in every checkpoint, and every command reads the images' shape and the set from it.
Only the image files are read: the label files may be absent.

This module (with the MNIST entry) is the one place that knows the default image size and names a
data set; nothing else spells 28, 784 or MNIST.

Owns: finding and reading the data set's files, the binarizations. Must not: import torch at the top
(opening and checking files needs none) or know about models."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DVAEError, Setting, SettingError
from .seeds import check_seed
from .terminal import shown

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
ENV_DATA_DIR = "DVAE_DATA_DIR"
IMAGE_FILES = ("train", "test")  # what dvae reads; the label files are optional
IDX_DTYPES = {0x08: np.uint8}  # MNIST's sets only use unsigned bytes
IDX_MAGIC = {"images": 2051, "labels": 2049}
MAX_DATA_BYTES = 1 << 32  # the most an IDX file's data may hold (4 GiB), checked against its header first
READ_BLOCK = 1 << 20  # bytes read (decompressed) at a time
MAX_SIDE = 4096  # a sane ceiling on an image's height and width, checked before anything is allocated
BINARIZATIONS = {
    "threshold": "pixels >= 0.5 after scaling to [0, 1] (the thesis)",
    "dynamic": "a fresh Bernoulli draw from the grey value, per image and epoch; evaluation on one fixed draw",
    "none": "grey-scale targets in [0, 1] with the Bernoulli cross-entropy (the ReinMax/GST reference code); "
            "its -ELBO is not a bound on the likelihood of a discrete image",
}


@dataclass(frozen=True)
class DataSet:
    """A data set: a training and a test file of grey images, IDX (raw or gzip, MNIST's layout) or .npy."""

    name: str  # --dataset and the cache folder's name
    title: str  # how messages name it
    files: dict[str, str]  # "train", "test" (images, read) and, for IDX, "train-labels", "test-labels" (not read)
    valid_size: int  # the last images of the training file form the validation split
    torchvision: str | None = None  # the torchvision.datasets class that downloads it (its root holds <class>/raw/)
    side: int = 28  # the images' height and width as published
    layout: str = "idx"  # "idx" or "npy": uint8 arrays (N, height, width), no pickles
    md5: dict[str, tuple[str, ...]] | None = None  # "train", "test": the md5s its published image files have
    # (the gzip file's, from torchvision's list, and the decompressed file's where known); None: any files


IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte",
             "train-labels": "train-labels-idx1-ubyte", "test-labels": "t10k-labels-idx1-ubyte"}
MNIST = DataSet("mnist", "MNIST", IDX_FILES, valid_size=10_000, torchvision="MNIST",
                md5={"train": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
                     "test": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea")})
FASHION_MNIST = DataSet("fashion-mnist", "Fashion-MNIST", IDX_FILES, valid_size=10_000, torchvision="FashionMNIST",
                        md5={"train": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",), "test": ("bef4ecab320f06d8554ea6380940ec79",)})
KMNIST = DataSet("kmnist", "KMNIST", IDX_FILES, valid_size=10_000, torchvision="KMNIST",
                 md5={"train": ("bdb82020997e1d708af4cf47b453dcf7",), "test": ("5c965bf0a639b31b8f53240b1b52f4d7",)})
NPY = DataSet("npy", "the .npy data set", {"train": "train.npy", "test": "test.npy"}, valid_size=0, layout="npy")
DATASETS: dict[str, DataSet] = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST, NPY)}


ENV_UNVERIFIED = "DVAE_UNVERIFIED_DATA"  # set (to anything but "" or "0"): accept unverified files by default


def unverified_default() -> bool:
    """Whether files a data set does not know are accepted when nobody says: $DVAE_UNVERIFIED_DATA."""
    return os.environ.get(ENV_UNVERIFIED, "") not in ("", "0")


def get_dataset(name: str) -> DataSet:
    """The data set registered as `name`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DVAEError(f"unknown data set '{shown(name)}'; choose one of {', '.join(DATASETS)}") from None


@dataclass(frozen=True)
class DataConfig:
    """What a run learns from: the data set, its images' size, their binarization, the validation split.

    Recorded in config.json and checkpoints; a record without it (dvae before 0.x) is MNIST's default.
    """

    name: str = MNIST.name
    height: int = MNIST.side
    width: int = MNIST.side
    binarize: str = "threshold"
    valid_size: int = MNIST.valid_size  # the last images of the training file (0: train on all of it)
    eval_seed: int = 0  # binarize dynamic: the seed of the one fixed draw that evaluation uses

    def __post_init__(self) -> None:
        get_dataset(self.name)
        for name in ("height", "width"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_SIDE:
                raise SettingError(Setting(name), f" must be an integer from 1 to {MAX_SIDE}, got {value!r}")
        if self.binarize not in BINARIZATIONS:
            raise SettingError(Setting("binarize"), f" must be one of {', '.join(BINARIZATIONS)}, got {self.binarize!r}")
        if type(self.valid_size) is not int or self.valid_size < 0:
            raise SettingError(Setting("valid_size"), f" must be a non-negative integer, got {self.valid_size!r}")
        check_seed(self.eval_seed, "eval_seed")

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def dataset(self) -> DataSet:
        return get_dataset(self.name)

    @property
    def is_binary(self) -> bool:
        """Whether the targets are 0/1 images, so that the ELBO bounds a discrete image's likelihood."""
        return self.binarize != "none"

    @property
    def label(self) -> str:
        """'MNIST 28x28, threshold' (for messages and figures; `describe` reads a DataConfig from files)."""
        return f"{self.dataset.title} {self.height}x{self.width}, {self.binarize}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> DataConfig:
        """From a record; None (a record made before data sets were recorded) is MNIST's default."""
        return cls() if d is None else cls(**d)


DEFAULT_DATA = DataConfig()


def default_cache_dir(dataset: DataSet = MNIST) -> Path:
    """The user cache folder: $XDG_CACHE_HOME/dvae/<name>, else ~/.cache/dvae/<name>."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dvae" / dataset.name


def _missing(folder: Path, how: str | Setting, dataset: DataSet) -> SettingError:
    if dataset.layout == "npy":
        return SettingError(
            f"{dataset.title} not found in {folder} (", how, "). It is two files, "
            f"{' and '.join(dataset.files[key] for key in IMAGE_FILES)}: uint8 arrays (N, height, width) of grey "
            "images of one size (saved with numpy.save, no pickles). Pass their folder with ", Setting("data_dir"),
            f" DIR or the environment variable {ENV_DATA_DIR}=DIR.")
    images = ", ".join(f"{dataset.files[key]}.gz" for key in IMAGE_FILES)
    labels = ", ".join(f"{stem}" for key, stem in dataset.files.items() if key not in IMAGE_FILES)
    return SettingError(
        f"{dataset.title} not found in {folder} (", how, "). "
        f"dvae needs its original IDX image files (gzip or raw): {images} (the label files {labels} "
        f"are not needed), in the folder or in its {dataset.torchvision}/raw (torchvision's layout). "
        "Pass the folder with ", Setting("data_dir"), f" DIR or the environment variable {ENV_DATA_DIR}=DIR; "
        f"otherwise dvae looks in {default_cache_dir(dataset)} and, if they are not there, tries to "
        f"download them with torchvision, checking their checksums (needs internet access)."
    )


def _find_file(folder: Path, stem: str, dataset: DataSet) -> Path | None:
    """The file `stem` in `folder`; for IDX also in torchvision's `folder/<class>/raw`, raw or .gz,
    and in the 'train-images.idx3-ubyte' spelling."""
    if dataset.layout == "npy":
        return folder / stem if (folder / stem).is_file() else None
    dotted = stem.replace("-idx", ".idx")
    for place in (folder, folder / dataset.torchvision / "raw"):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (place / name).is_file():
                return place / name
    return None


def _download(folder: Path, dataset: DataSet) -> None:
    """Download the data set's gzip files into `folder` with its torchvision class's mirrors (md5 checked)."""
    if dataset.torchvision is None:
        raise _missing(folder, "the default cache folder; it has no download", dataset)
    import torchvision.datasets
    from torchvision.datasets.utils import download_url

    source = getattr(torchvision.datasets, dataset.torchvision)
    mirrors = getattr(source, "mirrors", None) or [""]
    for filename, md5 in source.resources:
        for mirror in mirrors:
            url = filename if filename.startswith("http") else mirror + filename
            try:
                download_url(url, root=str(folder), filename=url.rsplit("/", 1)[-1], md5=md5)
                break
            except Exception:  # noqa: BLE001 - any network failure: try the next mirror
                continue
        else:
            raise _missing(folder, "the download failed: are you offline?", dataset)


def _has_images(folder: Path, dataset: DataSet) -> bool:
    return all(_find_file(folder, dataset.files[key], dataset) is not None for key in IMAGE_FILES)


def resolve_data_dir(data_dir: str | os.PathLike | None = None, download: bool = True,
                     dataset: DataSet = MNIST) -> Path:
    """The folder holding the data set: `data_dir`, else $DVAE_DATA_DIR, else the cache (downloading)."""
    if data_dir is not None:
        folder, how = Path(data_dir), Setting("data_dir")
    elif os.environ.get(ENV_DATA_DIR):
        folder, how = Path(os.environ[ENV_DATA_DIR]), f"from ${ENV_DATA_DIR}"
    else:
        folder, how = default_cache_dir(dataset), "the default cache folder"
        if download and not _has_images(folder, dataset):
            _download(folder, dataset)
    if not _has_images(folder, dataset):
        raise _missing(folder, how, dataset)
    return folder


def dataset_files(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every file a data set owns that is there now: the image and label files of each split of every
    registered data set, in each spelling and place dvae reads them from, in `data_dir`, in
    $DVAE_DATA_DIR and in each data set's cache folder. No output may be written onto one of them
    (fileio.check_output's `protected`), whichever data set a command reads. Nothing is downloaded."""
    folders = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get(ENV_DATA_DIR):
        folders.append(Path(os.environ[ENV_DATA_DIR]))
    folders += [default_cache_dir(dataset) for dataset in DATASETS.values()]
    found = []
    for folder in dict.fromkeys(folders):
        for dataset in DATASETS.values():
            places = [folder] + ([folder / dataset.torchvision / "raw"] if dataset.torchvision else [])
            for stem in dataset.files.values():
                dotted = stem.replace("-idx", ".idx")
                found += [place / name for place in places for name in dict.fromkeys((stem, stem + ".gz", dotted,
                                                                                      dotted + ".gz"))
                          if (place / name).is_file()]
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=32)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    """The md5 of a file, once per (path, size, modification time)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(data: DataConfig, data_dir: str | os.PathLike | None = None) -> None:
    """Check that the image files a named data set is read from are its published ones (their md5,
    gzip or decompressed), so that MNIST's files are never trained on as Fashion-MNIST's; other
    files under its name are refused with a line that says how to accept them (TrainConfig's
    `unverified_data`, which config.json records). A data set without known checksums (npy) passes."""
    dataset = data.dataset
    if dataset.md5 is None:
        return
    for key in IMAGE_FILES:
        path = split_file("test" if key == "test" else "train", data_dir, data)
        try:
            found = os.stat(path)
            digest = _md5(os.path.realpath(path), found.st_size, found.st_mtime_ns)
        except OSError as e:
            raise DVAEError(f"{path}: cannot read it ({e.strerror or e})") from None
        if digest not in dataset.md5[key]:
            raise SettingError(f"{path}: not {dataset.title}'s published {key} images (md5 {digest}); to train on "
                               "these files as ", Setting("dataset"), f" {dataset.name} anyway, pass ",
                               Setting("unverified_data"), " (recorded in config.json)")


def split_file(split: str, data_dir: str | os.PathLike | None = None, data: DataConfig = DEFAULT_DATA) -> Path:
    """The image file a split is read from (train and valid: the training file)."""
    if split not in SPLITS:
        raise DVAEError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = resolve_data_dir(data_dir, dataset=data.dataset)
    return _find_file(folder, data.dataset.files["test" if split == "test" else "train"], data.dataset)


def read_idx(path: str | os.PathLike, kind: str | None = None) -> np.ndarray:
    """Parse an IDX file (gzip or raw) into a uint8 array, checking magic, dimensions and size.

    `kind` ("images" or "labels") additionally checks the magic number of MNIST's layout, and for
    images three dimensions (N, height, width) of at most MAX_SIDE each. The data is read (and
    decompressed) in blocks up to what the header promises (at most MAX_DATA_BYTES) and one block
    more: memory grows with what is there, and a gzip bomb stops just past its header's size.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            packed = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file, mode="rb") if packed else file
            head = _read_up_to(stream, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DVAEError(f"{path}: not an IDX file (bad magic number)")
            dtype, ndim = head[2], head[3]
            if dtype not in IDX_DTYPES:
                raise DVAEError(f"{path}: IDX data type 0x{dtype:02x} is not supported (only unsigned bytes)")
            magic = int.from_bytes(head[:4], "big")
            if kind is not None and magic != IDX_MAGIC[kind]:
                raise DVAEError(f"{path}: IDX magic {magic}, expected {IDX_MAGIC[kind]} for {kind}")
            dims = _read_up_to(stream, 4 * ndim)
            if ndim == 0 or len(dims) < 4 * ndim:
                raise DVAEError(f"{path}: truncated IDX header")
            shape = tuple(int.from_bytes(dims[4 * i : 4 + 4 * i], "big") for i in range(ndim))
            if kind == "images" and (len(shape) != 3 or not all(1 <= side <= MAX_SIDE for side in shape[1:])):
                raise DVAEError(f"{path}: images of shape {shape[1:]}; expected (height, width), each 1 to {MAX_SIDE}")
            header, size = 4 + 4 * ndim, int(np.prod(shape, dtype=object))
            if size > MAX_DATA_BYTES:
                raise DVAEError(f"{path}: the IDX header says {shape} = {size:,} bytes, over dvae's ceiling of "
                                f"{MAX_DATA_BYTES:,}")
            body = _read_up_to(stream, size + 1)  # one byte more tells trailing bytes
    except FileNotFoundError:
        raise DVAEError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DVAEError(f"{path}: corrupt gzip data ({e})") from None
    except MemoryError:
        raise DVAEError(f"{path}: out of memory reading its {size:,} bytes of data") from None
    if len(body) != size:
        got = f"{header + len(body)}" if len(body) < size else "more"
        what = "truncated" if len(body) < size else "has trailing bytes"
        raise DVAEError(f"{path}: IDX file {what}: header says {shape} = {header + size} bytes, "
                        f"{'decompressed, it has' if packed else 'file has'} {got}")
    array = np.frombuffer(body, dtype=np.uint8).reshape(shape)
    array.flags.writeable = False  # as the file's bytes were before: read-only
    return array


def _read_up_to(stream, size: int) -> bytearray:
    """Up to `size` bytes of `stream`, fewer only at its end, read in blocks of READ_BLOCK: the
    buffer grows with what is there, never reserved for what a header claims."""
    data = bytearray()
    while len(data) < size:
        block = stream.read(min(READ_BLOCK, size - len(data)))
        if not block:
            break
        data += block
    return data


def _npy_array(path: Path) -> np.ndarray:
    """A data set's .npy file memory-mapped (nothing read yet), checked: uint8 (N, height, width), no pickles."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise DVAEError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DVAEError(f"{path}: not a readable .npy array ({e})") from None
    if array.dtype != np.uint8 or array.ndim != 3 or not all(1 <= side <= MAX_SIDE for side in array.shape[1:]):
        raise DVAEError(f"{path}: a data set's .npy must be uint8 images (N, height, width), each side 1 to "
                        f"{MAX_SIDE}; got {array.dtype} {array.shape}")
    return array


def read_npy_images(path: str | os.PathLike) -> np.ndarray:
    """A .npy array of grey images, uint8 (N, height, width), checked and read."""
    return np.asarray(_npy_array(Path(path)))


def _image_size(path: Path, layout: str) -> tuple[int, int]:
    """(height, width) of an image file's images, from its header alone."""
    if layout == "npy":
        return _npy_array(path).shape[1:]
    try:
        with open(path, "rb") as f:
            packed = f.read(2) == b"\x1f\x8b"
        with (gzip.open if packed else open)(path, "rb") as f:
            header = f.read(16)
    except (OSError, EOFError, zlib.error) as e:
        raise DVAEError(f"{path}: corrupt gzip data ({e})") from None
    if len(header) < 16 or header[:4] != IDX_MAGIC["images"].to_bytes(4, "big"):
        read_idx(path, kind="images")  # says what is wrong with it
    return int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")


def describe(name: str = MNIST.name, data_dir: str | os.PathLike | None = None, binarize: str = "threshold",
             valid_size: int | None = None) -> DataConfig:
    """The DataConfig of data set `name` as found on disk: its image size read from the training file,
    the test file checked to hold images of that size too."""
    dataset = get_dataset(name)
    train, test = (split_file(split, data_dir, DataConfig(name)) for split in ("train", "test"))
    height, width = _image_size(train, dataset.layout)
    if _image_size(test, dataset.layout) != (height, width):  # before training, not at the first test
        other = _image_size(test, dataset.layout)
        raise DVAEError(f"{test}: its images are {other[0]}x{other[1]}, those of {train} are {height}x{width}; "
                        f"a data set's training and test images must have one size")
    return DataConfig(name, height, width, binarize, dataset.valid_size if valid_size is None else valid_size)


def load_images(split: str, data_dir: str | os.PathLike | None = None, data: DataConfig = DEFAULT_DATA) -> np.ndarray:
    """The raw uint8 images (N, height, width) of a split: train = the training file less its last
    `valid_size` images (MNIST: 50k), valid = those, test = the test file. Their size must be the
    description's."""
    path = split_file(split, data_dir, data)
    images = read_npy_images(path) if data.dataset.layout == "npy" else read_idx(path, kind="images")
    if images.shape[1:] != data.shape:
        raise SettingError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, but the model learned "
                           f"{data.label}; point ", Setting("data_dir"), " at that data set")
    if split == "test":
        return images
    valid = data.valid_size
    if len(images) <= valid:
        raise DVAEError(f"{path}: the training file has {len(images)} images; need more than {valid}")
    return images[: len(images) - valid] if split == "train" else images[len(images) - valid :]


def grey(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 0-255 images -> float32 in [0, 1], flattened to (N, pixels)."""
    import torch  # here, not at the top: reading the files needs no torch

    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    return torch.from_numpy(np.asarray(images).reshape(len(images), -1).astype(np.float32) / np.float32(255.0))


def binarize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 0-255 images -> float32 {0,1}, flattened to (N, pixels): scale to [0,1], then >= 0.5."""
    return (grey(images) >= 0.5).float()


def draw_binary(grey_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarization: 1 with probability the grey value, from `generator` (one uniform a pixel)."""
    import torch

    uniform = torch.rand(grey_values.shape, generator=generator, device=generator.device)
    return (uniform < grey_values).to(grey_values.dtype)


def targets(images: np.ndarray | torch.Tensor, data: DataConfig = DEFAULT_DATA) -> torch.Tensor:
    """Images as the targets evaluation and encoding use: binarized at 0.5 (threshold), grey (none),
    or one fixed Bernoulli draw seeded by data.eval_seed (dynamic; image i gets the same draw
    whatever number of images follow it)."""
    import torch

    if data.binarize == "threshold":
        return binarize(images)
    values = grey(images)
    if data.binarize == "none":
        return values
    return draw_binary(values, torch.Generator().manual_seed(data.eval_seed))


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    data: DataConfig = DEFAULT_DATA,
    training: bool = False,
) -> torch.Tensor:
    """A split as one float32 tensor (N, pixels) on `device`; `limit` keeps the first N. The targets of
    `targets`, or with `training` what the training loop takes (dynamic: the grey values it draws from)."""
    images = load_images(split, data_dir, data)
    if limit is not None:
        if limit < 1:
            raise DVAEError(f"limit must be at least 1, got {limit}")
        images = images[:limit]
    if training and data.binarize == "dynamic":
        return grey(images).to(device)
    return targets(images, data).to(device)
