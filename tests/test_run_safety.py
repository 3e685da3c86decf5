"""One writer per run folder, no dead ends (issue 11, part B): the lock in train and resume, runs
stopped before their first epoch, impossible method settings and devices refused up front."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from dvae_cli import TrainConfig, resume, train
from dvae_cli.cli import app
from dvae_cli.distributed import resolve_device
from dvae_cli.errors import DVAEError
from dvae_cli.methods import METHODS, make_method
from dvae_cli.model import ModelConfig
from dvae_cli.progress import Reporter
from dvae_cli.runlock import LOCK, run_lock


class Lines(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


def _config(mnist_dir, **kw) -> TrainConfig:
    return TrainConfig(**{"method": "dtp", "epochs": 1, "data_dir": str(mnist_dir), "device": "cpu",
                          "train_limit": 100, **kw})


def _train_args(mnist_dir, out, *extra: str) -> list[str]:
    return ["train", "--epochs", "1", "--train-limit", "100", "--device", "cpu", "--data-dir", str(mnist_dir),
            "--out", str(out), "-q", *extra]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


# ---- the lock ----------------------------------------------------------------------------------


def test_a_second_train_into_a_folder_in_use_is_refused(tmp_path, mnist_dir):
    """While another process holds the folder (here: this one), train and resume refuse it and touch nothing."""
    out = tmp_path / "run"
    with run_lock(out):
        message = one_line_error(cli(*_train_args(mnist_dir, out)))
        assert f"in use by process {os.getpid()} on {socket.gethostname()}" in message
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    run = train(_config(mnist_dir), tmp_path / "done")
    with run_lock(run):
        with pytest.raises(DVAEError, match=f"in use by process {os.getpid()}"):
            resume(run, epochs=2)
    assert not (run / LOCK).exists() and len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_two_trains_at_once_one_wins(tmp_path, mnist_dir):
    """Two real `dvae train --out X` started together: exactly one trains, the other exits 1 naming it."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dvae_cli", *_train_args(mnist_dir, out, "--batch-size", "10")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    winner = next(p.pid for p, (code, _, _) in zip(procs, results) if code == 0)
    assert f"in use by process {winner} on {socket.gethostname()}" in " ".join(loser.split())
    assert "Traceback" not in loser
    assert not (out / LOCK).exists() and (out / "state.safetensors").is_file()


def test_a_dead_owners_lock_is_taken_over_with_a_message(tmp_path, mnist_dir):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "since": "then"}))
    reporter = Lines()
    train(_config(mnist_dir), out, reporter)
    assert any(f"took over the lock of process {dead}" in line for line in reporter.lines), reporter.lines
    assert not (out / LOCK).exists() and (out / "state.safetensors").is_file()


def test_out_onto_a_file_or_an_unwritable_place_is_one_line(tmp_path, mnist_dir):
    (tmp_path / "file").write_text("keep")
    assert "not a folder" in one_line_error(cli(*_train_args(mnist_dir, tmp_path / "file")))
    assert "cannot create the run folder" in one_line_error(cli(*_train_args(mnist_dir, tmp_path / "file" / "run")))
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_into_a_read_only_folder_is_one_line(tmp_path, mnist_dir):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    try:
        assert "cannot create the run folder" in one_line_error(cli(*_train_args(mnist_dir, locked / "run")))
    finally:
        locked.chmod(0o700)


def library_spelling(message: str) -> str:
    """A CLI message as the library words it: '--lr-decay must be' -> 'lr_decay must be'."""
    return re.sub(r"--([a-z0-9-]+)", lambda m: m.group(1).replace("-", "_"), message)


# ---- runs stopped before their first epoch -------------------------------------------------------


