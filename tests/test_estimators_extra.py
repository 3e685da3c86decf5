"""gumbel-rao, gst and st's temperature, checked against their papers' definitions: exact one-hot
samples forward; Gumbel-Rao's expected update equals ST Gumbel-Softmax's, with less variance
(Paulus et al. 2021, Theorem 1), and its closed form equals the straightforward formula; GST's
moved logits are consistent and gapped and its backward is the softmax Jacobian at them (Fan et
al. 2022); st with tau = 1 is the st of before, bit for bit."""

import math

import pytest
import torch
import torch.nn.functional as F

from dvae_cli.errors import DVAEError
from dvae_cli.methods import Noise, make_method
from dvae_cli.methods.base import neg_elbo_step
from dvae_cli.methods.gst import gapped_logits_shift
from dvae_cli.methods.gumbel_rao import GumbelRao, conditional_softmaxes
from dvae_cli.model import DiscreteVAE, ModelConfig, gumbel_noise, kl_to_uniform, one_hot_sample

EULER = 0.5772156649015329  # the mean of a standard Gumbel


class Stub(torch.nn.Module):
    """A 'model' whose encoder returns log_softmax(logits) of a leaf tensor; its decoder is the
    one of a real tiny model, or, with `weights`, one pixel with logit sum(y * weights)."""

    def __init__(self, logits, weights=None, seed=0):
        super().__init__()
        latent_vars, classes = logits.shape[1:]
        torch.manual_seed(seed)
        self.config = ModelConfig(latent_vars=latent_vars, classes=classes, hidden=4, input_size=5)
        self.logits, self.weights, self.real = logits, weights, DiscreteVAE(self.config)

    def encode(self, x):
        return torch.log_softmax(self.logits, -1)

    def decode(self, y):
        self.y = y
        return self.real.decode(y) if self.weights is None else (y * self.weights).sum(dim=(1, 2))[:, None]


def _run(name, hparams, logits, seed, weights=None):
    """The method's loss on the stub: (d loss / d logits, the code y, the first noise draw)."""
    logits = logits.detach().clone().requires_grad_(True)
    stub, batch = Stub(logits, weights), len(logits)
    x = torch.zeros(batch, 1) if weights is not None else torch.ones(batch, 5)
    method = make_method(name, hparams)
    step = method.loss(stub, x, Noise(torch.Generator().manual_seed(seed), batch), method.schedule(0))
    step.loss.backward()
    first = Noise(torch.Generator().manual_seed(seed), batch).gumbel(*logits.shape[1:])
    return logits.grad, stub.y.detach(), first


def _jacobian_product(p, v):
    """J(p) v with J(p) = diag(p) - p p^T, the softmax's Jacobian at p."""
    return p * v - p * (p * v).sum(-1, keepdim=True)


def _linear_case(name, hparams, seed=1):
    """Gradient and code of a method with the linear one-pixel decoder, and what the ST family's
    backward should see: g_y = d loss / d y and the KL's own gradient."""
    torch.manual_seed(0)
    logits, weights = torch.randn(4, 2, 5) * 2, torch.randn(4, 2, 5)
    grad, y, gumbel = _run(name, hparams, logits, seed, weights)
    sample = one_hot_sample(torch.log_softmax(logits, -1), gumbel)
    g_y = torch.sigmoid((sample * weights).sum(dim=(1, 2)))[:, None, None] * weights / 4  # d mean softplus / d y
    leaf = logits.clone().requires_grad_(True)
    kl = torch.autograd.grad(kl_to_uniform(torch.log_softmax(leaf, -1)).mean(), leaf)[0]
    return logits, grad, y, sample, g_y, kl


@pytest.mark.parametrize("name, hparams", [("gumbel-rao", {"rao_samples": 5}), ("gst", {}), ("gst", {"gst_gap": 3.0}),
                                           ("st", {"st_tau": 2.0})])
def test_forward_is_the_exact_gumbel_max_sample(name, hparams):
    logits, _, y, sample, _, _ = _linear_case(name, hparams)
    torch.testing.assert_close(y, sample, atol=1e-6, rtol=0)  # the one-hot of the first draw, exactly a sample


def test_st_with_tau_one_is_the_st_of_before_bit_for_bit():
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 3)
    before = []
    for hparams in ({}, {"st_tau": 1.0}):
        grad, y, gumbel = _run("st", hparams, logits, seed=3)
        before.append((grad, y))
    # st before the temperature: y = one_hot + pi - stopgrad(pi), pi = exp(log pi)
    leaf = logits.clone().requires_grad_(True)
    stub = Stub(leaf)
    log_pi = stub.encode(None)
    pi = log_pi.exp()
    y = one_hot_sample(log_pi, gumbel) + pi - pi.detach()
    neg_elbo_step(stub, torch.ones(6, 5), log_pi, y).loss.backward()
    for grad, code in before:
        assert torch.equal(grad, leaf.grad) and torch.equal(code, y.detach())


