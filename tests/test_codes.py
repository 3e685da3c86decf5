"""Codes: mixed-radix packing, the four file formats, encode/decode, and the `dvae encode/decode` CLI."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import fake_digits
from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.cli import app
from dvae_cli.codes import (FORMATS, HEADER_SIZE, CodeWriter, decode, encode, group_size, pack,
                            pack_onehot, read_codes, record_bytes, unpack, unpack_onehot, write_codes)
from dvae_cli.runfolder import default_checkpoint
from dvae_cli.errors import DVAEError
from dvae_cli.inputs import CHUNK
from dvae_cli.pretrained import pretrained_path

REPO = Path(__file__).resolve().parents[1]
DVAE = str(Path(sys.executable).with_name("dvae"))
FP = "0123456789abcdef"


def random_codes(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=(n, d))


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_checkpoint(tiny_run)


@pytest.fixture
def imgs(tmp_path) -> Path:
    path = tmp_path / "imgs.npy"
    np.save(path, fake_digits(20, seed=7))
    return path


def cli(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


# ---- packing ---------------------------------------------------------------------------------


def test_thirty_tens_take_13_bytes_and_the_spec_example():
    assert group_size(30, 10) == 3
    assert record_bytes("packed", 30, 10, 3) == 13 and record_bytes("onehot", 30, 10) == 38
    assert pack(np.array([[5, 0, 7, 2]]), 10).tobytes() == bytes([0x65, 0x20])  # docs/CODES.md


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 512), k=st.integers(2, 4096), n=st.integers(0, 1000), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_is_the_identity(d, k, n, seed):
    codes = random_codes(n, d, k, seed)
    records = pack(codes, k)
    assert records.shape == (n, record_bytes("packed", d, k, group_size(d, k)))
    assert np.array_equal(unpack(records, d, k), codes)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 64), k=st.integers(2, 300), n=st.integers(0, 200), seed=st.integers(0, 2**32 - 1))
def test_onehot_pack_unpack_is_the_identity(d, k, n, seed):
    codes = random_codes(n, d, k, seed)
    assert np.array_equal(unpack_onehot(pack_onehot(codes, k), d, k), codes)


@pytest.mark.parametrize("d, k", [(1, 2), (30, 10), (63, 2), (64, 2), (5, 4095), (512, 4096), (7, 3)])
def test_extreme_indices_round_trip_and_records_are_near_optimal(d, k):
    codes = np.array([[0] * d, [k - 1] * d, list(range(d))]) % k
    records = pack(codes, k)
    assert np.array_equal(unpack(records, d, k), codes)
    groups = math.ceil(d / group_size(d, k))  # each group of g indices wastes less than a bit
    assert records.shape[1] * 8 < d * math.log2(k) + groups + 8


def test_pack_refuses_bad_codes():
    with pytest.raises(DVAEError, match=r"\[0, 10\)"):
        pack(np.array([[10, 0]]), 10)
    with pytest.raises(DVAEError, match="shape"):
        pack(np.array([1, 2]), 10)
    with pytest.raises(DVAEError, match="K <= 4096"):
        pack(np.zeros((1, 3), int), 4097)
    with pytest.raises(DVAEError, match="integer"):
        pack(np.zeros((1, 3)), 10)


def test_unpack_detects_corrupt_records():
    with pytest.raises(DVAEError, match="corrupt packed record 1"):
        unpack(np.array([pack(np.zeros((1, 30), int), 10)[0], [0xFF] * 13], np.uint8), 30, 10)  # 1023 >= 1000
    padded = pack(np.zeros((1, 30), int), 10)
    padded[0, -1] |= 1  # a padding bit
    with pytest.raises(DVAEError, match="corrupt packed record 0"):
        unpack(padded, 30, 10)
    two_bits = pack_onehot(np.zeros((1, 30), int), 10)
    two_bits[0, 0] |= 0x20
    with pytest.raises(DVAEError, match="exactly one bit"):
        unpack_onehot(two_bits, 30, 10)


# ---- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, CHUNK + 3])  # more than one chunk
@pytest.mark.parametrize("format", FORMATS)
def test_every_format_round_trips(tmp_path, format, n):
    codes = random_codes(n, 30, 10)
    write_codes(tmp_path / "c", codes, 10, format, FP)
    back = read_codes(tmp_path / "c", latent_vars=30)
    assert np.array_equal(back.indices, codes) and back.indices.shape == (n, 30) and back.format == format
    recorded = format in ("packed", "onehot")
    assert (back.classes, back.fingerprint) == ((10, FP) if recorded else (None, None))
    if format == "packed":
        assert (tmp_path / "c").stat().st_size == HEADER_SIZE + 13 * n


@pytest.mark.parametrize("format", FORMATS)
def test_many_classes(tmp_path, format):
    codes = random_codes(50, 7, 300)
    write_codes(tmp_path / "c", codes, 300, format)
    back = read_codes(tmp_path / "c", classes=300)
    assert np.array_equal(back.indices, codes)
    if format == "text":
        assert (tmp_path / "c").read_text().splitlines()[0] == " ".join(f"{c:03d}" for c in codes[0])
    if format == "indices":
        assert back.indices.dtype == np.uint16


def test_text_is_one_line_of_digits_per_image(tmp_path):
    write_codes(tmp_path / "c.txt", np.array([[5, 0, 7], [9, 9, 0]]), 10, "text")
    assert (tmp_path / "c.txt").read_text() == "507\n990\n"
    (tmp_path / "hand.txt").write_text("12 7 3\n0 11 2")  # unpadded numbers, no final newline
    assert read_codes(tmp_path / "hand.txt").indices.tolist() == [[12, 7, 3], [0, 11, 2]]


@pytest.mark.parametrize("format", FORMATS)
def test_streaming_with_unknown_count(format):
    codes = random_codes(25, 30, 10)
    out = io.BytesIO()
    with CodeWriter(out, format, 30, 10, count=None, fingerprint=FP) as writer:
        for part in np.array_split(codes, 3):
            writer.write(part)
    if format in ("packed", "onehot"):
        assert out.getvalue()[28:36] == b"\xff" * 8  # N unknown: taken from the file length
    assert np.array_equal(read_codes(io.BytesIO(out.getvalue())).indices, codes)


def test_writer_checks_the_announced_count():
    with pytest.raises(DVAEError, match="3 codes written, 5 announced"):
        with CodeWriter(io.BytesIO(), "packed", 30, 10, count=5) as writer:
            writer.write(random_codes(3, 30, 10))
    with pytest.raises(DVAEError, match="more codes than the 2"):
        CodeWriter(io.BytesIO(), "packed", 30, 10, count=2).write(random_codes(3, 30, 10))


def packed_bytes(n: int = 4, count_known: bool = True, fingerprint: str | None = FP) -> bytes:
    out = io.BytesIO()
    with CodeWriter(out, "packed", 30, 10, n if count_known else None, fingerprint) as writer:
        writer.write(random_codes(n, 30, 10))
    return out.getvalue()


def with_crc(header: bytes) -> bytes:
    end = HEADER_SIZE - 4  # the CRC's offset
    return header[:end] + struct.pack("<I", zlib.crc32(header[:end])) + header[HEADER_SIZE:]


@pytest.mark.parametrize("data, message", [
    (packed_bytes()[:-5], "record count mismatch"),
    (packed_bytes() + b"\0" * 13, "record count mismatch"),
    (packed_bytes()[:40], "truncated codes header"),
    (packed_bytes(count_known=False)[:-5], "truncated"),
    (b"\x89DVAF" + packed_bytes()[5:], "not a codes file"),
    (with_crc(packed_bytes()[:8] + b"\x03\x00" + packed_bytes()[10:]), "version 3.*newer"),
    (with_crc(packed_bytes()[:16] + struct.pack("<I", 1) + packed_bytes()[20:]), "K <= 4096"),
    (with_crc(packed_bytes()[:20] + struct.pack("<I", 2) + packed_bytes()[24:]), "inconsistent"),
    (b"12a4\n", "digits"),
    (b"123\n12\n", "line 2: expected D=3 digits"),
    (b"1 2\n1 2 3\n", "line 2: expected D=2 whole numbers"),
], ids=["cut-record", "extra-record", "cut-header", "cut-stream", "magic", "future", "k", "group",
        "letter", "ragged", "ragged-numbers"])
def test_damaged_files_are_clear_errors(data, message):
    with pytest.raises(DVAEError, match=message):
        read_codes(io.BytesIO(data))


def test_every_flipped_header_byte_is_detected():
    data = packed_bytes()
    for position in range(HEADER_SIZE):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(DVAEError):
            read_codes(io.BytesIO(bytes(flipped)))


def test_pickled_indices_are_refused(tmp_path):
    np.save(tmp_path / "c.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DVAEError, match="not a valid .npy"):
        read_codes(tmp_path / "c.npy")


def spec_reader():
    """The reader in docs/CODES.md, run as written: it must not need dvae."""
    text = (REPO / "docs" / "CODES.md").read_text()
    source = re.search(r"```python\n((?:(?!```).)*def read_dvae_codes.*?)```", text, re.S).group(1)
    assert "dvae_cli" not in source
    namespace: dict = {}
    exec(source, namespace)
    return namespace["read_dvae_codes"]


@pytest.mark.parametrize("format, n, d, k, known", [
    ("packed", 300, 30, 10, True), ("packed", 0, 30, 10, True), ("packed", 40, 7, 300, True),
    ("packed", 40, 100, 2, False), ("onehot", 50, 30, 10, True), ("onehot", 9, 5, 13, False),
])
def test_a_file_read_with_only_the_spec(tmp_path, format, n, d, k, known):
    codes = random_codes(n, d, k)
    with open(tmp_path / "c", "wb") as f, CodeWriter(f, format, d, k, n if known else None, FP) as writer:
        writer.write(codes)
    indices, classes, fingerprint, shard = spec_reader()(tmp_path / "c")
    assert np.array_equal(indices.reshape(n, d), codes) and classes == k and fingerprint == FP.encode()
    assert shard is None


# ---- model -----------------------------------------------------------------------------------


def test_encode_is_deterministic_and_binarizes_like_training(loaded):
    images = fake_digits(30, seed=11)
    codes = encode(loaded.model, images)
    assert codes.shape == (30, 30) and codes.dtype == np.uint8 and codes.max() < 10
    assert np.array_equal(codes, encode(loaded.model, images))
    assert np.array_equal(codes, encode(loaded.model, (images / 255.0).reshape(30, 784)))
    assert np.array_equal(codes, encode(loaded.model, images >= 128))
    assert encode(loaded.model, np.zeros((0, 784), np.uint8)).shape == (0, 30)


def test_sampling_is_seeded(loaded):
    images = fake_digits(30, seed=11)
    first = encode(loaded.model, images, sample=True, seed=1)
    assert np.array_equal(first, encode(loaded.model, images, sample=True, seed=1))
    assert not np.array_equal(first, encode(loaded.model, images, sample=True, seed=2))


def test_decode_gives_bernoulli_means(loaded):
    means = decode(loaded.model, random_codes(7, 30, 10))
    assert means.shape == (7, 28, 28) and means.dtype == np.float32
    assert means.min() >= 0 and means.max() <= 1
    with pytest.raises(DVAEError, match=r"\[0, 10\)"):
        decode(loaded.model, np.full((1, 30), 10))


def test_encode_decode_encode_stability(loaded, record_property):
    """Not asserted equal: re-encoding a decoded, binarized image can pick other classes."""
    codes = encode(loaded.model, fake_digits(500, seed=5))
    again = encode(loaded.model, decode(loaded.model, codes) >= 0.5)
    per_variable, per_image = (codes == again).mean(), (codes == again).all(axis=1).mean()
    record_property("stable_variables", per_variable)
    record_property("stable_images", per_image)
    print(f"\nencode-decode-encode: {per_variable:.1%} of variables, {per_image:.1%} of images keep their code")
    assert per_variable > 0.5  # far above chance (1/K): decode and encode agree on what classes mean


def test_default_checkpoint(tmp_path, monkeypatch, tiny_run):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVAE_CKPT", raising=False)
    assert default_checkpoint() == pretrained_path("pretrained:best")  # a fresh install: the shipped model
    for name, mtime in (("old", 1_000), ("new", 2_000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "best.safetensors").write_bytes((tiny_run / "best.safetensors").read_bytes())
        os.utime(tmp_path / "runs" / name / "best.safetensors", (mtime, mtime))
    assert default_checkpoint() == Path("runs/new/best.safetensors")
    monkeypatch.setenv("DVAE_CKPT", str(tiny_run))
    assert default_checkpoint() == tiny_run / "best.safetensors"


# ---- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_cli_round_trip(tmp_path, imgs, tiny_run, loaded, format):
    result = cli("encode", imgs, "-o", tmp_path / "codes", "--format", format, "--ckpt", tiny_run, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 20 and summary["fingerprint"] == loaded.fingerprint
    codes = encode(loaded.model, np.load(imgs))
    assert np.array_equal(read_codes(tmp_path / "codes", latent_vars=30, classes=10).indices, codes)
    result = cli("decode", tmp_path / "codes", "-o", tmp_path / "out.npy", "--ckpt", tiny_run)
    assert result.exit_code == 0, result.stderr
    assert np.allclose(np.load(tmp_path / "out.npy"), decode(loaded.model, codes), atol=1e-6)


def test_cli_stdin_stdout_binarize_and_png(tmp_path, imgs, tiny_run, loaded):
    encoded = cli("encode", "-", "-o", "-", "--ckpt", tiny_run, input=imgs.read_bytes())
    assert encoded.exit_code == 0 and encoded.stdout_bytes.startswith(b"\x89DVAE")
    decoded = cli("decode", "-", "-o", "-", "--ckpt", tiny_run, "--binarize", input=encoded.stdout_bytes)
    assert decoded.exit_code == 0
    images = np.load(io.BytesIO(decoded.stdout_bytes))
    codes = encode(loaded.model, np.load(imgs))
    assert images.dtype == np.uint8 and np.array_equal(images, decode(loaded.model, codes) >= 0.5)
    assert cli("decode", "-", "-o", tmp_path / "grid.png", "--ckpt", tiny_run, input=encoded.stdout_bytes).exit_code == 0
    assert Image.open(tmp_path / "grid.png").size == (5 * 30 + 2, 4 * 30 + 2)  # 20 images: 5 columns, 4 rows, 2-pixel gaps


def test_cli_sample_is_the_seeded_gumbel_max(tmp_path, imgs, tiny_run, loaded):
    result = cli("encode", imgs, "-o", tmp_path / "s.txt", "--sample", "--seed", "3", "--ckpt", tiny_run)
    assert result.exit_code == 0, result.stderr
    expected = encode(loaded.model, np.load(imgs), sample=True, seed=3)
    assert np.array_equal(read_codes(tmp_path / "s.txt").indices, expected)


@pytest.mark.parametrize("n", [0, 1])
def test_cli_empty_and_single_image(tmp_path, tiny_run, n):
    np.save(tmp_path / "x.npy", fake_digits(n, seed=1))
    assert cli("encode", tmp_path / "x.npy", "-o", tmp_path / "c.bin", "--ckpt", tiny_run).exit_code == 0
    assert (tmp_path / "c.bin").stat().st_size == HEADER_SIZE + 13 * n
    assert cli("decode", tmp_path / "c.bin", "-o", tmp_path / "out.npy", "--ckpt", tiny_run).exit_code == 0
    assert np.load(tmp_path / "out.npy").shape == (n, 28, 28)


def assert_user_error(result, message: str, folder: Path | None = None) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert result.stderr.startswith("error:") and re.search(message, result.stderr.replace("\n", " "))
    assert "Traceback" not in result.stderr and result.stdout_bytes == b""
    if folder is not None:  # nothing half-written: no output, no temporary file
        assert sorted(p.name for p in folder.iterdir()) == ["in"]


@pytest.mark.parametrize("array, message", [
    (np.full((3, 784), np.nan, np.float32), "value nan"),
    (np.zeros((3, 5)), "shape"),
    (np.zeros((3, 784), np.int32), "dtype int32"),
    (np.array([[1, None]], dtype=object), "object arrays"),
])
def test_cli_bad_images_leave_no_output(tmp_path, tiny_run, array, message):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", array, allow_pickle=True)
    result = cli("encode", tmp_path / "in" / "x.npy", "-o", tmp_path / "codes.bin", "--ckpt", tiny_run)
    assert_user_error(result, message, tmp_path)


def test_cli_image_error_after_the_first_chunk_leaves_no_output(tmp_path, tiny_run):
    (tmp_path / "in").mkdir()
    images = np.zeros((50, 784), np.float32)
    images[45, 0] = 7.0
    np.save(tmp_path / "in" / "x.npy", images)
    result = cli("encode", tmp_path / "in" / "x.npy", "-o", tmp_path / "codes.bin", "--ckpt", tiny_run,
                 "--batch-size", "10")
    assert_user_error(result, "image 45 has the value 7.0", tmp_path)


def test_cli_decode_checks_d_k_and_fingerprint(tmp_path, tiny_run):
    write_codes(tmp_path / "d20.bin", random_codes(3, 20, 10), 10)
    write_codes(tmp_path / "k12.bin", random_codes(3, 30, 12), 12)
    write_codes(tmp_path / "other.bin", random_codes(3, 30, 10), 10, fingerprint=FP)
    out = tmp_path / "out.npy"
    assert_user_error(cli("decode", tmp_path / "d20.bin", "-o", out, "--ckpt", tiny_run, "--force"), "D=20")
    assert_user_error(cli("decode", tmp_path / "k12.bin", "-o", out, "--ckpt", tiny_run, "--force"), "K=12")
    assert_user_error(cli("decode", tmp_path / "other.bin", "-o", out, "--ckpt", tiny_run), "another model.*--force")
    assert not out.exists()
    assert cli("decode", tmp_path / "other.bin", "-o", out, "--ckpt", tiny_run, "--force").exit_code == 0


@pytest.mark.parametrize("data, message", [
    (packed_bytes()[:-3], "record count mismatch"),
    (b"\x89DVAX" + packed_bytes()[5:], "not a codes file"),
    (with_crc(packed_bytes()[:8] + b"\x07\x00" + packed_bytes()[10:]), "version 7"),
    (packed_bytes()[:30] + b"\x01" + packed_bytes()[31:], "checksum"),
], ids=["truncated", "magic", "future", "flipped"])
def test_cli_decode_damaged_files(tmp_path, tiny_run, data, message):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.bin").write_bytes(data)
    result = cli("decode", tmp_path / "in" / "c.bin", "-o", tmp_path / "out.npy", "--ckpt", tiny_run)
    assert_user_error(result, message, tmp_path)


def test_cli_usage_errors(tmp_path, imgs, tiny_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVAE_CKPT", raising=False)
    fallback = cli("encode", imgs, "-o", "c.bin")  # no --ckpt, no $DVAE_CKPT, no ./runs: the shipped model
    assert fallback.exit_code == 0 and "pretrained/best.safetensors" in fallback.stderr
    (tmp_path / "c.bin").unlink()
    assert_user_error(cli("encode", imgs, "-o", "c.bin", "--ckpt", "pretrained:nope"), "pretrained:best")
    assert_user_error(cli("encode", imgs, "-o", "-", "--json", "--ckpt", tiny_run), "--json")
    assert_user_error(cli("decode", "c.bin", "-o", "out.bmp", "--ckpt", tiny_run), ".npy or .png")
    assert_user_error(cli("decode", "missing.bin", "-o", "out.npy", "--ckpt", tiny_run), "No such file")
    assert_user_error(cli("decode", tmp_path, "-o", "out.npy", "--ckpt", tiny_run), "Is a directory")
    assert_user_error(cli("encode", imgs, "-o", tmp_path, "--ckpt", tiny_run), "is a folder")
    monkeypatch.setenv("DVAE_CKPT", str(tiny_run))
    assert cli("encode", imgs, "-o", "c.bin").exit_code == 0


def test_shell_pipelines(tmp_path, tiny_run, mnist_dir, loaded):
    """The issue's pipelines through a real shell, run side by side (each dvae start imports torch)."""
    images = fake_digits(3000, seed=2)
    np.save(tmp_path / "imgs.npy", images)
    (tmp_path / "t10k").write_bytes(gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()))
    pipelines = {
        "decode": f"{DVAE} encode imgs.npy -o - | {DVAE} decode - -o out.npy",
        # its status is dvae's: `sort` may end on SIGPIPE once `head` has read enough, as `| head` intends
        "count": f"{DVAE} encode imgs.npy -o - --format text | sort | uniq -c | sort -rn | head"
                 '; exit "${PIPESTATUS[0]}"',
        "stdin": f"cat imgs.npy | {DVAE} encode - -o codes.bin",
        "mnist": f"{DVAE} encode t10k -o t10k.bin && {DVAE} decode t10k.bin -o grid.png",
    }
    env = {**os.environ, "DVAE_CKPT": str(tiny_run)}
    running = {name: subprocess.Popen(["bash", "-c", "set -o pipefail; " + line], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, line in pipelines.items()}
    done = {name: (p.wait(timeout=300), *p.communicate()) for name, p in running.items()}
    for name, (status, _, err) in done.items():
        assert b"Traceback" not in err, (name, err)
        assert status == 0, (name, status, err)
    codes = encode(loaded.model, images)
    assert np.allclose(np.load(tmp_path / "out.npy"), decode(loaded.model, codes), atol=1e-6)
    top = done["count"][1].decode().splitlines()
    lines, counts = np.unique(["".join(map(str, c)) for c in codes], return_counts=True)
    assert len(top) == min(10, len(lines)) and int(top[0].split()[0]) == counts.max()
    assert np.array_equal(read_codes(tmp_path / "codes.bin").indices, codes)
    assert len(read_codes(tmp_path / "t10k.bin").indices) == 300
    assert Image.open(tmp_path / "grid.png").size == (18 * 30 + 2, 17 * 30 + 2)  # 300 images: 18 columns, 17 rows


def test_a_reader_that_stops_early_ends_encode_quietly(tmp_path, tiny_run, monkeypatch, capsys):
    """`dvae encode ... -o - | head`: the closed pipe ends dvae quietly (exit 1, no traceback)."""
    np.save(tmp_path / "x.npy", fake_digits(10, seed=0))
    read_end, write_end = os.pipe()
    os.close(read_end)
    monkeypatch.setattr(sys, "stdout", open(write_end, "w"))
    with pytest.raises(SystemExit) as exit:
        app(["encode", str(tmp_path / "x.npy"), "-o", "-", "--format", "text", "--ckpt", str(tiny_run), "-q"])
    assert exit.value.code == 1 and capsys.readouterr().err == ""


# ---- text codes as docs/CODES.md reads them --------------------------------------------------


@pytest.mark.parametrize("data", [
    b"594\n012\n",
    b"594\r\n012\r\n",  # CRLF
    b"594  \n012\t\n",  # trailing whitespace
    b"594\n012\n\n \n",  # blank lines at the end
    b" 594\n012",  # leading whitespace, no final line end
    b"5 9 4\n0 1 2\n",  # whitespace-separated digits
    b"5\t9  4 \r\n 0 1\t2\r\n",
], ids=["plain", "crlf", "trailing", "blank-end", "leading", "separated", "mixed"])
@pytest.mark.parametrize("told", [False, True])
def test_text_codes_read_as_the_spec_says(data, told):
    codes = read_codes(io.BytesIO(data), *((3, 10) if told else (None, None)))
    assert codes.format == "text" and codes.indices.tolist() == [[5, 9, 4], [0, 1, 2]]


def test_text_numbers_with_crlf_and_many_classes():
    codes = read_codes(io.BytesIO(b"0012 4095 0007\r\n1 2 3  \r\n"), 3, 4096)
    assert codes.indices.tolist() == [[12, 4095, 7], [1, 2, 3]]


@pytest.mark.parametrize("data, told, message", [
    (b"594\r\n0123\r\n", None, "line 2: expected D=3 digits, found 4"),
    (b"5943\r\n", 3, "line 1: expected D=3 digits, found 4"),  # D is the checkpoint's, not the line's length
    (b"594\n\n012\n", None, "line 2: expected D=3 digits, found 0"),
    (b"594\n5x4\n", None, "line 2: expected D=3 digits 0-9"),
    (b"5 9 4\n0 1\n", None, "line 2: expected D=3 whole numbers, found 2"),
    (b"5 9 4\n0 -1 2\n", None, "line 2: expected D=3 whole numbers"),
    (b"1 2 3\n", 30, "line 1: expected D=30"),
])
def test_text_errors_name_the_line_and_d(data, told, message):
    with pytest.raises(DVAEError, match=message):
        read_codes(io.BytesIO(data), told, 10 if told else None)


def test_cli_decodes_crlf_text_codes(tmp_path, imgs, tiny_run, loaded):
    assert cli("encode", imgs, "-o", tmp_path / "c.txt", "--ckpt", tiny_run, "-q").exit_code == 0
    (tmp_path / "crlf.txt").write_bytes((tmp_path / "c.txt").read_bytes().replace(b"\n", b" \r\n"))
    result = cli("decode", tmp_path / "crlf.txt", "-o", tmp_path / "out.npy", "--ckpt", tiny_run, "-q")
    assert result.exit_code == 0, result.output
    codes = encode(loaded.model, np.load(imgs))
    assert np.allclose(np.load(tmp_path / "out.npy"), decode(loaded.model, codes), atol=1e-6)
