"""dvae gradients: the reference and each method's update against the exact gradient, found by
enumerating every code of a small model; the CLI on --save-every's checkpoints."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from dvae_cli.cli import app
from dvae_cli.gradients import Estimator, Reference, compare, encoder_gradient, reference_gradient
from dvae_cli.methods import make_method
from dvae_cli.model import DiscreteVAE, ModelConfig, kl_to_uniform, log_likelihood

SMALL = ModelConfig(latent_vars=2, classes=10, hidden=16, input_size=100)  # 100 codes
DRAWS = 300


@pytest.fixture(scope="module")
def small():
    """A small model whose reconstruction term dominates the gradient, a batch, and its exact gradient."""
    torch.manual_seed(0)
    model = DiscreteVAE(SMALL)
    x = (torch.rand(4, SMALL.input_size) > 0.5).float()
    with torch.no_grad():  # sharper pi and decoder than at initialization
        for p in model.decoder.parameters():
            p.mul_(4)
        for p in model.encoder.parameters():
            p.mul_(2)
    return model, x, exact_gradient(model, x)


def exact_gradient(model, x) -> Reference:
    """d/d encoder of mean_b [KL_b - sum over all K^D codes y of q(y|x_b) log p(x_b|y)], and of its KL part."""
    d, k = model.config.latent_vars, model.config.classes
    codes = torch.cartesian_prod(*[torch.arange(k)] * d)  # (K^D, D)
    log_pi = model.encode(x)
    log_q = log_pi[:, torch.arange(d), codes].sum(dim=-1)  # (B, K^D)
    with torch.no_grad():
        y = torch.nn.functional.one_hot(codes, k).float()
        log_lik = torch.stack([log_likelihood(model.decode(y), image.expand(len(y), -1)) for image in x])
    kl = kl_to_uniform(log_pi).mean()
    neg_elbo = kl - (log_q.exp() * log_lik).sum(dim=-1).mean()
    return Reference(encoder_gradient(model, neg_elbo, retain_graph=True).double(),
                     encoder_gradient(model, kl).double(), 0.0, len(codes), 1, 0.0)


def _draws(model, x, exact, name, tau=None):
    method = make_method(name)
    schedule = method.schedule(0)
    if tau is not None:
        schedule["tau"] = tau
    return compare(model, x, Estimator(name, method, schedule), exact, DRAWS, torch.Generator().manual_seed(1))


def test_reference_agrees_with_enumeration_within_its_standard_error(small):
    model, x, exact = small
    reference = reference_gradient(model, x, 2000, torch.Generator().manual_seed(0))
    error = (reference.gradient - exact.gradient).norm().item()
    torch.testing.assert_close(reference.kl_gradient, exact.kl_gradient)
    assert reference.standard_error < 0.1 * exact.gradient.norm().item()
    assert 0.3 * reference.standard_error < error < 2.5 * reference.standard_error  # the error it states


def test_rloo_is_unbiased(small):
    c = _draws(*small, "rloo")
    assert c.relative_bias < 2 * c.bias_noise_floor and c.cosine > 0.99 and c.reconstruction_cosine > 0.95


@pytest.mark.parametrize("name, tau", [("st", None), ("st-gumbel", 1.0), ("gumbel", 0.5)])
def test_straight_through_and_relaxed_estimators_are_biased(small, name, tau):
    c = _draws(*small, name, tau)
    assert c.relative_bias > 2.5 * c.bias_noise_floor and c.bias > 0.05


def test_dtp_reports_alignment_only(small):
    c = _draws(*small, "dtp")
    assert not c.elbo_gradient and c.relative_bias is c.bias is c.relative_std is None
    assert -1 <= c.cosine <= 1 and c.snr > 0


def test_cli_table_json_and_figures_and_save_every(tmp_path, mnist_dir):
    from dvae_cli import TrainConfig, train

    run = train(TrainConfig(method="dtp", epochs=3, train_limit=100, save_every=2, data_dir=str(mnist_dir),
                            device="cpu", model=ModelConfig(hidden=8)), tmp_path / "run")
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-0002.safetensors"]  # --save-every 2
    runner = CliRunner()
    common = ["--methods", "st,dtp", "--batch", "5", "--reference-samples", "40", "--repeats", "3",
              "--data-dir", str(mnist_dir), "--device", "cpu", "-q"]
    result = runner.invoke(app, ["gradients", str(run), *common, "-o", str(tmp_path / "bias.png")])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert len(rows["st"]) == 10 and rows["dtp"][6:] == ["—"] * 4  # dtp: no std, |m-ref|, floor, bias
    assert (tmp_path / "bias.png").read_bytes()[:4] == b"\x89PNG"
    epochs = [str(run / "epoch-0002.safetensors"), str(run / "last.safetensors")]
    result = runner.invoke(app, ["gradients", *epochs, *common, "--json", "-o", str(tmp_path / "training.png")])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)["reports"]
    assert [r["epoch"] for r in reports] == [2, 3] and reports[0]["checkpoint"] == epochs[0]
    assert reports[0]["images"] == 5 and reports[0]["reference"]["samples"] == 40
    st, dtp = reports[0]["comparisons"]
    assert st["method"] == "st" and st["repeats"] == 3 and math.isfinite(st["relative_bias"])
    assert dtp["method"] == "dtp" and dtp["relative_bias"] is None and dtp["schedule"]["diversity"] == pytest.approx(0.2)  # warm-up: 2 of 10 epochs
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--methods", "st,nope"], "--methods st,nope: choose"),
    (["--reference-samples", "41", "--batch", "2", "-o", "fig.bmp"], "unsupported figure format"),
    (["/nonexistent/ckpt.safetensors"], "no such checkpoint"),
])
def test_cli_user_errors(tiny_run, mnist_dir, args, message):
    result = CliRunner().invoke(app, ["gradients", str(tiny_run), "--data-dir", str(mnist_dir), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
