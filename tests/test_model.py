import math

import pytest
import torch

from dvae_cli.methods import METHODS, Noise, make_method
from dvae_cli.errors import DVAEError
from dvae_cli.model import (
    DiscreteVAE, ModelConfig, code_diversity, gumbel_noise, kl_to_uniform, log_likelihood, one_hot_sample,
)


def test_shapes_and_parameter_count():
    model = DiscreteVAE()
    assert sum(p.numel() for p in model.parameters()) == 1_086_084  # about 1.09 M (METHOD.md)
    x = torch.zeros(4, 784)
    log_pi = model.encode(x)
    assert log_pi.shape == (4, 30, 10)
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(4, 30))
    assert model.decode(log_pi.exp()).shape == (4, 784)
    small = DiscreteVAE(ModelConfig(latent_vars=3, classes=4, hidden=7))
    assert small.encode(x).shape == (4, 3, 4)


def test_kl_matches_hand_computation():
    pi = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    expected = 0.25 * math.log(2 * 0.25) + 0.75 * math.log(2 * 0.75)  # second variable: 0
    assert kl_to_uniform(pi.log()).item() == pytest.approx(expected, rel=1e-6)
    one_hot = torch.tensor([[[1.0, 0.0, 0.0]]]).clamp_min(1e-30)
    assert kl_to_uniform(one_hot.log()).item() == pytest.approx(math.log(3), rel=1e-5)


def test_log_likelihood_is_bernoulli():
    logits, x = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    expected = math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2)))
    assert log_likelihood(logits, x).item() == pytest.approx(expected, rel=1e-6)


def test_gumbel_max_frequencies_match_pi():
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 200_000
    g = torch.Generator().manual_seed(0)
    noise = gumbel_noise(torch.rand(n, 1, 4, generator=g))
    y = one_hot_sample(pi.log().expand(n, 1, 4), noise)
    assert torch.all(y.sum(-1) == 1)
    freq = y.mean(dim=(0, 1))
    torch.testing.assert_close(freq, pi, atol=0.005, rtol=0)  # ~5 standard errors


def test_noise_rows_are_slices_of_the_global_batch():
    full = Noise(torch.Generator().manual_seed(3), 6).uniform(2, 5)
    part = Noise(torch.Generator().manual_seed(3), 6, rows=slice(2, 4)).uniform(2, 5)
    assert torch.equal(full[2:4], part)


def _dtp_step(config: dict):
    torch.manual_seed(0)
    model = DiscreteVAE(ModelConfig(latent_vars=5, classes=4, hidden=16, input_size=784))
    x = (torch.rand(8, 784) > 0.5).float()
    method = make_method("dtp", config)
    decoder_inputs = []
    model.decoder[0].register_forward_hook(lambda m, inp, out: decoder_inputs.append(inp[0]))
    encoder_inputs = []
    model.encoder[0].register_forward_hook(lambda m, inp, out: encoder_inputs.append(inp[0]))
    step = method.loss(model, x, Noise(torch.Generator().manual_seed(1), 8), {"beta": 0.5})
    step.loss.backward()
    return model, x, step, decoder_inputs, encoder_inputs


@pytest.mark.parametrize("target", ["prob", "sample"])
@pytest.mark.parametrize("inverse", [False, True])
def test_dtp_no_gradient_crosses_the_sample(target, inverse):
    model, x, step, decoder_inputs, encoder_inputs = _dtp_step({"dtp_target": target, "dtp_inverse_loss": inverse})
    assert len(decoder_inputs) == 1 and not decoder_inputs[0].requires_grad  # the sample is a constant
    assert len(encoder_inputs) == 2 and not encoder_inputs[1].requires_grad  # so is the reconstruction
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # the decoder's gradient is that of -log p(x|y) alone: the encoder loss does not reach it
    decoder_grads = [p.grad.clone() for p in model.decoder.parameters()]
    model.zero_grad()
    log_pi = model.encode(x)
    noise = Noise(torch.Generator().manual_seed(1), 8).gumbel(5, 4)
    (-log_likelihood(model.decode(one_hot_sample(log_pi, noise)), x).mean()).backward()
    for got, want in zip(decoder_grads, model.decoder.parameters()):
        torch.testing.assert_close(got, want.grad)
    assert all(p.grad is None for p in model.encoder.parameters())