def test_st_temperature_backward_is_the_softmax_jacobian_at_theta_over_tau():
    tau = 2.0
    logits, grad, _, _, g_y, kl = _linear_case("st", {"st_tau": tau})
    expected = _jacobian_product(torch.softmax(logits / tau, -1), g_y) / tau + kl
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


def test_gst_moved_logits_are_consistent_gapped_and_minimal():
    torch.manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(500, 3, 6) * 2, -1)
    sample = one_hot_sample(log_pi, Noise(torch.Generator().manual_seed(0), 500).gumbel(3, 6))
    top = log_pi.max(-1, keepdim=True).values
    for gap in (0.0, 1.0, 2.5):
        moved = log_pi + gapped_logits_shift(log_pi, sample, gap)
        moved_d = (moved * sample).sum(-1, keepdim=True)
        others = moved - 1e9 * sample
        assert torch.equal(moved.argmax(-1), sample.argmax(-1)) or gap == 0  # consistency (ties only at gap 0)
        torch.testing.assert_close(moved_d, top)  # D raised to the largest logit, no higher
        assert (others <= moved_d - gap + 1e-6).all()  # the strict gap
        # minimal: a class already kappa below the top keeps its logit, the others sit at top - kappa
        untouched = (log_pi <= top - gap) & (sample == 0)
        assert torch.equal(moved[untouched], log_pi[untouched])
        pushed = (log_pi > top - gap) & (sample == 0)
        torch.testing.assert_close(moved[pushed], (top - gap).expand_as(log_pi)[pushed])


@pytest.mark.parametrize("gap, tau", [(1.0, 1.0), (2.0, 0.5)])
def test_gst_backward_is_the_softmax_jacobian_at_the_moved_logits(gap, tau):
    logits, grad, _, sample, g_y, kl = _linear_case("gst", {"gst_gap": gap, "gst_tau": tau})
    log_pi = torch.log_softmax(logits, -1)
    moved = log_pi + gapped_logits_shift(log_pi, sample, gap)
    expected = _jacobian_product(torch.softmax(moved / tau, -1), g_y) / tau + kl
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


def test_gst_is_st_when_the_sample_already_leads_by_the_gap():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]]).expand(64, 1, 3)  # class 0 leads by 2 > kappa = 1
    gst, y, _ = _run("gst", {"gst_tau": 1.5}, logits, seed=0)
    st, _, _ = _run("st", {"st_tau": 1.5}, logits, seed=0)
    rows = y[:, 0, 0] > 0.5  # draws that sampled the argmax: theta' = theta there
    assert rows.any() and not rows.all()
    torch.testing.assert_close(gst[rows], st[rows], atol=1e-7, rtol=1e-6)
    assert not torch.allclose(gst[~rows], st[~rows])  # another class sampled: the logits move


def test_conditional_gumbels_lead_with_the_sample_and_have_the_unconditional_law():
    """Given D, the perturbed logits have argmax D; over D ~ pi, each G_j is Gumbel(log pi_j),
    so its mean is log pi_j + Euler's constant. G is read back from the closed-form softmaxes
    (tau = 1): G_j = G_D + log(p_j / p_D), G_D the Gumbel g_D of the draw."""
    log_pi = torch.log_softmax(torch.tensor([[[1.0, 0.0, -1.5, 0.5]]]), -1).expand(4000, 1, 4)
    noise = Noise(torch.Generator().manual_seed(0), 4000)
    sample = one_hot_sample(log_pi, noise.gumbel(1, 4))
    uniform = noise.uniform(5, 1, 4)
    probs = conditional_softmaxes(log_pi, sample, uniform, 1.0).transpose(-3, -2)  # (N, 5, 1, 4)
    top = (gumbel_noise(uniform) * sample[:, None]).sum(-1, keepdim=True)
    perturbed = top + (probs / (probs * sample[:, None]).sum(-1, keepdim=True)).log()
    assert torch.equal(perturbed.argmax(-1), sample.argmax(-1)[:, None].expand(4000, 5, 1))
    mean = perturbed.mean(dim=(0, 1))
    # std of a Gumbel is pi / sqrt(6); 20,000 (correlated within a row) draws: 4 standard errors of 5 x 2,000 rows
    torch.testing.assert_close(mean, log_pi[0] + EULER, atol=4 * math.pi / math.sqrt(6 * 4000), rtol=0)


