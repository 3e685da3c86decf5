"""Image inputs of `dvae encode`: every source format, training's binarization, clear errors."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fake_digits, idx_bytes
from dvae_cli.data import binarize
from dvae_cli.errors import DVAEError
from dvae_cli.inputs import open_images, read_images

IMAGES = fake_digits(9, seed=3)  # uint8 (9, 28, 28)
EXPECTED = binarize(IMAGES)


def test_uint8_binarization_is_trainings_for_every_value():
    values = np.tile(np.arange(256, dtype=np.uint8), 4)[:784].reshape(1, 784)  # 0..255 all present
    assert torch.equal(read_images("-", stdin=_npy(values)), binarize(values))


def _npy(array: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    np.save(buffer, array)
    buffer.seek(0)
    return buffer


def _save(tmp_path, name: str, array: np.ndarray):
    np.save(tmp_path / name, array)
    return tmp_path / name


@pytest.mark.parametrize("make", [
    lambda a: a,  # uint8 (N, 28, 28)
    lambda a: a.reshape(len(a), 784),
    lambda a: a.astype(np.float32) / 255,
    lambda a: (a.astype(np.float64) / 255).reshape(len(a), 784),
    lambda a: a >= 128,  # bool
    lambda a: np.asfortranarray(a),
    lambda a: (a / 255).astype(">f4"),  # big-endian float
], ids=["uint8", "uint8-flat", "float32", "float64-flat", "bool", "fortran", "big-endian"])
def test_npy_variants_give_the_training_binarization(tmp_path, make):
    assert torch.equal(read_images(_save(tmp_path, "x.npy", make(IMAGES))), EXPECTED)


def test_stdin_stream(tmp_path):
    assert torch.equal(read_images("-", stdin=_npy(IMAGES)), EXPECTED)


def test_idx_raw_and_gzip(tmp_path):
    (tmp_path / "raw").write_bytes(idx_bytes(IMAGES))
    (tmp_path / "gz").write_bytes(gzip.compress(idx_bytes(IMAGES)))
    assert torch.equal(read_images(tmp_path / "raw"), EXPECTED)
    assert torch.equal(read_images(tmp_path / "gz"), EXPECTED)


def test_png_file_and_folder_sorted_by_name(tmp_path):
    for i, image in enumerate(IMAGES):  # names whose order differs from creation order
        Image.fromarray(image, "L").save(tmp_path / f"img-{8 - i:02d}.png")
    assert torch.equal(read_images(tmp_path / "img-08.png"), EXPECTED[:1])
    assert torch.equal(read_images(tmp_path), EXPECTED.flip(0))


def test_chunks_are_bounded_and_complete(tmp_path):
    source = open_images(_save(tmp_path, "x.npy", IMAGES))
    chunks = list(source.chunks(4))
    assert len(source) == 9 and [len(c) for c in chunks] == [4, 4, 1]
    assert torch.equal(torch.cat(chunks), EXPECTED)


def test_empty_and_single_image(tmp_path):
    assert read_images(_save(tmp_path, "e.npy", np.zeros((0, 784), np.uint8))).shape == (0, 784)
    assert torch.equal(read_images(_save(tmp_path, "one.npy", IMAGES[:1])), EXPECTED[:1])


class Payload:
    """Unpickling this would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DVAEError, match="object arrays"):
        read_images(tmp_path / "evil.npy")
    assert not marker.exists()


@pytest.mark.parametrize("array, message", [
    (np.full((2, 784), np.nan, np.float32), "value nan"),
    (np.full((2, 784), 1.5), "value 1.5"),
    (np.full((2, 784), -0.1), "value -0.1"),
    (np.zeros((2, 28, 27), np.uint8), "shape"),
    (np.zeros(784, np.uint8), "shape"),
    (np.zeros((2, 784), np.int64), "dtype int64"),
    (np.zeros((2, 784), np.complex64), "dtype complex64"),
], ids=["nan", "above-1", "negative", "28x27", "1-d", "int64", "complex"])
def test_bad_arrays_are_clear_errors(tmp_path, array, message):
    with pytest.raises(DVAEError, match=message):
        read_images(_save(tmp_path, "bad.npy", array))


def test_nan_error_names_the_image(tmp_path):
    images = np.zeros((5, 784), np.float32)
    images[3, 100] = np.nan
    with pytest.raises(DVAEError, match="image 3 "):
        read_images(_save(tmp_path, "x.npy", images))


def test_truncated_npy(tmp_path):
    path = _save(tmp_path, "x.npy", IMAGES)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DVAEError, match="truncated"):
        read_images(path)


@pytest.mark.parametrize("write, message", [
    (lambda p: Image.new("L", (28, 20)).save(p / "a.png"), "28x20"),
    (lambda p: Image.new("RGB", (28, 28)).save(p / "a.png"), "mode RGB"),
    (lambda p: (p / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"), "not a readable PNG"),
    (lambda p: (p / "notes.txt").write_text("hello"), "without .png"),
], ids=["size", "rgb", "corrupt", "no-png"])
def test_bad_png_folders(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(DVAEError, match=message):
        read_images(tmp_path)


def test_unknown_or_missing_files(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3\n")
    with pytest.raises(DVAEError, match="not an image file"):
        read_images(tmp_path / "x.csv")
    with pytest.raises(DVAEError, match="No such file"):
        read_images(tmp_path / "missing.npy")
    with pytest.raises(DVAEError, match="not a valid .npy"):
        read_images("-", stdin=io.BytesIO(b"\x93NUMPY\x01\x00\x05\x00{'a'}"))
