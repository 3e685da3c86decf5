"""Fuzzing every reader: bad bytes give dvae's own error (DVAEError) or a correct result, never
another exception. Each case starts from a valid file made by dvae's own writers, then damages it
(flipped bytes, truncation, junk appended or inserted). Example counts are kept small for CI."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dvae_cli.checkpoint import load_checkpoint, save_checkpoint
from dvae_cli.codes import read_codes, write_codes
from dvae_cli.data import read_idx
from dvae_cli.errors import DVAEError
from dvae_cli.inputs import read_images
from dvae_cli.model import DiscreteVAE, ModelConfig

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CODES = np.random.default_rng(0).integers(0, 10, size=(5, 7))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """`data` with one of: bytes overwritten, a truncation, junk appended, junk inserted."""
    kind = draw(st.sampled_from(["overwrite", "truncate", "append", "insert"]))
    data = bytearray(data)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    junk = draw(st.binary(min_size=1, max_size=16))
    at = draw(st.integers(0, len(data)))
    if kind == "append":
        return bytes(data + junk)
    if kind == "insert":
        return bytes(data[:at] + junk + data[at:])
    data[at: at + len(junk)] = junk
    return bytes(data)


def _ok_or_dvae_error(read, *args) -> object:
    try:
        return read(*args)
    except DVAEError as e:
        assert str(e) and "\n" not in str(e)  # one line
        return None


def _codes_file(format: str) -> bytes:
    buffer = io.BytesIO()
    write_codes(buffer, CODES, 10, format=format, fingerprint="0123456789abcdef")
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["packed", "onehot", "indices", "text"])
def test_code_readers(format):
    @FUZZ
    @given(data=damaged(_codes_file(format)))
    def check(data):
        codes = _ok_or_dvae_error(read_codes, io.BytesIO(data))
        if codes is not None:
            assert codes.indices.ndim == 2 and codes.indices.dtype.kind in "iu"

    check()


def _image_inputs(tmp_path) -> dict[str, bytes]:
    images = (np.random.default_rng(0).random((3, 28, 28)) * 255).astype(np.uint8)
    npy = io.BytesIO()
    np.save(npy, images)
    idx = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes()
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    return {"npy": npy.getvalue(), "idx": idx, "idx.gz": gzip.compress(idx), "png": png.getvalue()}


@pytest.mark.parametrize("kind", ["npy", "idx", "idx.gz", "png"])
def test_image_readers(tmp_path, kind):
    path = tmp_path / f"input.{kind}"

    @FUZZ
    @given(data=damaged(_image_inputs(tmp_path)[kind]))
    def check(data):
        path.write_bytes(data)
        images = _ok_or_dvae_error(read_images, path)
        if images is not None:
            assert images.ndim == 2 and images.shape[1] == 784 and ((images == 0) | (images == 1)).all()
        if kind.startswith("idx"):
            _ok_or_dvae_error(read_idx, path)

    check()


def _checkpoint(tmp_path) -> bytes:
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, DiscreteVAE(ModelConfig(latent_vars=2, classes=3, hidden=4, input_size=5)), "dtp", {},
                    epoch=1, metrics={"valid_neg_elbo": 1.0})
    return path.read_bytes()


def test_checkpoint_bytes(tmp_path):
    path = tmp_path / "damaged.safetensors"

    @FUZZ
    @given(data=damaged(_checkpoint(tmp_path)))
    def check(data):
        path.write_bytes(data)
        _ok_or_dvae_error(load_checkpoint, path)

    check()


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=6)


def test_checkpoint_metadata(tmp_path):
    """Every metadata field replaced by junk or by any JSON value: a clean error or a loaded model."""
    good = tmp_path / "good.safetensors"
    good.write_bytes(_checkpoint(tmp_path))
    tensors = safetensors.torch.load_file(str(good))
    with safetensors.safe_open(str(good), "pt") as f:
        metadata = f.metadata()
    path = tmp_path / "bad.safetensors"

    @FUZZ
    @given(key=st.sampled_from(sorted(metadata)), value=st.text(max_size=20) | JSON_VALUES.map(json.dumps),
           model_field=st.sampled_from(["latent_vars", "classes", "hidden", "input_size"]), number=JSON_VALUES)
    def check(key, value, model_field, number):
        for changed in ({key: value}, {"model": json.dumps({**json.loads(metadata["model"]), model_field: number})}):
            path.write_bytes(safetensors.torch.save(tensors, metadata={**metadata, **changed}))
            _ok_or_dvae_error(load_checkpoint, path)

    check()
