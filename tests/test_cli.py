import json
import math

import pytest
from typer.testing import CliRunner

from dvae_cli.cli import app
from dvae_cli.methods import METHODS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands_and_methods():
    result = invoke("--help")
    assert result.exit_code == 0 and "train" in result.output and "eval" in result.output
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for name in METHODS:
        assert name in result.output
    for flag in ("--dtp-target", "--beta-warmup", "--tau0", "--tau-min", "--anneal-rate", "--lr-decay"):
        assert flag in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("dvae ")


def test_train_then_eval_json(tmp_path, mnist_dir):
    out = tmp_path / "run"
    result = invoke("train", "--method", "gumbel", "--epochs", "1", "--train-limit", "200", "--device", "cpu",
                    "--data-dir", mnist_dir, "--out", out, "--tau-min", "0.1", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"] == str(out) and summary["epochs"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["hparams"]["tau_min"] == 0.1 and config["train"]["method"] == "gumbel"
    result = invoke("eval", out, "--data-dir", mnist_dir, "--split", "test", "--iw", "5", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["split"] == "test" and metrics["images"] == 300 and metrics["iw_samples"] == 5
    assert metrics["neg_elbo"] == pytest.approx(metrics["kl"] - metrics["log_lik"])
    assert len(metrics["perplexity"]) == 30 and 0.1 <= metrics["mean_max_prob"] <= 1


def test_eval_table(tiny_run, mnist_dir):
    result = invoke("eval", tiny_run, "--data-dir", mnist_dir, "--iw", "2", "--limit", "50")
    assert result.exit_code == 0, result.output
    assert "log p(x|y)" in result.output and "-ELBO" in result.output and "IW, 2 samples" in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "--method", "dtp", "--tau0", "2"], "--tau0 do(es) not apply to --method dtp"),
    (["train", "--data-dir", "/nonexistent/mnist"], "MNIST not found"),
    (["train", "--device", "cuda", "--data-dir", "/nonexistent"], "no CUDA device"),
    (["eval", "/nonexistent/ckpt.safetensors"], "no such checkpoint"),
    (["train", "--resume", "/nonexistent/run"], "not a run folder"),
])
def test_user_errors_are_one_clear_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_bad_choice_is_a_usage_error():
    result = invoke("train", "--method", "nope")
    assert result.exit_code == 2


def test_resume_refuses_changed_settings(tiny_run):
    result = invoke("train", "--resume", tiny_run, "--lr", "0.1")
    assert result.exit_code == 1 and "only --epochs, --device and --data-dir" in " ".join(result.output.split())


def test_eval_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    result = invoke("eval", bad)
    assert result.exit_code == 1 and "not a readable safetensors" in result.output


def test_integration_real_mnist(tmp_path, real_mnist):
    """dvae train --method dtp --epochs 1 --train-limit 2000, then dvae eval --json, on the real data."""
    out = tmp_path / "run"
    result = invoke("train", "--method", "dtp", "--epochs", "1", "--train-limit", "2000", "--device", "cpu",
                    "--data-dir", real_mnist, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    result = invoke("eval", out, "--json", "--data-dir", real_mnist, "--iw", "10", "--limit", "2000")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert {"log_lik", "kl", "neg_elbo", "iw_log_px", "mean_max_prob", "perplexity"} <= set(m)
    assert all(math.isfinite(m[k]) for k in ("log_lik", "kl", "neg_elbo", "iw_log_px"))
    assert -400 < m["log_lik"] < -60  # better than the all-0.5 model (-543), far from perfect
    assert 0 <= m["kl"] <= 30 * math.log(10) + 1e-3
    assert m["iw_log_px"] >= -m["neg_elbo"] - 1.0  # IW bound at least about as tight as the ELBO
