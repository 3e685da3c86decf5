"""Shared fixtures: small synthetic MNIST-format files, the real MNIST when present, a tiny run."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("DVAE_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))
TRAIN_N, TEST_N = 10_600, 300  # the synthetic training file: 600 train + 10,000 valid images

# The synthetic files below carry MNIST's names but are not MNIST's published files, which training
# refuses unless told (data.verify_files): the suite says so once, for itself and the dvae processes it
# starts, as a user does with --unverified-data or $DVAE_UNVERIFIED_DATA. Tests of the check unset it.
os.environ["DVAE_UNVERIFIED_DATA"] = "1"


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    """An IDX file's bytes for a uint8 array."""
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_digits(n: int, seed: int) -> np.ndarray:
    """n 28x28 uint8 images: a few random bright strokes on black, roughly digit-like."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    rows = rng.integers(4, 24, size=(n, 3))
    cols = rng.integers(4, 24, size=(n, 3))
    for k in range(3):
        r, c = rows[:, k], cols[:, k]
        for dr in range(-2, 3):
            images[np.arange(n), np.clip(r + dr, 0, 27), c] = 255
            images[np.arange(n), r, np.clip(c + dr, 0, 27)] = 200
    return images


def write_mnist(folder: Path, train_n: int = TRAIN_N, test_n: int = TEST_N) -> Path:
    """Write the four files (train images raw, the rest gzip) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(fake_digits(train_n, 0)))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(fake_digits(test_n, 1)), 1))
    for name, n in (("train-labels-idx1-ubyte.gz", train_n), ("t10k-labels-idx1-ubyte.gz", test_n)):
        labels = np.arange(n, dtype=np.uint8) % 10
        (folder / name).write_bytes(gzip.compress(idx_bytes(labels), 1))
    return folder


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A folder of small synthetic MNIST-format files (600 train, 10,000 valid, 300 test)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The real MNIST files (../shared/data/mnist), or skip."""
    if not all((REAL_MNIST / f"{n}.gz").is_file() for n in
               ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")):
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set DVAE_TEST_MNIST)")
    return REAL_MNIST


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mnist_dir) -> Path:
    """A run folder: 2 epochs of dtp on the synthetic data (best/last checkpoints, metrics)."""
    from dvae_cli import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(TrainConfig(method="dtp", epochs=2, data_dir=str(mnist_dir), device="cpu"), out)


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch, tmp_path):
    """Tests never read the user's data/cache/checkpoint settings or write into the repo."""
    monkeypatch.delenv("DVAE_DATA_DIR", raising=False)
    monkeypatch.delenv("DVAE_CKPT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
