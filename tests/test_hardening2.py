"""Nothing read can hurt, round two (issue 27): bounded reads that never reserve their ceiling, a
closed stdin, one rule for seeds, strings from files escaped and capped, every file of a data set
protected from outputs, named data sets verified, train and test sizes checked before training."""

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

from conftest import idx_bytes
from dvae_cli import data, fileio
from dvae_cli.codes import files, read_codes, write_codes
from dvae_cli.errors import DVAEError
from dvae_cli.seeds import check_seed
from dvae_cli.terminal import MAX_SHOWN, shown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
LIMITED = "ulimit -v 4000000; "  # 4 GB of address space: torch's import needs about 3.5


def dvae(*args, stdin=None, env=ENV, timeout=120, limit=False, cwd=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dvae_cli", *map(str, args)]
    if limit:
        command = ["bash", "-c", LIMITED + " ".join(f"'{a}'" for a in command)]
    return subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


# 1. memory: reads grow with what is there -------------------------------------------------------

def test_gzip_bomb_idx_stops_just_past_its_header(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (100, 28, 28))
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(header + bytes(100 * 784))
        for _ in range(200):  # 200 MiB of zeros past what the header promises
            f.write(bytes(1 << 20))
    with pytest.raises(DVAEError, match="trailing bytes"):
        data.read_idx(bomb, kind="images")


def test_idx_header_over_the_ceiling_is_refused_unread(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 4096, 4096))
    (tmp_path / "huge").write_bytes(header + bytes(10))
    with pytest.raises(DVAEError, match="ceiling"):
        data.read_idx(tmp_path / "huge", kind="images")


