import json

import pytest
import torch
from typer.testing import CliRunner

from dvae_cli.cli import app
from dvae_cli.evaluate import elbo_terms, relaxed_log_lik
from dvae_cli.methods import Noise
from dvae_cli.methods.gumbel import Gumbel
from dvae_cli.model import DiscreteVAE


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def files(folder):
    """Every file under `folder` with its modification time."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_reproduce_trains_evaluates_then_skips_and_resumes(tmp_path, mnist_dir):
    out = tmp_path / "rep"
    common = ("--seeds", "0", "--train-limit", "200", "--iw", "5", "--device", "cpu",
              "--data-dir", mnist_dir, "--out", out, "-q")
    result = invoke("reproduce", "--methods", "gumbel-tau0.5,dtp", "--epochs", "1", *common, "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert results == json.loads((out / "results.json").read_text())
    assert results["protocol"]["iw_samples"] == 5 and results["protocol"]["epochs"] == 1
    rows = {row["name"]: row for row in results["models"]}
    assert list(rows) == ["dtp", "gumbel-tau0.5"]  # the catalogue's order
    dtp, gumbel = rows["dtp"], rows["gumbel-tau0.5"]
    assert dtp["seeds"] == [0] and dtp["runs"][0]["status"] == "trained"
    assert dtp["runs"][0]["run"] == str(out / "dtp-seed0")
    mean = dtp["mean"]
    assert mean["valid_neg_elbo"] == pytest.approx(mean["valid_kl"] - mean["valid_log_lik"])
    assert mean["test_neg_iw_log_px"] < mean["test_neg_elbo"]
    assert 0.1 <= mean["valid_mean_max_prob"] <= 1 and mean["seconds_per_epoch"] > 0
    assert dtp["std"]["valid_log_lik"] is None  # one seed
    assert dtp["difference"]["valid"] == pytest.approx(mean["valid_log_lik"] + 72.545)
    assert gumbel["mean"]["tau"] == 1.0  # epoch 1 of the schedule: tau0
    assert "train_relaxed_log_lik" in gumbel["mean"] and "train_relaxed_log_lik" not in mean

    # The protocol is `dvae eval`'s: the same numbers for the test split.
    evaluated = invoke("eval", out / "dtp-seed0", "--split", "test", "--iw", "5", "--device", "cpu",
                       "--data-dir", mnist_dir, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["neg_elbo"] == pytest.approx(mean["test_neg_elbo"])

    md = (out / "results.md").read_text()
    assert "| dtp | 1 |" in md and "-72.545" in md and "-64.401" in md and "K = 5" in md

    before = files(out / "dtp-seed0") | files(out / "gumbel-tau0.5-seed0")
    again = invoke("reproduce", "--methods", "dtp,gumbel-tau0.5", "--epochs", "1", *common)
    assert again.exit_code == 0, again.output
    assert "gumbel-tau0.5" in again.stdout and "-72.545" in again.stdout and "K = 5" in again.stdout
    assert files(out / "dtp-seed0") | files(out / "gumbel-tau0.5-seed0") == before  # nothing trained or evaluated
    statuses = [r["status"] for row in json.loads((out / "results.json").read_text())["models"] for r in row["runs"]]
    assert statuses == ["complete", "complete"]

    more = invoke("reproduce", "--methods", "dtp", "--epochs", "2", *common, "--json")
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["models"][0]["runs"][0]["status"] == "resumed"
    assert len((out / "dtp-seed0" / "metrics.jsonl").read_text().splitlines()) == 2

    other = invoke("reproduce", "--methods", "dtp", "--epochs", "2", *common, "--train-limit", "100")
    assert other.exit_code == 1 and "other settings (train_limit)" in other.output


def test_reproduce_parallel_trains_seeds_together_then_resumes_them_together(tmp_path, mnist_dir):
    out = tmp_path / "rep"
    common = ("--methods", "gumbel-tau0.5", "--seeds", "0,1,2", "--parallel", "2", "--train-limit", "200",
              "--iw", "1", "--device", "cpu", "--data-dir", mnist_dir, "--out", out, "-q", "--json")
    result = invoke("reproduce", "--epochs", "1", *common)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["models"][0]["runs"]
    assert [r["status"] for r in runs] == ["trained"] * 3
    together = lambda seed: json.loads((out / f"gumbel-tau0.5-seed{seed}" / "config.json").read_text())[
        "environment"].get("trained_with_seeds")
    assert [together(s) for s in (0, 1, 2)] == [[0, 1], [0, 1], None]  # seed 2 trained alone: a chunk of one
    more = invoke("reproduce", "--epochs", "2", *common)
    assert more.exit_code == 0, more.output
    assert [r["status"] for r in json.loads(more.stdout)["models"][0]["runs"]] == ["resumed"] * 3
    assert all(len((out / f"gumbel-tau0.5-seed{s}" / "metrics.jsonl").read_text().splitlines()) == 2
               for s in (0, 1, 2))
    assert invoke("reproduce", "--parallel", "0", "--out", tmp_path / "x").exit_code == 2


@pytest.mark.parametrize("args, message", [
    (("--methods", "gumbel"), "unknown model(s) 'gumbel'; choose from dtp, gumbel-tau0.5"),
    (("--seeds", "0,x"), "seeds must be comma-separated integers"),
    (("--seeds", "1,1"), "seeds must be distinct, each an integer from 0"),
    (("--extra-seeds", "-1", "--all"), "seeds must be distinct, each an integer from 0"),
    (("--all", "--methods", "dtp"), "either --methods or --all"),
])
def test_reproduce_bad_arguments(tmp_path, args, message):
    result = invoke("reproduce", *args, "--out", tmp_path / "rep")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()


def test_relaxed_log_lik_is_what_gumbel_training_measures_and_one_hot_when_cold():
    torch.manual_seed(0)
    model, data = DiscreteVAE().eval(), (torch.rand(50, 784) < 0.3).float()
    step = Gumbel().loss(model, data, Noise(torch.Generator().manual_seed(3), len(data)), {"tau": 0.7})
    assert relaxed_log_lik(model, data, 0.7, torch.Generator().manual_seed(3)) == pytest.approx(
        step.log_lik.mean().item(), rel=1e-5)
    one_hot = elbo_terms(model, data, torch.Generator().manual_seed(3))["log_lik"]
    assert relaxed_log_lik(model, data, 1e-4, torch.Generator().manual_seed(3)) == pytest.approx(one_hot, abs=1e-2)


def test_every_model_row_names_valid_train_flags():
    from typer.testing import CliRunner

    from dvae_cli.cli import app
    from dvae_cli.experiments.thesis import MODELS, train_flags

    for model in MODELS.values():
        command = train_flags({"method": model.method, "hparams": model.hparams, "train": model.train})
        assert command.startswith("dvae train --method ")
        result = CliRunner().invoke(app, command.split()[1:] + ["--help"])
        assert result.exit_code == 0, (command, result.output)
