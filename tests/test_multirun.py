"""Several runs trained as one batched computation (multirun.py, `dvae train --seeds`): each run's
folder is a single run's, its numbers are those of training it alone, and stopping and resuming
work as for one run."""

import io
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dvae_cli import TrainConfig, load_checkpoint, resume, train
from dvae_cli.checkpoint import load_state
from dvae_cli.cli import app
from dvae_cli.errors import DVAEError
from dvae_cli.methods import PresetNoise
from dvae_cli.methods.gumbel import Gumbel
from dvae_cli.progress import Plain
from dvae_cli.multirun import resume_group, train_seeds, train_together
from dvae_cli.runfolder import default_checkpoint, group_runs

runner = CliRunner()
FILES = {"config.json", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.safetensors"}


def _config(mnist_dir, **kw) -> TrainConfig:
    return TrainConfig(**{"method": "dtp", "epochs": 2, "data_dir": str(mnist_dir), "device": "cpu",
                          "train_limit": 300, **kw})


def _metrics(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_close_runs(a, b, weight_tol: float) -> None:
    """Same epochs and schedule, metrics to 1e-3 relative, weights to `weight_tol`."""
    ma, mb = _metrics(a), _metrics(b)
    assert [m.keys() for m in ma] == [m.keys() for m in mb]
    for x, y in zip(ma, mb):
        assert x == pytest.approx(y, rel=1e-3, abs=1e-6)
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=weight_tol) for k in wa)


# Adam turns a rounding-sized difference in a near-zero gradient into an lr-sized step; RLOO's
# score-function gradients have many of those, the others few (measured: 3e-6 against 6e-4).
@pytest.mark.parametrize("method,weight_tol", [("dtp", 2e-5), ("rloo", 2e-3), ("gumbel-rao", 2e-5)])
def test_runs_trained_together_equal_runs_trained_alone(tmp_path, mnist_dir, method, weight_tol):
    config = _config(mnist_dir, method=method)
    together = train_seeds(config, [0, 1], tmp_path / "together")
    assert together == [tmp_path / "together" / "seed-0", tmp_path / "together" / "seed-1"]
    alone = train(_config(mnist_dir, method=method, seed=1), tmp_path / "alone")  # the second of the stack
    _assert_close_runs(together[1], alone, weight_tol)


# indecater's encoder gradient is a sum of pi-weighted log-likelihoods, like RLOO's score-function terms: its
# near-zero coordinates take Adam's lr-sized steps from rounding (measured 4e-4 on the encoder, 2e-6 elsewhere)
@pytest.mark.parametrize("method,weight_tol", [("reinmax-cv", 2e-5), ("decoupled-st", 2e-5), ("indecater", 2e-3)])
def test_new_estimators_trained_together_equal_trained_alone(tmp_path, mnist_dir, method, weight_tol):
    config = _config(mnist_dir, method=method, epochs=1)
    together = train_seeds(config, [0, 1], tmp_path / "together")
    alone = train(_config(mnist_dir, method=method, epochs=1, seed=1), tmp_path / "alone")
    _assert_close_runs(together[1], alone, weight_tol)


def test_each_run_folder_is_a_single_runs(tmp_path, mnist_dir):
    runs = train_seeds(_config(mnist_dir), [3, 5], tmp_path / "g")
    assert default_checkpoint(tmp_path).parent == runs[1]  # found as any run: the newest checkpoint
    alone = train(_config(mnist_dir, seed=3), tmp_path / "alone")
    assert {p.name for p in runs[0].iterdir()} == {p.name for p in alone.iterdir()} == FILES
    a, b = (json.loads((r / "config.json").read_text()) for r in (runs[0], alone))
    assert a["train"] == b["train"] and a["train"]["seed"] == 3
    assert a["environment"]["trained_with_seeds"] == [3, 5] and "trained_with_seeds" not in b["environment"]
    sa, sb = load_state(runs[0] / "state.safetensors"), load_state(alone / "state.safetensors")
    assert sa.epoch == sb.epoch == 2 and sa.model.keys() == sb.model.keys()
    assert sa.optimizer["param_groups"] == sb.optimizer["param_groups"]
    for index, state in sb.optimizer["state"].items():
        for key, value in state.items():
            assert sa.optimizer["state"][index][key].shape == value.shape
            assert sa.optimizer["state"][index][key].is_contiguous()
    assert load_checkpoint(runs[1]).epoch in (1, 2)
    assert group_runs(tmp_path / "g") == runs