def test_ctrl_c_before_the_first_epoch_leaves_no_dead_end(tmp_path, mnist_dir, monkeypatch):
    out = tmp_path / "run"

    def interrupted(*args):
        assert (out / "config.json").is_file()  # the run had started
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(importlib.import_module("dvae_cli.train"), "train_epoch", interrupted)
        result = cli(*_train_args(mnist_dir, out))
    message = one_line_error(result, 130)
    assert "--resume" not in message and "nothing to resume" in message and "same command" in message
    assert not out.exists()  # nothing kept, the folder it made removed
    result = cli(*_train_args(mnist_dir, out))  # the same command starts again
    assert result.exit_code == 0, result.output
    assert (out / "state.safetensors").is_file()


def test_a_run_killed_before_its_first_epoch_is_started_over(tmp_path, mnist_dir):
    """kill -9 leaves config.json without an epoch: --resume says so, a new run takes the folder."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"train": _config(mnist_dir).to_dict(), "environment": {}}))
    with pytest.raises(DVAEError, match="no complete epoch to resume from.*start a new run"):
        resume(out)
    reporter = Lines()
    train(_config(mnist_dir), out, reporter)
    assert any("starting over" in line for line in reporter.lines)
    assert json.loads((out / "config.json").read_text())["environment"]["device"] == "cpu"


def test_diverging_in_the_first_epoch_says_nothing_is_kept(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(METHODS["dtp"], "schedule", lambda self, epoch: {"beta": float("nan")})
    with pytest.raises(DVAEError, match="diverged in epoch 1.*no epoch completed") as error:
        train(_config(mnist_dir, train_limit=200), tmp_path / "run")  # the second step sees the first's NaN
    assert "epoch 0" not in str(error.value)
    assert not (tmp_path / "run").exists()


# ---- impossible settings ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--method", "gumbel", "--tau0", "0", "--tau-min", "0"],
    ["--method", "gumbel", "--tau-min", "-1"],
    ["--method", "gumbel", "--anneal-rate", "-0.1"],
    ["--method", "gumbel", "--lr-decay", "0"],
    ["--method", "st-gumbel", "--lr-decay", "1.5"],
    ["--method", "gumbel", "--tau0", "nan"],
    ["--method", "dtp", "--beta-max", "-1"],
    ["--method", "dtp", "--beta-warmup", "-2"],
    ["--method", "dtp", "--diversity", "-1"],
    ["--method", "dtp", "--diversity", "inf"],
    ["--method", "dtp", "--diversity-warmup", "-1"],
    ["--method", "rloo", "--samples", "1"],
    ["--method", "reinmax", "--reinmax-tau", "0"],
], ids=lambda a: " ".join(a[1:]))
def test_impossible_method_settings_are_usage_errors(tmp_path, args):
    """Exit 2 from the flag's type, before any data is looked for (the data folder does not exist)."""
    result = cli("train", *args, "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize("method, hparams, message", [
    ("gumbel", {"tau0": 0.0, "tau_min": 0.0}, "--tau0 must be greater than 0"),
    ("gumbel", {"lr_decay": -1.0}, "--lr-decay must be greater than 0"),
    ("gumbel", {"lr_decay": 2.0}, "--lr-decay must be <= 1"),
    ("gumbel", {"anneal_rate": float("nan")}, "--anneal-rate must be a finite number"),
    ("dtp", {"beta_max": -0.5}, "--beta-max must be >= 0"),
    ("rloo", {"samples": 1}, "--samples must be >= 2"),
    ("reinmax", {"reinmax_tau": -1.0}, "--reinmax-tau must be greater than 0"),
    ("st", {"diversity": -1.0}, "--diversity must be >= 0"),
    ("gumbel", {"tau0": "hot"}, "--tau0 must be a number"),
])
def test_the_library_checks_the_same_ranges(tmp_path, method, hparams, message):
    message = library_spelling(message)  # the library names the setting, the CLI its flag
    with pytest.raises(DVAEError, match=message):
        make_method(method, hparams)
    with pytest.raises(DVAEError, match=message):  # before the folder is made or any data is read
        train(TrainConfig(method=method, hparams=hparams, data_dir=str(tmp_path / "nowhere")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_default_lies_in_its_range():
    for method in METHODS:
        make_method(method)


# ---- devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("cuda", "no CUDA device"), ("cuda:0", "--device cuda:0: no CUDA device"), ("cuda:7", "cuda:7: no CUDA"),
    ("mps", "MPS is not available"), ("cuda:x", "unknown device"), ("gpu", "unknown device"), ("cpu:0", "unknown"),
])
def test_a_missing_device_is_a_clear_error(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DVAEError, match=library_spelling(message)):
        resolve_device(name)


