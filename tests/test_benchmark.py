"""The field's benchmark protocol (presets.REINMAX), its suite (benchmark.py), and the options it
needs trained and resumed exactly: deeper ReLU networks, RAdam, dynamic and grey-scale targets."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from dvae_cli import data
from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.cli import app
from dvae_cli.errors import DVAEError
from dvae_cli.model import ModelConfig
from dvae_cli.multirun import train_seeds
from dvae_cli.optim import RAdam
from dvae_cli.presets import REINMAX, TUNED, apply_preset
from dvae_cli.runfolder import read_metrics
from dvae_cli.train import TrainConfig, resume, train

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_preset_sets_the_protocol_and_the_shapes_tuning():
    config = apply_preset(TrainConfig(method="reinmax"), "reinmax")
    assert (config.model.widths, config.model.activation, config.optimizer, config.batch_size, config.epochs) == (
        (512, 256), "relu", "radam", 100, 160)
    assert (config.data.binarize, config.data.valid_size, config.preset) == ("none", 0, "reinmax")
    assert (config.lr, config.hparams["reinmax_tau"]) == (5e-4, 1.3)  # reinmax_10_30.sh
    small = apply_preset(TrainConfig(method="gumbel", model=ModelConfig(latent_vars=4, classes=8)), "reinmax")
    assert (small.lr, small.optimizer, small.hparams["tau0"], small.hparams["tau_min"]) == (5e-4, "adam", 1.3, 1.3)
    assert not REINMAX.tuning("gumbel", 8, 4).own  # relaxed Gumbel: no tuned value, ReinMax's
    st = apply_preset(TrainConfig(method="st"), "reinmax")  # each estimator at its own settings (table 8)
    assert (st.lr, st.optimizer, st.hparams["st_tau"]) == (7e-3, "radam", 1.4) and REINMAX.tuning("st", 10, 30).own
    rao = apply_preset(TrainConfig(method="gumbel-rao", model=ModelConfig(latent_vars=8, classes=64)), "reinmax")
    assert (rao.lr, rao.optimizer, rao.hparams["rao_tau"]) == (7e-4, "adam", 2.0)
    wide = apply_preset(TrainConfig(method="st-gumbel", model=ModelConfig(latent_vars=24, classes=4)), "reinmax")
    assert (wide.lr, wide.hparams["tau0"]) == (5e-4, 0.3)  # table 8's (24, 4) key read as 4 classes x 24
    untuned = apply_preset(TrainConfig(method="st", model=ModelConfig(latent_vars=5, classes=5)), "reinmax")
    assert untuned.lr == TrainConfig().lr and untuned.hparams["st_tau"] == 1.0  # no tuning for 5x5: kept
    mine = apply_preset(TrainConfig(method="st", lr=1e-3, hparams={"st_tau": 2.0}), "reinmax", {"lr", "st_tau"})
    assert (mine.lr, mine.hparams["st_tau"], mine.optimizer) == (1e-3, 2.0, "radam")
    for method, table in TUNED.items():
        assert set(table) == set(REINMAX.shapes) and all(t.source for t in table.values()), method
    with pytest.raises(DVAEError, match="unknown preset"):
        apply_preset(TrainConfig(), "gst-paper")


def test_train_with_the_preset_monitors_the_test_split_and_keeps_the_last_epoch(tmp_path, mnist_dir):
    run = tmp_path / "run"
    result = cli("train", "--preset", "reinmax", "--method", "st", "--epochs", 2, "--train-limit", 200, "--lr", 1e-3,
                 "--data-dir", mnist_dir, "--device", "cpu", "-o", run, "-q", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())["train"]
    assert (config["preset"], config["lr"], config["hparams"]["st_tau"], config["model"]["hidden"]) == (
        "reinmax", 1e-3, 1.4, [512, 256])  # --lr given: the user's; the rest the preset's (st at 10x30: 1.4)
    metrics = read_metrics(run)
    assert all("test_neg_elbo" in m and not any(k.startswith("valid_") for k in m) for m in metrics)
    assert load_checkpoint(run / "best.safetensors").epoch == 2  # no validation split: best = last
    assert json.loads(result.stdout)["best"]["epoch"] == 2


def test_the_reinmax_suite_trains_evaluates_and_reuses(tmp_path, mnist_dir):
    args = ("reproduce", "--suite", "reinmax", "--shapes", "10x30,8x4", "--methods", "st,dtp", "--seeds", "0",
            "--epochs", 1, "--train-limit", 100, "--data-dir", mnist_dir, "--device", "cpu", "-o", tmp_path, "-q")
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert [(r["shape"], r["method"]) for r in results["rows"]] == [
        ("10x30", "st"), ("10x30", "dtp"), ("8x4", "st"), ("8x4", "dtp")]
    row = results["rows"][2]
    assert (row["lr"], row["optimizer"], row["hparams"]["st_tau"]) == (1e-3, "adam", 1.3)  # table 8
    metrics = row["runs"][0]["metrics"]
    recorded = read_metrics(tmp_path / "8x4-st-seed0")[-1]
    assert metrics["train_neg_elbo"] == recorded["train_neg_elbo"] and metrics["test_neg_elbo"] == recorded["test_neg_elbo"]
    assert metrics["train_neg_elbo_onehot"] > 0
    for name in ("results.json", "results.md", "results.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| 8x4 | st | 1 | 1 | 0.001 (adam) | 1.3 |" in (tmp_path / "results.md").read_text()
    again = cli(*args, "--json")
    assert again.exit_code == 0 and all(r["status"] == "complete" for row in json.loads(again.stdout)["rows"]
                                        for r in row["runs"])
    wrong = cli("reproduce", "--suite", "reinmax", "--shapes", "ten", "-o", tmp_path)
    assert wrong.exit_code == 1 and "like 10x30" in wrong.stderr


@pytest.mark.parametrize("settings", [
    {"optimizer": "radam", "model": ModelConfig(hidden=(16, 8), activation="relu", latent_vars=3, classes=4)},
    {"data": data.DataConfig(binarize="dynamic"), "model": ModelConfig(latent_vars=3, classes=4, hidden=16),
     "method": "st"},
    {"data": data.DataConfig(binarize="none", valid_size=0), "optimizer": "radam",
     "model": ModelConfig(hidden=(16, 8), activation="leakyrelu", latent_vars=3, classes=4), "method": "reinmax"},
])
def test_new_options_resume_exactly(tmp_path, mnist_dir, settings):
    config = TrainConfig(**{"epochs": 2, "train_limit": 200, "data_dir": str(mnist_dir), "device": "cpu", **settings})
    whole = train(config, tmp_path / "whole")
    train(dataclasses.replace(config, epochs=1), tmp_path / "half")
    resume(tmp_path / "half", epochs=2)
    a, b = (load_checkpoint(run / "last.safetensors").model.state_dict() for run in (whole, tmp_path / "half"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(whole)[-1] == {**read_metrics(tmp_path / "half")[-1], "seconds": read_metrics(whole)[-1]["seconds"]}


def test_runs_trained_together_draw_their_dynamic_binarization_as_alone(tmp_path, mnist_dir):
    config = TrainConfig(method="st", epochs=1, train_limit=200, data_dir=str(mnist_dir), device="cpu",
                         optimizer="radam", data=data.DataConfig(binarize="dynamic"),
                         model=ModelConfig(latent_vars=3, classes=4, hidden=(16, 8), activation="relu"))
    together = train_seeds(config, [0, 1], tmp_path / "group")
    alone = train(dataclasses.replace(config, seed=1), tmp_path / "alone")
    got, want = read_metrics(together[1])[-1], read_metrics(alone)[-1]
    assert got["train_neg_elbo"] == pytest.approx(want["train_neg_elbo"], rel=1e-4)
    a, b = (load_checkpoint(run).model.state_dict() for run in (together[1], alone))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _two_models():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    return model, copy.deepcopy(model)


def _steps(pairs, count: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(16, 20, generator=generator)
        for model, optimizer in pairs:
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()


def test_fused_radam_takes_torchs_radam_steps_and_resumes_from_its_state():
    mine, theirs = _two_models()
    fused = RAdam(mine.parameters(), lr=1e-2, fused=True)
    reference = torch.optim.RAdam(theirs.parameters(), lr=1e-2)
    _steps([(mine, fused), (theirs, reference)], 12)  # across the switch to rectified steps (rho_t > 5 from step 6)
    for p, q in zip(mine.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    moved, _ = _two_models()  # a state torch.optim.RAdam saved, continued by ours
    continued = RAdam(moved.parameters(), lr=1e-2, fused=True)
    moved.load_state_dict(theirs.state_dict())
    continued.load_state_dict(copy.deepcopy(reference.state_dict()))  # as from a file: no shared tensors
    _steps([(moved, continued), (theirs, reference)], 5, seed=2)
    for p, q in zip(moved.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert continued.param_groups[0]["radam_step"] == 17
