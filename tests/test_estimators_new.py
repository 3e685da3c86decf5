"""reinmax-cv and decoupled-st checked against their definitions (docs/METHODS.md): exact one-hot
samples forward; ReinMax-CV's backward is ReinMax's plus eta times (Gumbel-Rao minus Gumbel-Softmax)
softmax Jacobians at (pi + D) / 2, and eta = 0 is ReinMax; decoupled ST samples softmax(theta / tau_f)
and backpropagates softmax(theta / tau_b), and tau_f = 1 is st at tau_b. (IndeCateR: test_indecater.py.)"""

import pytest
import torch

from dvae_cli.errors import DVAEError
from dvae_cli.methods import Noise, make_method
from dvae_cli.model import one_hot_argmax
from test_estimators_extra import _jacobian_product, _linear_case, _run


def _reinmax_gradient(logits, sample, g_y, tau):
    """ReinMax's backward: J(pi1) (2 g_y) - J(pi0) g_y / 2, pi1 = (D + softmax(theta / tau)) / 2."""
    pi0 = torch.softmax(logits, -1)
    pi1 = 0.5 * (sample + torch.softmax(logits / tau, -1))
    return _jacobian_product(pi1, 2 * g_y) - _jacobian_product(pi0, 0.5 * g_y)


@pytest.mark.parametrize("name, hparams", [("reinmax-cv", {"rao_samples": 5}), ("decoupled-st", {}),
                                           ("decoupled-st", {"tau_backward": 0.5})])
def test_forward_is_the_exact_gumbel_max_sample(name, hparams):
    _, _, y, sample, _, _ = _linear_case(name, hparams)
    torch.testing.assert_close(y, sample, atol=1e-6, rtol=0)


def conditional_perturbed_logits(log_pi, sample, gumbel):
    """Gumbel-Rao's conditional perturbed logits as first written (log pi normalized): the top one g_D,
    the others Gumbel(log pi_j) truncated at it; one set per draw of `gumbel` (B, K, D, C)."""
    log_pi, sample = log_pi.detach().unsqueeze(1), sample.unsqueeze(1)
    top = (gumbel * sample).sum(dim=-1, keepdim=True)
    return sample * top + (1 - sample) * -torch.logaddexp(-(log_pi + gumbel), -top)


@pytest.mark.parametrize("eta, tau2, tau", [(1.0, 0.7, 1.3), (0.5, 1.0, 1.0)])
def test_reinmax_cv_backward_is_reinmax_plus_eta_rao_minus_gumbel_softmax(eta, tau2, tau):
    k = 6
    hparams = {"cv_eta": eta, "cv_tau2": tau2, "reinmax_tau": tau, "rao_samples": k}
    logits, grad, _, sample, g_y, kl = _linear_case("reinmax-cv", hparams, seed=2)
    noise = Noise(torch.Generator().manual_seed(2), len(logits))
    gumbel = noise.gumbel(*logits.shape[1:])
    conditional = noise.gumbel(k, *logits.shape[1:])
    log_half = torch.log(0.5 * (torch.softmax(logits, -1) + sample))
    relaxed = _jacobian_product(torch.softmax((log_half + gumbel) / tau2, -1), g_y) / tau2
    perturbed = conditional_perturbed_logits(log_half, sample, conditional)  # (B, K, D, C)
    rao = _jacobian_product(torch.softmax(perturbed / tau2, -1), g_y.unsqueeze(1)).mean(1) / tau2
    expected = _reinmax_gradient(logits, sample, g_y, tau) + eta * (rao - relaxed) + kl
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


def test_reinmax_cv_with_eta_zero_is_reinmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 3)
    cv_grad, cv_y, _ = _run("reinmax-cv", {"cv_eta": 0.0, "reinmax_tau": 1.3, "rao_samples": 3}, logits, seed=3)
    grad, y, _ = _run("reinmax", {"reinmax_tau": 1.3}, logits, seed=3)
    torch.testing.assert_close(cv_y, y, atol=1e-6, rtol=0)  # the same sample (y rounds differently)
    torch.testing.assert_close(cv_grad, grad, atol=1e-7, rtol=0)


def test_decoupled_st_samples_at_tau_f_and_backpropagates_softmax_at_tau_b():
    tau_f, tau_b = 0.5, 2.0
    logits, grad, y, _, g_y, kl = _linear_case("decoupled-st", {"tau_forward": tau_f, "tau_backward": tau_b})
    gumbel = Noise(torch.Generator().manual_seed(1), len(logits)).gumbel(*logits.shape[1:])
    sample = one_hot_argmax(torch.log_softmax(logits, -1) / tau_f + gumbel)  # Gumbel-max of softmax(theta / tau_f)
    torch.testing.assert_close(y, sample, atol=1e-6, rtol=0)
    # the linear case's g_y is for the sample at tau_f = 1: this one's, with the same weights
    torch.manual_seed(0)
    _, weights = torch.randn(4, 2, 5) * 2, torch.randn(4, 2, 5)
    g_y = torch.sigmoid((sample * weights).sum(dim=(1, 2)))[:, None, None] * weights / 4
    expected = _jacobian_product(torch.softmax(logits / tau_b, -1), g_y) / tau_b + kl
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


def test_decoupled_st_with_tau_f_one_is_st_at_tau_b():
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 3)
    grad, y, _ = _run("decoupled-st", {"tau_backward": 1.7}, logits, seed=4)
    st_grad, st_y, _ = _run("st", {"st_tau": 1.7}, logits, seed=4)
    assert torch.equal(y, st_y) and torch.equal(grad, st_grad)


@pytest.mark.parametrize("name, hparams, message", [
    ("reinmax-cv", {"cv_tau2": 0.0}, "cv_tau2"), ("reinmax-cv", {"cv_eta": -1.0}, "cv_eta"),
    ("decoupled-st", {"tau_forward": 0.0}, "tau_forward"), ("indecater", {"indecater_samples": 0}, "indecater_samples")])
def test_settings_are_checked(name, hparams, message):
    with pytest.raises(DVAEError, match=message):
        make_method(name, hparams)
