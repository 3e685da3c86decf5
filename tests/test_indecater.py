"""IndeCateR (methods/indecater.py) against its definition: unbiased for the gradient of
E_q[log p(x|y)] (checked by enumerating every code of a tiny model), and with less variance than RLOO
given as many decoder passes."""

import itertools

import pytest
import torch

from dvae_cli.methods import Noise, make_method
from dvae_cli.methods.indecater import neighbours
from dvae_cli.model import DiscreteVAE, ModelConfig, kl_to_uniform, log_likelihood

D, C, PIXELS, DRAWS = 3, 3, 6, 4000


class FreeEncoder(torch.nn.Module):
    """A tiny DiscreteVAE whose encoder is a free table of logits theta, one row per draw: the rows
    all hold the same logits, so the gradient of the loss w.r.t. row r is draw r's estimate."""

    def __init__(self, rows: int):
        super().__init__()
        torch.manual_seed(0)
        self.vae = DiscreteVAE(ModelConfig(latent_vars=D, classes=C, hidden=8, input_size=PIXELS))
        self.config = self.vae.config
        self.theta = torch.nn.Parameter((1.5 * torch.randn(D, C)).expand(rows, D, C).clone())

    def encode(self, x):
        return torch.log_softmax(self.theta, dim=-1)

    def decode(self, y):
        return self.vae.decode(y)


X = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def draws(name: str, hparams: dict, seed: int = 1) -> tuple[torch.Tensor, FreeEncoder]:
    """DRAWS independent estimates of the -ELBO's gradient w.r.t. theta (DRAWS, D*C)."""
    model = FreeEncoder(DRAWS)
    method = make_method(name, hparams)
    step = method.loss(model, X.expand(DRAWS, -1), Noise(torch.Generator().manual_seed(seed), DRAWS), {})
    (grad,) = torch.autograd.grad(step.loss * DRAWS, model.theta)
    return grad.flatten(1), model


def exact_gradient(model: FreeEncoder) -> torch.Tensor:
    """d/dtheta [KL(q || uniform) - E_q log p(x|y)], E_q summed over all C^D codes."""
    theta = model.theta[0].detach().clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, dim=-1)
    codes = torch.stack([torch.nn.functional.one_hot(torch.tensor(c), C).float()
                         for c in itertools.product(range(C), repeat=D)])  # (C^D, D, C)
    with torch.no_grad():
        f = log_likelihood(model.vae.decode(codes), X)
    log_q = (codes * log_pi).sum(dim=(-2, -1))
    objective = kl_to_uniform(log_pi.unsqueeze(0))[0] - (log_q.exp() * f).sum()
    return torch.autograd.grad(objective, theta)[0].flatten()


def test_neighbours_replace_one_variable_by_each_class():
    y = torch.nn.functional.one_hot(torch.tensor([[2, 0, 1]]), C).float()  # (1, D, C)
    codes = neighbours(y)  # (1, D, C, D, C)
    for d, c in itertools.product(range(D), range(C)):
        expected = y[0].clone()
        expected[d] = torch.nn.functional.one_hot(torch.tensor(c), C).float()
        assert torch.equal(codes[0, d, c], expected)


def test_unbiased_by_enumeration():
    grads, model = draws("indecater", {})
    mean, stderr = grads.mean(0), grads.std(0) / DRAWS ** 0.5
    exact = exact_gradient(model)
    assert ((mean - exact).abs() <= 4 * stderr + 1e-6).all(), (mean, exact, stderr)


def test_less_variance_than_rloo_at_equal_decoder_passes():
    indecater, _ = draws("indecater", {"indecater_samples": 1})  # D*C neighbour passes (+1 sample)
    rloo, model = draws("rloo", {"samples": D * C})
    exact = exact_gradient(model)
    assert (rloo.mean(0) - exact).abs().max() <= 4 * (rloo.std(0) / DRAWS ** 0.5).max()  # both unbiased
    ratio = indecater.var(0).sum() / rloo.var(0).sum()
    assert ratio < 0.5, ratio


@pytest.mark.parametrize("samples", [1, 3])
def test_log_likelihood_is_of_the_sampled_codes_and_the_loss_reads_as_the_elbo(samples):
    model = FreeEncoder(5)
    step = make_method("indecater", {"indecater_samples": samples}).loss(
        model, X.expand(5, -1), Noise(torch.Generator().manual_seed(0), 5), {})
    assert step.loss.item() == pytest.approx((step.kl - step.log_lik).mean().item(), rel=1e-6)
