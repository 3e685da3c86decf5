import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from dvae_cli import TrainConfig, load_checkpoint, resume, train
from dvae_cli.errors import DVAEError
from dvae_cli.methods.dtp import DTP


def _config(mnist_dir, **kw) -> TrainConfig:
    return TrainConfig(**{"method": "dtp", "epochs": 3, "data_dir": str(mnist_dir), "device": "cpu",
                          "train_limit": 300, **kw})


def _weights(run):
    return load_file(str(run / "last.safetensors"))


def test_run_folder_contents(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "state.safetensors"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["train"]["seed"] == 0 and config["train"]["hparams"]["dtp_target"] == "prob"
    assert {"dvae_version", "torch_version", "device"} <= set(config["environment"])
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in ("train_log_lik", "valid_log_lik", "valid_kl", "valid_neg_elbo", "beta", "diversity", "seconds"):
        assert key in metrics[0]
    assert 1 <= metrics[-1]["valid_classes_used"] <= 10 and 0.1 <= metrics[-1]["valid_mean_max_prob"] <= 1
    best = load_checkpoint(tiny_run)
    assert best.metrics["valid_neg_elbo"] == min(m["valid_neg_elbo"] for m in metrics)


@pytest.mark.parametrize("method", ["dtp", "gumbel", "st-gumbel"])
def test_resume_equals_uninterrupted(tmp_path, mnist_dir, method):
    whole = train(_config(mnist_dir, method=method), tmp_path / "whole")
    part = train(_config(mnist_dir, method=method, epochs=1), tmp_path / "part")
    resume(part, epochs=3)
    a, b = _weights(whole), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]
    assert strip(lines(whole)) == strip(lines(part))


def test_same_seed_same_weights_other_seed_differs(tmp_path, mnist_dir):
    a = _weights(train(_config(mnist_dir, epochs=1), tmp_path / "a"))
    b = _weights(train(_config(mnist_dir, epochs=1), tmp_path / "b"))
    c = _weights(train(_config(mnist_dir, epochs=1, seed=1), tmp_path / "c"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_refuses_to_overwrite_a_run(tiny_run, mnist_dir):
    with pytest.raises(DVAEError, match="already holds a run"):
        train(_config(mnist_dir), tiny_run)


def test_nan_stops_with_clear_error_and_keeps_last_good(tmp_path, mnist_dir, monkeypatch):
    run = train(_config(mnist_dir, epochs=1), tmp_path / "run")
    before = _weights(run)
    monkeypatch.setattr(DTP, "schedule", lambda self, epoch: {"beta": float("nan")})
    with pytest.raises(DVAEError, match="diverged in epoch 2.*epoch 1"):
        resume(run, epochs=2)
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_ctrl_c_keeps_last_epoch_and_resume_matches(tmp_path, mnist_dir):
    """SIGINT mid-run: exit 130, complete epochs kept, --resume ends equal to an uninterrupted run."""
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "dvae_cli", "train", "--method", "dtp", "--epochs", "100",
           "--train-limit", "600", "--device", "cpu", "--data-dir", str(mnist_dir), "--out", str(out)]
    # a shell's background job inherits SIGINT ignored; the child must get Ctrl-C as a terminal would
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=restore_sigint)
    deadline = time.time() + 120
    while not (out / "state.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"--resume {out}" in " ".join(err.split()) and "Traceback" not in err
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 100
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    result = subprocess.run([sys.executable, "-m", "dvae_cli", "train", "--resume", str(out), "--epochs",
                             str(done + 1), "--data-dir", str(mnist_dir), "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    whole = train(_config(mnist_dir, epochs=done + 1, train_limit=600), tmp_path / "whole")
    a, b = _weights(whole), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_keeps_last_epoch_and_resumes(tmp_path, mnist_dir):
    """SIGTERM (what `timeout`, schedulers and `docker stop` send) mid-run, as Ctrl-C: exit 143,
    one line, complete epochs kept, no temporary file, and --resume continues."""
    out = tmp_path / "terminated"
    cmd = [sys.executable, "-m", "dvae_cli", "train", "--method", "dtp", "--epochs", "100",
           "--train-limit", "300", "--device", "cpu", "--data-dir", str(mnist_dir), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "state.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and f"--resume {out}" in " ".join(err.split()) and "Traceback" not in err
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 100 and load_checkpoint(out / "last.safetensors").epoch == done
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    resume(out, epochs=done + 1)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == done + 1
