"""Evaluation's fast forms against their dense definitions: the gathered first decoder layer,
the broadcast log-likelihood, and the importance-weighted bound with the same random stream."""

import math

import pytest
import torch
import torch.nn.functional as F

from dvae_cli.evaluate import elbo_terms, iw_log_px
from dvae_cli.model import DiscreteVAE, ModelConfig, gumbel_noise, kl_to_uniform, log_likelihood, one_hot_sample


def _model(seed: int = 0, **shape) -> DiscreteVAE:
    torch.manual_seed(seed)
    model = DiscreteVAE(ModelConfig(**shape))
    with torch.no_grad():  # spread the weights so that logits reach the large values a trained model has
        for p in model.parameters():
            p.mul_(4)
    return model.eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, 784, generator=torch.Generator().manual_seed(seed)) > 0.7).float()


@pytest.mark.parametrize("shape", [{}, {"latent_vars": 3, "classes": 4, "hidden": 7}])
def test_decode_indices_is_decode_of_the_one_hot(shape):
    model = _model(**shape)
    d, k = model.config.latent_vars, model.config.classes
    indices = torch.randint(0, k, (64, d), generator=torch.Generator().manual_seed(2))
    dense = model.decode(F.one_hot(indices, k).float())
    gathered = model.decode_indices(indices)
    torch.testing.assert_close(gathered, dense, rtol=1e-5, atol=1e-4)
    # the same gradient reaches the decoder's weights
    dense.square().sum().backward()
    want = [p.grad.clone() for p in model.decoder.parameters()]
    model.zero_grad()
    model.decode_indices(indices).square().sum().backward()
    for p, w in zip(model.decoder.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-3)


def test_log_likelihood_broadcasts_and_is_the_bernoulli_cross_entropy():
    logits, x = torch.randn(5, 8, 784) * 20, _images(8)
    want = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    torch.testing.assert_close(log_likelihood(logits, x), want, rtol=1e-5, atol=1e-3)


def _dense_iw_log_px(model, x, samples, generator, rows=10_000):
    """The importance-weighted bound as first written: one-hot codes through the dense decoder."""
    cfg = model.config
    log_prior = -cfg.latent_vars * math.log(cfg.classes)
    log_pi = model.encode(x)
    per_chunk = max(1, rows // len(x))
    log_w = []
    for start in range(0, samples, per_chunk):
        lp = log_pi.expand(min(per_chunk, samples - start), *log_pi.shape)
        y = one_hot_sample(lp, gumbel_noise(torch.rand(lp.shape, generator=generator)))
        log_q = (y * lp).sum(dim=(-2, -1))
        x_logits = model.decode(y.reshape(-1, cfg.latent_vars, cfg.classes))
        log_lik = -F.binary_cross_entropy_with_logits(x_logits, x.repeat(len(lp), 1), reduction="none").sum(-1)
        log_w.append(log_lik.view(len(lp), len(x)) + log_prior - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(samples)


@torch.no_grad()
@pytest.mark.parametrize("samples, rows", [(100, 10_000), (7, 30)])
def test_iw_log_px_equals_the_dense_form_with_the_same_seed(samples, rows):
    model, x = _model(), _images(20)
    want = _dense_iw_log_px(model, x, samples, torch.Generator().manual_seed(5), rows)
    for decode_rows in (1, 60, 10_000):  # how the codes are chunked for decoding does not matter
        got = iw_log_px(model, x, samples, torch.Generator().manual_seed(5), rows, decode_rows)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-3)


@torch.no_grad()
def test_elbo_terms_equal_the_dense_form_with_the_same_seed():
    model, x = _model(), _images(30)
    got = elbo_terms(model, x, torch.Generator().manual_seed(3), batch_size=16)
    generator, log_lik, kl = torch.Generator().manual_seed(3), 0.0, 0.0
    for batch in x.split(16):
        log_pi = model.encode(batch)
        y = one_hot_sample(log_pi, gumbel_noise(torch.rand(log_pi.shape, generator=generator)))
        logits = model.decode(y)
        log_lik += -F.binary_cross_entropy_with_logits(logits, batch, reduction="none").sum().item()
        kl += kl_to_uniform(log_pi).sum().item()
    assert got["log_lik"] == pytest.approx(log_lik / len(x), rel=1e-6)
    assert got["kl"] == pytest.approx(kl / len(x), rel=1e-6)