def test_dtp_target_prob_is_eq_3_7():
    """With beta = 0 the encoder gradient is that of ||pi - (2 pi - pi(x'))||^2 (eq. 3.7)."""
    model, x, step, _, _ = _dtp_step({"dtp_target": "prob"})
    got = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    with torch.no_grad():
        log_pi = model.encode(x)
        y = one_hot_sample(log_pi, Noise(torch.Generator().manual_seed(1), 8).gumbel(5, 4))
        pi_rec = model.encode(torch.sigmoid(model.decode(y))).exp()
        target = 2 * log_pi.exp() - pi_rec
    log_pi = model.encode(x)
    loss = (log_pi.exp() - target).square().sum((1, 2)) + 0.5 * kl_to_uniform(log_pi)
    loss.mean().backward()
    for g, p in zip(got, model.encoder.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_gumbel_schedule_and_straight_through():
    method = make_method("gumbel", {"tau0": 1.0, "tau_min": 0.5, "anneal_rate": 0.1, "lr_decay": 0.9})
    assert method.schedule(0) == {"tau": 1.0, "lr_scale": 1.0}
    assert method.schedule(3)["tau"] == pytest.approx(math.exp(-0.3))
    assert method.schedule(100)["tau"] == 0.5
    assert method.schedule(2)["lr_scale"] == pytest.approx(0.81)
    torch.manual_seed(0)
    model = DiscreteVAE(ModelConfig(latent_vars=3, classes=4, hidden=8))
    seen = []
    model.decoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    step = make_method("st-gumbel").loss(model, torch.ones(2, 784), Noise(torch.Generator(), 2), {"tau": 0.5})
    step.loss.backward()
    codes = seen[0].view(2, 3, 4).detach()
    torch.testing.assert_close(codes, (codes > 0.5).float(), atol=1e-6, rtol=0)  # one-hot forward
    assert torch.equal((codes > 0.5).sum(-1), torch.ones(2, 3, dtype=torch.long))
    assert all(p.grad.abs().sum() > 0 for p in model.encoder.parameters())  # relaxed gradient flows back


def test_registry_and_hparam_validation():
    assert {"dtp", "gumbel", "st-gumbel"} <= set(METHODS)
    with pytest.raises(DVAEError, match="unknown method"):
        make_method("nope")
    with pytest.raises(DVAEError, match="no hyper-parameter"):
        make_method("dtp", {"tau0": 1.0})
    with pytest.raises(DVAEError, match="dtp_target must be one of"):
        make_method("dtp", {"dtp_target": "mean"})


def test_dtp_log_correction_with_cross_entropy():
    """log correction: pi_hat = softmax(2 log pi(x) - log pi(x')); ce loss: -sum pi_hat log pi."""
    model, x, step, _, _ = _dtp_step({"dtp_correction": "log", "dtp_loss": "ce"})
    got = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    with torch.no_grad():
        log_pi = model.encode(x)
        y = one_hot_sample(log_pi, Noise(torch.Generator().manual_seed(1), 8).gumbel(5, 4))
        log_pi_rec = model.encode(torch.sigmoid(model.decode(y)))
        target = torch.softmax(2 * log_pi - log_pi_rec, dim=-1)
    assert (target >= 0).all() and torch.allclose(target.sum(-1), torch.ones(8, 5))
    log_pi = model.encode(x)
    (-(target * log_pi).sum((1, 2)) + 0.5 * kl_to_uniform(log_pi)).mean().backward()
    for g, p in zip(got, model.encoder.parameters()):
        torch.testing.assert_close(g, p.grad)
    with pytest.raises(DVAEError, match="needs dtp_target prob"):
        make_method("dtp", {"dtp_correction": "log", "dtp_target": "sample"})


def test_code_diversity_value_and_gradient_by_hand():
    """sum_d KL(mean_b pi_d || uniform); d/d pi_b = (log(K mean_pi) + 1) / B."""
    pi = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[0.9, 0.1], [1.0, 0.0]]], dtype=torch.float64)
    log_pi = pi.clamp_min(1e-300).log().requires_grad_()
    value = code_diversity(log_pi)
    mean0 = (0.7, 0.3)  # variable 0's batch mean; variable 1 is the constant class 0: KL = log 2
    expected = sum(p * math.log(2 * p) for p in mean0) + math.log(2)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    # d value / d log pi_bdk = pi_bdk * (log(K mean_dk) + 1) / B, by the chain rule through exp
    mean = pi.mean(0)
    want = pi * ((2 * mean).clamp_min(1e-300).log() + 1) / 2
    torch.testing.assert_close(log_pi.grad, want)


def test_code_diversity_of_slices_adds_up_to_the_whole_batch():
    """Given the whole batch's mean pi, each slice's value is the whole's and the gradients sum to it."""
    logits = torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = logits.clone().requires_grad_()
    code_diversity(torch.log_softmax(whole, -1)).backward()
    parts = logits.clone().requires_grad_()
    log_pi = torch.log_softmax(parts, -1)
    mean = log_pi.detach().exp().mean(0)
    for rows, b in ((slice(0, 2), 2), (slice(2, 6), 4)):  # the training loop weights a slice by its size
        value = code_diversity(log_pi[rows], mean)
        assert value.item() == pytest.approx(code_diversity(log_pi.detach()).item(), rel=1e-12)
        (value * b / 6).backward(retain_graph=True)
    torch.testing.assert_close(parts.grad, whole.grad)


def test_diversity_schedule_and_defaults():
    dtp = make_method("dtp")  # dvae's default reading of the thesis: w warmed up 0 -> 1 over 10 epochs
    assert [dtp.schedule(e)["diversity"] for e in (0, 5, 10, 30)] == [0.0, 0.5, 1.0, 1.0]
    assert make_method("gumbel").config.diversity == 0.0
    assert "diversity" not in make_method("dtp", {"diversity": 0.0}).schedule(0)  # the literal reading
    method = make_method("st", {"diversity": 2.0, "diversity_warmup": 4})
    assert [method.schedule(e)["diversity"] for e in (0, 2, 4, 9)] == [0.0, 1.0, 2.0, 2.0]
    with pytest.raises(DVAEError, match="^diversity must be >= 0"):
        make_method("dtp", {"diversity": -1.0})