class GumbelRaoBefore(GumbelRao):
    """gumbel-rao as first written (commit 9652414): the conditional Gumbels in log space from the
    Gumbel noise, and autograd through the K softmaxes. The closed form must equal it."""

    def loss(self, model, x, noise, schedule):
        cfg = model.config
        log_pi = model.encode(x)
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        gumbel = noise.gumbel(self.config.rao_samples, cfg.latent_vars, cfg.classes)
        theta, d = log_pi.detach().unsqueeze(1), sample.unsqueeze(1)
        top = (gumbel * d).sum(dim=-1, keepdim=True)
        perturbed = d * top + (1 - d) * -torch.logaddexp(-(theta + gumbel), -top)
        soft = F.softmax((log_pi.unsqueeze(1) + (perturbed - theta)) / self.config.rao_tau, dim=-1).mean(dim=1)
        return neg_elbo_step(model, x, log_pi, sample + soft - soft.detach())


@pytest.mark.parametrize("hparams", [{}, {"rao_samples": 10, "rao_tau": 0.5}, {"rao_samples": 3, "rao_tau": 2.0}])
def test_gumbel_rao_closed_form_equals_the_straightforward_formula(hparams):
    """The same draws give the same code and the same gradient, to float32 rounding."""
    torch.manual_seed(0)
    logits, weights = torch.randn(64, 30, 10) * 2, torch.randn(1, 30, 10)
    grads, codes = [], []
    for method in (make_method("gumbel-rao", hparams), GumbelRaoBefore(make_method("gumbel-rao", hparams).config)):
        leaf = logits.clone().requires_grad_(True)
        stub = Stub(leaf, weights)
        method.loss(stub, torch.zeros(64, 1), Noise(torch.Generator().manual_seed(5), 64), {}).loss.backward()
        grads.append(leaf.grad)
        codes.append(stub.y.detach())
    torch.testing.assert_close(codes[0], codes[1], atol=1e-6, rtol=0)  # the one-hot sample (+ s - stopgrad s)
    scale = grads[1].abs().max()
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6 * scale, rtol=0)


def test_gumbel_rao_training_update_equals_the_straightforward_formulas():
    """One Adam step of a tiny model from the same weights and noise: the same gradients and weights."""
    config = ModelConfig(latent_vars=4, classes=5, hidden=16, input_size=12)
    x = (torch.rand(32, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    results = []
    for method in (make_method("gumbel-rao", {"rao_samples": 20}), GumbelRaoBefore(make_method("gumbel-rao", {
            "rao_samples": 20}).config)):
        torch.manual_seed(0)
        model = DiscreteVAE(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        method.loss(model, x, Noise(torch.Generator().manual_seed(2), 32), {}).loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        results.append((grads, [p.detach().clone() for p in model.parameters()]))
    for new, old in zip(*[r[0] for r in results]):
        torch.testing.assert_close(new, old, atol=1e-6 * old.abs().max(), rtol=0)
    for new, old in zip(*[r[1] for r in results]):
        torch.testing.assert_close(new, old, atol=1e-6, rtol=0)


def test_gumbel_rao_is_st_gumbel_in_expectation_with_less_variance():
    """E[E[grad | D]] = E[grad] (Paulus et al. 2021, Theorem 1): the per-draw encoder updates of
    both methods agree in mean within their standard errors, and Gumbel-Rao's spread is smaller."""
    draws = 20_000
    logits = torch.tensor([[[0.8, -0.3, 0.1]]]).expand(draws, 1, 3)
    weights = torch.tensor([[[3.0, -2.0, 1.0]]])  # one pixel, logit sum(y * weights): the loss depends on D
    per_draw = {}
    for name, hparams, seed in (("st-gumbel", {}, 1), ("gumbel-rao", {"rao_samples": 10}, 2)):
        grad, _, _ = _run(name, hparams, logits, seed, weights)
        per_draw[name] = grad.flatten(1) * draws  # the loss is the batch mean: one draw's own gradient
    st, rao = per_draw["st-gumbel"], per_draw["gumbel-rao"]
    error = (st.var(0) / draws + rao.var(0) / draws).sqrt()
    assert ((st.mean(0) - rao.mean(0)).abs() <= 4 * error + 1e-6).all(), (st.mean(0), rao.mean(0), error)
    assert rao.var(0).sum() < 0.8 * st.var(0).sum()


@pytest.mark.parametrize("hparams, name, message", [
    ({"rao_samples": 0}, "gumbel-rao", "rao_samples must be >= 1"),
    ({"rao_tau": 0.0}, "gumbel-rao", "rao_tau must be greater than 0"),
    ({"gst_gap": -1.0}, "gst", "gst_gap must be >= 0"),
    ({"gst_tau": 0.0}, "gst", "gst_tau must be greater than 0"),
    ({"st_tau": -1.0}, "st", "st_tau must be greater than 0"),
])
def test_settings_are_checked(hparams, name, message):
    with pytest.raises(DVAEError, match=message):
        make_method(name, hparams)