def test_resumed_together_equals_uninterrupted_and_a_run_behind_catches_up(tmp_path, mnist_dir):
    whole = train_seeds(_config(mnist_dir, epochs=3, save_every=1), [0, 1], tmp_path / "whole")
    part = train_seeds(_config(mnist_dir, epochs=1, save_every=1), [0, 1], tmp_path / "part")
    assert resume_group(tmp_path / "part", epochs=2) == part
    for a, b in zip(whole, part):  # the stacked Adam state is restored exactly: equal to the bit
        wa, wb = load_file(str(a / "epoch-0002.safetensors")), load_file(str(b / "last.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    resume(part[0], epochs=3)  # seed 0 alone, one epoch ahead of seed 1
    log = io.StringIO()
    resume_group(tmp_path / "part", epochs=3, reporter=Plain(log))
    assert "seed 1: catching up alone to epoch 3" in log.getvalue()
    for a, b in zip(whole, part):
        assert [m["epoch"] for m in _metrics(b)] == [1, 2, 3]
        _assert_close_runs(a, b, 2e-5)


def test_refusals(tmp_path, mnist_dir):
    with pytest.raises(DVAEError, match="must differ"):
        train_seeds(_config(mnist_dir), [1, 1], tmp_path / "a")
    with pytest.raises(DVAEError, match="share every setting"):
        train_together([_config(mnist_dir), _config(mnist_dir, seed=1, lr=1e-3)], [tmp_path / "b", tmp_path / "c"])
    with pytest.raises(DVAEError, match="neither a run folder nor a folder of runs"):
        resume_group(tmp_path)
    assert not [*tmp_path.iterdir()]  # nothing left behind
    train_seeds(_config(mnist_dir, epochs=1), [0], tmp_path / "c")
    with pytest.raises(DVAEError, match="already holds a run"):
        train_seeds(_config(mnist_dir, epochs=1), [0], tmp_path / "c")
    with pytest.raises(DVAEError, match="is a run folder"):
        train_seeds(_config(mnist_dir, epochs=1), [1], tmp_path / "c" / "seed-0")


def test_divergence_names_the_run_and_keeps_every_last_epoch(tmp_path, mnist_dir, monkeypatch):
    runs = train_seeds(_config(mnist_dir, method="gumbel", epochs=1), [0, 1], tmp_path / "g")
    monkeypatch.setattr(Gumbel, "anneal", lambda self, epoch: {"tau": float("nan")})
    with pytest.raises(DVAEError, match=r"diverged in epoch 2.*epoch 1.*seed-0"):
        resume_group(tmp_path / "g", epochs=2)
    assert all(len(_metrics(run)) == 1 for run in runs)


def test_preset_noise_hands_out_its_draws_in_order_and_refuses_others():
    first, second = torch.rand(4, 3, 2), torch.rand(4, 5)
    noise = PresetNoise([first, second], 4)
    assert noise.uniform(3, 2) is first and torch.equal(noise.uniform(5), second)
    with pytest.raises(RuntimeError, match="not drawn beforehand"):
        noise.uniform(5)


def test_cli_seeds_json_lines_and_errors(tmp_path, mnist_dir):
    common = ["--epochs", "1", "--train-limit", "200", "--data-dir", str(mnist_dir), "--device", "cpu", "-q"]
    result = runner.invoke(app, ["train", "--method", "gumbel", "--seeds", "0,1", "-o", str(tmp_path / "g"),
                                 "--json", *common])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["run"] for line in lines] == [str(tmp_path / "g" / f"seed-{s}") for s in (0, 1)]
    assert all(line["epochs"] == 1 for line in lines)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "g"), "--epochs", "2", "-q",
                                 "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0 and result.stdout.split() == [line["run"] for line in lines]
    result = runner.invoke(app, ["plot", str(tmp_path / "g"), "-o", str(tmp_path / "curves.png"), "-q"])
    assert result.exit_code == 0 and (tmp_path / "curves.png").stat().st_size > 0  # each of the folder's runs
    result = runner.invoke(app, ["eval", str(tmp_path / "g"), "--data-dir", str(mnist_dir)])
    assert result.exit_code == 1 and "holds 2 runs (seed-0, seed-1); name one" in result.output
    for args, message in ((["--seeds", "0,x"], "comma-separated"), (["--seeds", "0,1", "--seed", "2"], "not both"),
                          (["--seeds", "0,1", "--method", "dtp", "--tau0", "2"], "do(es) not apply")):
        result = runner.invoke(app, ["train", *args, "-o", str(tmp_path / "bad"), *common])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "bad").exists()


def test_ctrl_c_keeps_every_runs_last_epoch_and_resume_continues(tmp_path, mnist_dir):
    """SIGINT while two runs train together: exit 130, both folders at the same complete epoch,
    and `dvae train --resume GROUP` continues them together."""
    out = tmp_path / "g"
    cmd = [sys.executable, "-m", "dvae_cli", "train", "--method", "gumbel", "--seeds", "0,1", "--epochs", "100",
           "--train-limit", "300", "--device", "cpu", "--data-dir", str(mnist_dir), "--out", str(out)]
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=restore_sigint)
    deadline = time.time() + 120
    while not (out / "seed-1" / "state.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"--resume {out}" in " ".join(err.split()) and "Traceback" not in err
    done = [len(_metrics(out / f"seed-{s}")) for s in (0, 1)]
    assert done[0] == done[1] >= 1
    result = runner.invoke(app, ["train", "--resume", str(out), "--epochs", str(done[0] + 1), "-q"])
    assert result.exit_code == 0, result.output
    assert all(len(_metrics(out / f"seed-{s}")) == done[0] + 1 for s in (0, 1))


def test_too_many_seeds_together_are_refused_before_anything_is_allocated(tmp_path, mnist_dir):
    from typer.testing import CliRunner
    from dvae_cli.cli import app

    seeds = ",".join(map(str, range(1000)))
    result = CliRunner().invoke(app, ["train", "--seeds", seeds, "--epochs", "1", "--data-dir", str(mnist_dir),
                                      "--device", "cpu", "-o", str(tmp_path / "many"), "-q"])
    assert result.exit_code == 1 and "GiB ceiling; train at most" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "many").exists()