def test_a_cuda_index_beyond_the_machines_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DVAEError, match="cuda:7: this machine has 1 CUDA device"):
        resolve_device("cuda:7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_a_missing_cuda_index_is_one_line(tmp_path, mnist_dir):
    result = cli("train", "--device", "cuda:0", "--data-dir", mnist_dir, "--out", tmp_path / "run")
    assert "--device cuda:0: no CUDA device" in one_line_error(result)
    assert not (tmp_path / "run").exists()


# ---- resume checks what it resumes ---------------------------------------------------------------


def test_resume_refuses_another_runs_state_and_cutting_epochs_back(tmp_path, mnist_dir):
    base = TrainConfig(method="st", epochs=2, train_limit=100, data_dir=str(mnist_dir), device="cpu",
                       model=ModelConfig(latent_vars=3, classes=4, hidden=8))
    mine = train(base, tmp_path / "mine")
    other = train(dataclasses.replace(base, method="gumbel", epochs=1, hparams={}), tmp_path / "other")
    result = cli("train", "--resume", mine, "--epochs", 1)
    message = one_line_error(result, 1)
    assert "--epochs 1 is below the 2 epochs" in message
    (mine / "state.safetensors").write_bytes((other / "state.safetensors").read_bytes())
    with pytest.raises(DVAEError, match="state.safetensors: the training state of another run"):
        resume(mine, epochs=3)


def test_a_figure_over_the_data_sets_own_file_is_refused(tmp_path, mnist_dir, tiny_run):
    link = tmp_path / "fig.png"
    link.symlink_to(mnist_dir / "t10k-images-idx3-ubyte.gz")
    before = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    result = cli("recon", tiny_run, "--split", "test", "-o", link, "--data-dir", mnist_dir, "-n", 2)
    assert result.exit_code == 1 and "writing it would destroy the" in " ".join(result.output.split())
    assert (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes() == before


def test_run_records_that_are_not_utf8_or_not_records_are_one_line_errors(tmp_path, tiny_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n\xff\xfe\n')
    assert "not UTF-8" in one_line_error(cli("plot", run, "-o", tmp_path / "c.png"))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    assert "corrupt metrics" in one_line_error(cli("plot", run, "-o", tmp_path / "c.png"))
    (run / "config.json").write_bytes(b"\xff" * 10)
    assert "not UTF-8" in one_line_error(cli("train", "--resume", run))


def test_empty_inputs_and_meaningless_combinations_say_so(tmp_path, tiny_run):
    import numpy as np

    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    message = one_line_error(cli("heatmap", tiny_run, "--mean", "--input", tmp_path / "empty.npy"))
    assert "has no images" in message and "--index" not in message
    np.save(tmp_path / "labels.npy", np.zeros((3, 2), np.int64))
    assert "1-D array of integers" in one_line_error(cli(
        "search", tmp_path / "empty.npy", tmp_path / "empty.npy", "--eval", "--db-labels", tmp_path / "labels.npy",
        "--query-labels", tmp_path / "labels.npy", "--ckpt", tiny_run))
    assert "--eval prints precision" in one_line_error(cli(
        "search", tmp_path / "empty.npy", tmp_path / "empty.npy", "--eval", "-o", tmp_path / "r.npy"))
    result = cli("train", "--epochs", "0")  # a usage error (exit 2), before anything is made
    assert result.exit_code == 2 and "greater than or equal to 1" in result.output
