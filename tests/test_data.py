import gzip

import numpy as np
import pytest
import torch

from conftest import idx_bytes, write_mnist
from dvae_cli import data
from dvae_cli.errors import DVAEError


def test_read_idx_raw_and_gzip_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a", kind="images"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz", kind="images"), images)
    labels = np.arange(7, dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "l", kind="labels"), labels)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "trailing"),
    (lambda b: b"\1" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "data type"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b"", "bad magic"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, mutate, message):
    good = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    (tmp_path / "f").write_bytes(mutate(good))
    with pytest.raises(DVAEError, match=message):
        data.read_idx(tmp_path / "f", kind="images")


def test_read_idx_checks_kind_and_shape(tmp_path):
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DVAEError, match="expected 2051"):
        data.read_idx(tmp_path / "labels", kind="images")
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 27, 28))
    (tmp_path / "small").write_bytes(header + bytes(2 * 27 * 28))
    assert data.read_idx(tmp_path / "small", kind="images").shape == (2, 27, 28)  # any image size
    huge = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (1, 5000, 1))
    (tmp_path / "huge").write_bytes(huge + bytes(5000))
    with pytest.raises(DVAEError, match="each 1 to 4096"):
        data.read_idx(tmp_path / "huge", kind="images")


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8)))
    (tmp_path / "f.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DVAEError, match="corrupt gzip"):
        data.read_idx(tmp_path / "f.gz")


def test_binarize_threshold_is_half():
    images = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    out = data.binarize(images)
    assert out.dtype == torch.float32 and out.shape == (1, 4)
    assert out.tolist() == [[0.0, 0.0, 1.0, 1.0]]  # 127/255 < 0.5 <= 128/255


def test_splits(mnist_dir):
    train = data.load_split("train", mnist_dir)
    valid = data.load_split("valid", mnist_dir)
    test = data.load_split("test", mnist_dir)
    assert train.shape == (600, 784) and valid.shape == (10_000, 784) and test.shape == (300, 784)
    raw = data.read_idx(mnist_dir / "train-images-idx3-ubyte")
    assert torch.equal(train, data.binarize(raw[:600])) and torch.equal(valid, data.binarize(raw[600:]))
    assert data.load_split("train", mnist_dir, limit=10).shape == (10, 784)
    with pytest.raises(DVAEError, match="unknown split"):
        data.load_split("validation", mnist_dir)


def test_data_dir_precedence(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("DVAE_DATA_DIR", str(mnist_dir))
    assert data.resolve_data_dir() == mnist_dir
    assert data.resolve_data_dir(mnist_dir) == mnist_dir
    monkeypatch.delenv("DVAE_DATA_DIR")
    cache = write_mnist(tmp_path / "cache" / "dvae" / "mnist", train_n=10_001, test_n=1)
    assert data.resolve_data_dir() == cache  # XDG_CACHE_HOME points to tmp_path/cache


def test_missing_data_message_names_files_flag_and_variable(tmp_path):
    with pytest.raises(DVAEError) as e:
        data.resolve_data_dir(tmp_path / "nowhere")
    message = str(e.value)
    for needle in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-labels-idx1-ubyte", "data_dir DIR", "DVAE_DATA_DIR"):  # the CLI says --data-dir
        assert needle in message


def test_cache_download_failure_is_a_clear_error(monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def offline(url, **kwargs):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DVAEError, match="download failed"):
        data.resolve_data_dir()
    assert calls, "the cache path should try torchvision's download"
