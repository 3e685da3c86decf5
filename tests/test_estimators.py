"""The gradient estimators behind st, reinmax and rloo, checked against their definitions."""

import pytest
import torch

from dvae_cli.errors import DVAEError
from dvae_cli.methods import METHODS, Noise, make_method
from dvae_cli.model import DiscreteVAE, ModelConfig, kl_to_uniform, log_likelihood

TINY = ModelConfig(latent_vars=1, classes=3, hidden=4, input_size=5)


def _model(seed=0):
    torch.manual_seed(seed)
    return DiscreteVAE(TINY)


def _encoder_grads(model):
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


def _captured_code(model):
    seen = []
    model.decoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    return seen


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_all_parameters(name):
    torch.manual_seed(0)
    model = DiscreteVAE(ModelConfig(latent_vars=3, classes=4, hidden=8))
    method = make_method(name)
    x = (torch.rand(6, 784) > 0.5).float()
    step = method.loss(model, x, Noise(torch.Generator().manual_seed(0), 6), method.schedule(0))
    step.loss.backward()
    assert step.loss.ndim == 0 and step.log_lik.shape == (6,) and step.kl.shape == (6,)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


def test_straight_through_gradient_is_that_of_pi():
    model, x = _model(), torch.ones(1, 5)
    seen = _captured_code(model)
    step = make_method("st").loss(model, x, Noise(torch.Generator().manual_seed(0), 1), {})
    step.loss.backward()
    code = seen[0].detach().view(1, 1, 3)
    assert torch.allclose(code, (code > 0.5).float(), atol=1e-6)  # one-hot forward
    # backward: d loss / d logits = J_softmax(pi)^T (d loss / d y) + d KL / d logits
    got = _encoder_grads(model)
    model.zero_grad()
    log_pi = model.encode(x)
    y = code.detach().clone().requires_grad_(True)
    (kl_to_uniform(log_pi.detach()) - log_likelihood(model.decode(y), x)).sum().backward()
    surrogate = (y.grad * log_pi.exp()).sum() + kl_to_uniform(log_pi).sum()
    model.zero_grad()
    surrogate.backward()
    torch.testing.assert_close(got, _encoder_grads(model))


def test_reinmax_gradient_matches_algorithm_2():
    """grad theta = J(pi1) (2 g) + J(pi0) (-g / 2), J(p) = diag(p) - p p^T, g = d loss / d y."""
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 5, requires_grad=True)
    tau = 1.5
    method = make_method("reinmax", {"reinmax_tau": tau})
    log_pi = torch.log_softmax(logits, -1)
    g = torch.randn(4, 2, 5)
    gumbel = Noise(torch.Generator().manual_seed(1), 4).gumbel(2, 5)

    class Fixed(torch.nn.Module):  # a "model" whose encode returns our logits
        config = ModelConfig(latent_vars=2, classes=5, hidden=1, input_size=1)

        def encode(self, x):
            return log_pi

        def decode(self, y):
            self.y = y
            return (y * g).sum(dim=(1, 2)).unsqueeze(1)  # one 'pixel' with logit sum(y * g)

    fixed = Fixed()
    step = method.loss(fixed, torch.zeros(4, 1), Noise(torch.Generator().manual_seed(1), 4), {})
    sample = (fixed.y.detach() > 0.5).float()
    # d loss/d y: loss = mean(kl - log_lik), log_lik = -BCE(l, 0) = -softplus(l) with l = sum(y*g)
    logit = (fixed.y.detach() * g).sum(dim=(1, 2))
    g_y = torch.sigmoid(logit)[:, None, None] * g / 4
    pi0 = log_pi.detach().exp()
    pi1 = 0.5 * (sample + torch.softmax(logits.detach() / tau, -1))

    def jvp(p, v):
        return p * v - p * (p * v).sum(-1, keepdim=True)

    expected = jvp(pi1, 2 * g_y) + jvp(pi0, -0.5 * g_y)
    expected = expected + torch.autograd.grad(kl_to_uniform(torch.log_softmax(logits, -1)).mean(), logits)[0]
    step.loss.backward()
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(sample, torch.nn.functional.one_hot((log_pi.detach() + gumbel).argmax(-1), 5).float())


def test_rloo_is_unbiased_for_the_encoder():
    """Averaged over many draws, RLOO's encoder gradient equals the exact gradient of
    E_q[log p(x|y)] - KL, computed by enumerating the K = 3 codes."""
    model, x = _model(1), torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    method = make_method("rloo", {"samples": 4})
    draws, total = 4000, None
    generator = torch.Generator().manual_seed(0)
    xs = x.expand(draws, 5)
    step = method.loss(model, xs, Noise(generator, draws), {})
    (step.loss * draws).backward()  # the sum over draws of per-draw losses
    estimate = _encoder_grads(model) / draws
    model.zero_grad()
    log_pi = model.encode(x)
    codes = torch.eye(3).view(3, 1, 3)
    log_lik = log_likelihood(model.decode(codes), x.expand(3, 5)).detach()
    exact = -(log_pi.exp()[0, 0] * log_lik).sum() + kl_to_uniform(log_pi).sum()
    exact.backward()
    torch.testing.assert_close(estimate, _encoder_grads(model), atol=0.05, rtol=0.1)


def test_config_validation():
    with pytest.raises(DVAEError, match="^samples must be >= 2"):
        make_method("rloo", {"samples": 1})
    with pytest.raises(DVAEError, match="^reinmax_tau must be greater than 0"):
        make_method("reinmax", {"reinmax_tau": 0.0})