def test_codes_file_read_is_not_reserved(tmp_path):
    import tracemalloc

    path = tmp_path / "c.bin"
    write_codes(path, np.zeros((3, 4), np.int64), 10)
    tracemalloc.start()
    try:
        assert read_codes(path).indices.shape == (3, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * files.READ_BLOCK  # not the 4 GiB ceiling


def test_stream_stops_at_the_header_promise():
    buffer = io.BytesIO()
    write_codes(buffer, np.ones((5, 3), np.int64), 4)
    stream = io.BytesIO(buffer.getvalue() + bytes(5 * files.READ_BLOCK))
    with pytest.raises(DVAEError, match="record count mismatch"):
        read_codes(stream)
    assert stream.tell() <= len(buffer.getvalue()) + 2 * files.READ_BLOCK


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    np.save(folder / "x.npy", np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8))
    result = dvae("encode", folder / "x.npy", "-o", folder / "x.bin", "--ckpt", "pretrained:best")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("args", [
    ("decode", "x.bin", "-o", "y.npy", "--ckpt", "pretrained:best"),
    ("encode", "x.npy", "-o", "z.bin", "--ckpt", "pretrained:best"),
    ("index", "x.bin", "-o", "x.dvaeidx"),
])
def test_commands_work_under_a_4gb_address_space(small, args):
    result = dvae(*args, limit=True, cwd=small)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# 2. closed stdin, seeds ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("encode", "-", "-o", "out.bin"), ("decode", "-", "-o", "out.npy"), ("search", "x.bin", "-"),
    ("heatmap", "--input", "-"), ("cat", "-", "-o", "out.bin"),
])
def test_closed_stdin_is_one_line(small, args):
    command = [sys.executable, "-m", "dvae_cli", *args, "--ckpt", "pretrained:best"] if args[0] in (
        "encode", "decode", "heatmap") else [sys.executable, "-m", "dvae_cli", *args]
    result = subprocess.run(["bash", "-c", " ".join(command) + " <&-"], capture_output=True, text=True,
                            env=ENV, cwd=small, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "stdin is closed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("seed", [str(2**64), str(2**63), "-1", "-9223372036854775809"])
@pytest.mark.parametrize("command", [("eval", "--limit", "5"), ("samples", "-o", "s.png"),
                                     ("gradients",), ("encode", "x.npy", "-o", "s.bin", "--sample")])
def test_seeds_out_of_range_are_usage_errors(small, seed, command):
    result = dvae(*command, "--seed", seed, "--ckpt", "pretrained:best", cwd=small)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--seed" in result.stderr


@pytest.mark.parametrize("value", [-1, 2**63, 2**64, True, 1.0, "3"])
def test_one_seed_rule_in_the_library(value):
    with pytest.raises(DVAEError, match="2\\^63 - 1"):
        check_seed(value)
    assert check_seed(2**63 - 1) == 2**63 - 1


# 3. strings from files ----------------------------------------------------------------------------

def test_shown_escapes_and_caps():
    text = "\x1b]0;pwned\x07\u202e" + "x" * 10_000
    out = shown(text)
    assert "\x1b" not in out and "\u202e" not in out and out.endswith("...")
    assert len(out) < MAX_SHOWN + 40


def _doctored(tmp_path, **changes):
    """pretrained:best with metadata fields replaced."""
    from dvae_cli.pretrained import pretrained_path

    source = pretrained_path("pretrained:best")
    with safetensors.safe_open(str(source), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    for key, change in changes.items():
        metadata[key] = change(metadata.get(key, "{}"))
    path = tmp_path / "doctored.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def _set(key, value):
    return lambda text: json.dumps({**json.loads(text), key: value})


HOSTILE = "\x1b[2J\u202e" + "A" * 1_000_000


@pytest.mark.parametrize("changes", [
    {"method": lambda _: HOSTILE},
    {"data": _set("name", HOSTILE)},
    {"model": _set("activation", HOSTILE)},
    {"hparams": _set(HOSTILE, 1)},
])
def test_unknown_names_in_metadata_are_refused_in_one_short_line(tmp_path, changes):
    path = _doctored(tmp_path, **changes)
    for args in (("eval", "--ckpt", path, "--limit", "5"), ("heatmap", "--ckpt", path),
                 ("samples", "--ckpt", path, "-o", tmp_path / "s.png")):
        result = dvae(*args)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "\x1b" not in result.stderr and "\u202e" not in result.stderr
        assert len(result.stderr) < 5000 and len(result.stdout) < 5000


# 4. outputs onto a data set's files ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                                  "train-images-idx3-ubyte"])
@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_output_onto_any_file_of_the_data_set_is_refused(tmp_path, mnist_dir, name, link):
    folder = tmp_path / "data"
    folder.mkdir()
    for file in mnist_dir.iterdir():
        os.link(file, folder / file.name)
    before = (folder / name).read_bytes()
    out = tmp_path / "fig.png"
    (os.symlink if link == "symbolic" else os.link)(folder / name, out)
    with pytest.raises(DVAEError, match="destroy the data set"):
        fileio.check_output(out, [], data.dataset_files(folder))
    env = {**ENV, "DVAE_DATA_DIR": str(folder)}
    for args in (("samples", "-o", out), ("recon", "-o", out, "--split", "test")):
        result = dvae(*args, "--ckpt", "pretrained:best", env=env)
        assert result.returncode == 1 and "writing it would destroy the" in result.stderr, result.stderr
    assert (folder / name).read_bytes() == before


# 5. named data sets verified ----------------------------------------------------------------------

def test_mnist_files_are_not_fashion_mnist(real_mnist, tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_UNVERIFIED)
    with pytest.raises(DVAEError, match="unverified-data|unverified_data"):
        data.verify_files(data.DataConfig("fashion-mnist"), real_mnist)
    data.verify_files(data.DataConfig("mnist"), real_mnist)  # the published files pass
    env = {k: v for k, v in ENV.items() if k != data.ENV_UNVERIFIED}
    result = dvae("train", "--dataset", "kmnist", "--data-dir", real_mnist, "--epochs", "1", "-o", tmp_path / "r",
                  env=env)
    assert result.returncode == 1 and "--unverified-data" in result.stderr
    assert not (tmp_path / "r").exists()


def test_unverified_files_train_only_when_accepted_and_are_recorded(mnist_dir, tmp_path, monkeypatch):
    from dvae_cli import TrainConfig, train

    monkeypatch.delenv(data.ENV_UNVERIFIED)
    with pytest.raises(DVAEError, match="not MNIST's published"):
        train(TrainConfig(epochs=1, train_limit=50, data_dir=str(mnist_dir), device="cpu"), tmp_path / "a")
    out = train(TrainConfig(epochs=1, train_limit=50, data_dir=str(mnist_dir), device="cpu", unverified_data=True),
                tmp_path / "b")
    assert json.loads((out / "config.json").read_text())["train"]["unverified_data"] is True


# 6. sizes checked before training -----------------------------------------------------------------

def test_npy_train_and_test_of_different_sizes_are_refused_up_front(tmp_path):
    np.save(tmp_path / "train.npy", np.zeros((20, 12, 12), np.uint8))
    np.save(tmp_path / "test.npy", np.zeros((5, 10, 12), np.uint8))
    with pytest.raises(DVAEError, match="one size"):
        data.describe("npy", tmp_path, valid_size=5)
    result = dvae("train", "--dataset", "npy", "--data-dir", tmp_path, "--epochs", "1", "-o", tmp_path / "r")
    assert result.returncode == 1 and "one size" in result.stderr
    assert not (tmp_path / "r").exists()


def test_idx_train_and_test_of_different_sizes_are_refused_up_front(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((20, 28, 28), np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 14, 28), np.uint8)))
    with pytest.raises(DVAEError, match="one size"):
        data.describe("mnist", tmp_path)
