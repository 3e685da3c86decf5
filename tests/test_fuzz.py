"""Fuzzing every reader: bad bytes give dvae's own error (DVAEError) or a correct result, never
another exception. Each case starts from a valid file made by dvae's own writers, then damages it
(flipped bytes, truncation, junk appended or inserted). Example counts are kept small for CI."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys

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


def _good_checkpoint(tmp_path):
    """A valid checkpoint file, its tensors and its metadata, to make bad ones from."""
    good = tmp_path / "good.safetensors"
    good.write_bytes(_checkpoint(tmp_path))
    with safetensors.safe_open(str(good), "pt") as f:
        metadata = f.metadata()
    return good, safetensors.torch.load_file(str(good)), metadata


def test_checkpoint_metadata(tmp_path):
    """Every metadata field replaced by junk or by any JSON value: a clean error or a loaded model."""
    good, tensors, metadata = _good_checkpoint(tmp_path)
    path = tmp_path / "bad.safetensors"

    @FUZZ
    @given(key=st.sampled_from(sorted(metadata)), value=st.text(max_size=20) | JSON_VALUES.map(json.dumps),
           model_field=st.sampled_from(["latent_vars", "classes", "hidden", "input_size"]), number=JSON_VALUES)
    def check(key, value, model_field, number):
        for changed in ({key: value}, {"model": json.dumps({**json.loads(metadata["model"]), model_field: number})}):
            path.write_bytes(safetensors.torch.save(tensors, metadata={**metadata, **changed}))
            _ok_or_dvae_error(load_checkpoint, path)

    check()


# ---- every size field of a header at its extremes, under a wall-clock limit -------------------------

EXTREMES = (0, 1, 2**31, 2**32 - 1)
LIMIT_S = 10  # a reader that takes longer hangs (a loop or an allocation driven by the header)


def _bounded(read, *args):
    """Run `read(*args)` in a forked child with a wall-clock limit (a hang inside FAISS or NumPy cannot
    be interrupted by a signal handler): 'ok', or 'DVAEError: ...' (one line); anything else fails."""
    import multiprocessing
    import traceback

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        try:
            read(*args)
            send.send("ok")
        except DVAEError as e:
            send.send(f"DVAEError: {e}")
        except BaseException:  # noqa: BLE001 - reported to the parent as the failure it is
            send.send("other: " + traceback.format_exc())

    process = context.Process(target=child)
    process.start()
    try:
        if not receive.poll(LIMIT_S):
            pytest.fail(f"{read.__name__} hung (over {LIMIT_S} s) on {args!r:.200}")
        outcome = receive.recv()
    finally:
        process.kill()
        process.join()
    assert not outcome.startswith("other"), outcome
    assert "\n" not in outcome, outcome
    return outcome


def _codes_header(packing=1, version=2, **fields) -> bytes:
    import struct
    import zlib

    from dvae_cli.codes.formats.records import HEADERS, MAGIC

    values = {"d": 7, "k": 10, "group": 7, "record": 3, "count": 5, "shard_index": 0, "shard_count": 1, "images": 5}
    values.update(fields)
    if packing == 2 and "group" not in fields:
        values["group"] = 0
    if packing == 2 and "record" not in fields:
        values["record"] = 9
    packed = HEADERS[2].pack(MAGIC, version, packing, values["d"], values["k"], values["group"], values["record"],
                             values["count"], b"0123456789abcdef", values["shard_index"], values["shard_count"],
                             values["images"], b"fedcba9876543210")
    return packed + struct.pack("<I", zlib.crc32(packed))


def _read_and_use_codes(data: bytes) -> None:
    """What `dvae index` and `dvae search` do with a codes file: read it, index it, search it."""
    from dvae_cli.search import SearchIndex

    codes = read_codes(io.BytesIO(data))
    index = SearchIndex.build(codes.indices, codes.classes or 10)
    index.search_codes(codes.indices[:1], 3)


CODE_FIELDS = ("d", "k", "group", "record", "count", "shard_index", "shard_count", "images")


@pytest.mark.parametrize("packing", [1, 2])
@pytest.mark.parametrize("field", CODE_FIELDS)
def test_code_header_extremes(packing, field):
    body = bytes(5 * (3 if packing == 1 else 9))
    for value in EXTREMES + ((2**64 - 1, 2**63) if field == "count" else ()):
        _bounded(_read_and_use_codes, _codes_header(packing, **{field: value}) + body)


def test_packed_header_of_many_variables_is_refused_at_once():
    """group_size looped g = 1..D: a header of D = 2**32 - 1 held dvae at 100% CPU."""
    from dvae_cli.codes import group_size, record_bits
    from dvae_cli.codes.packing import packed_record_bytes

    for d in (2**16 + 1, 2**31, 2**32 - 1):
        record = packed_record_bytes(d, 2, 1)
        outcome = _bounded(_read_and_use_codes, _codes_header(1, d=d, k=2, group=1, record=record, count=1)
                           + bytes(min(record, 1 << 20)))
        assert outcome.startswith("DVAEError")
    for d in (1, 2, 7, 30, 64, 200):  # the bounded search finds what trying every g <= D found
        for k in (2, 3, 10, 255, 4096):
            every = [g for g in range(1, d + 1) if k**g <= 2**63]
            assert group_size(d, k) == min(every, key=lambda g: (record_bits(d, k, g), g))


def _index_file(d=7, k=10, n=2, sections=1, codes_bytes=None, fp=b"0123456789abcdef") -> bytes:
    import struct
    import zlib

    from dvae_cli.search_file import HEADER, MAGIC, SECTION

    fields = HEADER.pack(MAGIC, 1, d, k, n, sections, fp)
    payload = bytes(min(n * 3, 1 << 20) if codes_bytes is None else codes_bytes)
    return (fields + struct.pack("<I", zlib.crc32(fields)) + SECTION.pack(b"codes", len(payload), zlib.crc32(payload))
            + payload)


def _read_and_use_index(path) -> None:
    from dvae_cli.search_file import read_index

    index = read_index(path)
    index.search_codes(index.codes[:1] if len(index) else np.zeros((1, index.latent_vars), np.uint8), 3)


@pytest.mark.parametrize("field", ["d", "k", "n", "sections", "codes_bytes"])
def test_index_header_extremes(tmp_path, field):
    path = tmp_path / "db.dvaeidx"
    for value in EXTREMES + ((2**64 - 1,) if field == "n" else ()):
        if field == "sections":
            value = min(value, 2**16 - 1)
        if field == "codes_bytes":
            value = min(value, 1 << 20)
        path.write_bytes(_index_file(**{field: value}))
        _bounded(_read_and_use_index, path)


def test_index_fingerprint_must_be_hex(tmp_path):
    path = tmp_path / "db.dvaeidx"
    path.write_bytes(_index_file(fp=b"\x1b[2J0123456789ab"))
    assert "hex digits" in _bounded(_read_and_use_index, path)


def test_checkpoint_size_fields_at_extremes(tmp_path):
    """The model's sizes in the metadata, and the safetensors header's own sizes, at their extremes."""
    good, tensors, metadata = _good_checkpoint(tmp_path)
    path = tmp_path / "bad.safetensors"
    for value in EXTREMES:
        for name in ("latent_vars", "classes", "hidden", "input_size"):
            model = {**json.loads(metadata["model"]), name: value}
            path.write_bytes(safetensors.torch.save(tensors, metadata={**metadata, "model": json.dumps(model)}))
            _bounded(load_checkpoint, path)
        path.write_bytes(safetensors.torch.save(tensors, metadata={**metadata, "epoch": str(value)}))
        _bounded(load_checkpoint, path)
        raw = good.read_bytes()
        path.write_bytes(value.to_bytes(8, "little") + raw[8:])  # the JSON header's length
        _bounded(load_checkpoint, path)
        header_size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_size])
        first = next(k for k in header if k != "__metadata__")
        for key, change in (("shape", lambda s: [value] * len(s)), ("data_offsets", lambda o: [o[0], value])):
            damaged_header = {**header, first: {**header[first], key: change(header[first][key])}}
            encoded = json.dumps(damaged_header).encode()
            path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + header_size:])
            _bounded(load_checkpoint, path)


@pytest.mark.skipif(os.environ.get("DVAE_FUZZ_LIMITED") == "1", reason="already under the address-space limit")
def test_every_reader_fuzzed_again_under_a_4_gb_address_space():
    """The same fuzz cases in a process limited to 4 GB of address space (torch needs ~3.5 GB to import):
    no reader reserves a ceiling's memory."""
    command = f"ulimit -v 4000000 && {sys.executable} -m pytest -q -p no:cacheprovider {__file__}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DVAE_FUZZ_LIMITED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
