"""dvae's straight-through estimators beside the reference implementation's (not a test).

The reference is the code of the ReinMax paper (Liu et al. 2023), github.com/LiyuanLucasLiu/ReinMax:
its `mnist_vae/model/categorical.py` (`categorical_repara`) dispatches to the estimators of
`mnist_vae/model/basic.py` (`st`, `reinmax`, `rao_gumbel`, `gst_mover`) and to PyTorch's
`F.gumbel_softmax(hard=True)` for ST Gumbel-Softmax. It is never part of dvae: fetch a copy and
point --reference at its root (the folder holding `mnist_vae/`).

    PYTHONPATH=. python bench/estimators_vs_reference.py --reference /path/to/ReinMax [--cv-reference PATH]

ReinMax-CV's reference is the code of its paper (Wang and Bui 2026), danielwang0452's
`reinmax_jacobians.py` (method 'reinmax_cv', with `rao_gumbel_v4` from `reinmax_v2.py` beside it):
--cv-reference names the folder that holds both. That code fixes ReinMax's temperature at 1 and sets
tau2 to the temperature it is given, so it is compared at tau = tau2 = 1. Its forward saves the relaxed
sample softmax((theta + g) / tau) where its backward (and its comment, "pi_G is softmax_tau(theta+G)")
reads the Gumbel noise G; here `save_for_backward` is patched to save G itself, the estimator the
paper describes (unpatched, the control variate's Gumbel-Softmax term is a softmax of log pi_half
plus probabilities, and the gradients differ by up to 0.85 where their largest entry is 2.8, at eta = 1).

Both sides get the same raw logits theta (B, D, K) and the same upstream gradient dL/dy. dvae's
method runs its own `loss` on a stub model whose encoder returns log_softmax(theta) and whose
decoder records the code y; the reference's function gets theta itself. For each estimator the
script prints the largest absolute difference of the forward value y and of dL/dtheta
(autograd of y against the same upstream gradient), and the size of that gradient.

Identical random draws: dvae draws through `methods.Noise`; here a `PresetNoise` hands it uniforms
drawn beforehand, and the reference's own random calls are patched (unittest.mock, only while it
runs) to return what those uniforms mean:
- the one-hot sample: `torch.multinomial` (st, reinmax) returns the class of dvae's Gumbel-max
  sample, `OneHotCategorical.sample` (gst, rao) returns that one-hot;
- exponentials: `Tensor.exponential_` fills its tensor with E = -log u from the same uniforms, so
  that F.gumbel_softmax's Gumbels -log E are dvae's -log(-log u) bit for bit (st-gumbel), and the
  exponentials of rao's conditional Gumbels are those whose -log is dvae's Gumbel draw (rao's
  draws are (B, D, K, R), dvae's (B, R, D, K): the same numbers, permuted).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch

from dvae_cli.methods import PresetNoise, make_method
from dvae_cli.model import ModelConfig, one_hot_sample


class Stub(torch.nn.Module):
    """Encoder: log_softmax(theta); decoder: records the code (the loss's value is not used)."""

    def __init__(self, theta):
        super().__init__()
        self.theta = theta
        self.config = ModelConfig(latent_vars=theta.shape[1], classes=theta.shape[2], hidden=1, input_size=1)

    def encode(self, x):
        return torch.log_softmax(self.theta, dim=-1)

    def decode(self, y):
        self.y = y
        return torch.zeros(len(y), 1)


def exponentials(uniform):
    """E = -log u, the inner step of dvae's Gumbel noise -log(-log u) (model.gumbel_noise)."""
    return -torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny))


def dvae_side(name, hparams, schedule, theta, upstream, draws):
    theta = theta.clone().requires_grad_(True)
    stub = Stub(theta)
    make_method(name, hparams).loss(stub, torch.zeros(len(theta), 1), PresetNoise(draws, len(theta)), schedule)
    return stub.y.detach(), torch.autograd.grad(stub.y, theta, upstream)[0]


def reference_side(repara, method, tau, theta, upstream, sample, exponential):
    """The reference's estimator `method` with its random calls answered by our draws."""
    theta = theta.clone().requires_grad_(True)

    def multinomial(probs, num_samples, replacement=False, **kwargs):
        return sample.reshape(-1, sample.shape[-1]).argmax(-1, keepdim=True)

    def fill_exponential(self, *args, **kwargs):
        with torch.no_grad():
            return self.copy_(exponential.reshape(self.shape))

    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(torch, "multinomial", multinomial))
        patches.enter_context(mock.patch.object(torch.distributions.OneHotCategorical, "sample",
                                                lambda self, sample_shape=torch.Size(): sample.clone()))
        patches.enter_context(mock.patch.object(torch.Tensor, "exponential_", fill_exponential))
        y, _ = repara(theta, tau, method)
    return y.detach(), torch.autograd.grad(y, theta, upstream)[0]


# (label, dvae method, its settings, its schedule, the reference's method name, temperature)
CASES = [
    ("st tau=1", "st", {}, {}, "st", 1.0),
    ("st tau=1.5", "st", {"st_tau": 1.5}, {}, "st", 1.5),
    ("st-gumbel tau=1", "st-gumbel", {}, {"tau": 1.0}, "gumbel", 1.0),
    ("st-gumbel tau=0.5", "st-gumbel", {}, {"tau": 0.5}, "gumbel", 0.5),
    ("reinmax tau=1.3", "reinmax", {"reinmax_tau": 1.3}, {}, "reinmax", 1.3),
    ("gumbel-rao K=100 tau=1", "gumbel-rao", {}, {}, "rao_gumbel-100", 1.0),
    ("gumbel-rao K=10 tau=0.5", "gumbel-rao", {"rao_samples": 10, "rao_tau": 0.5}, {}, "rao_gumbel-10", 0.5),
    ("gst gap=1 tau=1", "gst", {}, {}, "gst-1.0", 1.0),
    ("gst gap=2 tau=0.7", "gst", {"gst_gap": 2.0, "gst_tau": 0.7}, {}, "gst-2.0", 0.7),
]


# (label, dvae settings): the reference's reinmax_cv at temperature 1 with eta = cv_eta
CV_CASES = [
    ("reinmax-cv eta=1 K=100", {"reinmax_tau": 1.0, "cv_tau2": 1.0, "cv_eta": 1.0}),
    ("reinmax-cv eta=0.5 K=100", {"reinmax_tau": 1.0, "cv_tau2": 1.0, "cv_eta": 0.5}),
    ("reinmax-cv eta=0 K=100", {"reinmax_tau": 1.0, "cv_tau2": 1.0, "cv_eta": 0.0}),
]


def reinmax_cv_reference(module, eta, theta, upstream, gumbel, exponentials_in_order):
    """The reference's reinmax_cv with its exponentials answered in order and G saved as the noise."""
    theta = theta.clone().requires_grad_(True)
    queue = list(exponentials_in_order)

    def fill_exponential(self, *args, **kwargs):
        with torch.no_grad():
            return self.copy_(queue.pop(0).reshape(self.shape))

    original = torch.autograd.function.FunctionCtx.save_for_backward

    def save_noise(ctx, *tensors):  # (D, theta, pi, tau, relaxed sample) -> (..., G)
        return original(ctx, *tensors[:4], gumbel) if len(tensors) == 5 else original(ctx, *tensors)

    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(torch.Tensor, "exponential_", fill_exponential))
        patches.enter_context(mock.patch.object(torch.autograd.function.FunctionCtx, "save_for_backward",
                                                save_noise))
        y, _ = module.reinmax_jacobian(theta, SimpleNamespace(eta=eta), 1.0, "reinmax_cv")
        grad = torch.autograd.grad(y, theta, upstream)[0]
    return y.detach(), grad


def compare_reinmax_cv(folder: Path, theta, upstream, generator) -> None:
    sys.path.insert(0, str(folder))  # it imports reinmax_v2 as a top-level module
    module = importlib.import_module("reinmax_jacobians")
    sys.path.pop(0)
    for label, hparams in CV_CASES:
        first = torch.rand(theta.shape, generator=generator)
        repeats = make_method("reinmax-cv", hparams).config.rao_samples
        second = torch.rand((theta.shape[0], repeats, *theta.shape[1:]), generator=generator)
        y, grad = dvae_side("reinmax-cv", hparams, {}, theta, upstream, [first, second])
        gumbel = -torch.log(exponentials(first))
        ref_y, ref_grad = reinmax_cv_reference(
            module, hparams["cv_eta"], theta, upstream, gumbel,
            [exponentials(first), exponentials(second).permute(0, 2, 3, 1)])  # the reference's (B, D, K, R)
        print(f"{label:<26}{(y - ref_y).abs().max().item():>12.2e}{(grad - ref_grad).abs().max().item():>14.2e}"
              f"{grad.abs().max().item():>12.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="root of a copy of LiyuanLucasLiu/ReinMax")
    parser.add_argument("--cv-reference", type=Path, help="folder with ReinMax-CV's reinmax_jacobians.py and "
                        "reinmax_v2.py (danielwang0452)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--latent-vars", type=int, default=30)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.reference / "mnist_vae"
    if not (folder / "model" / "categorical.py").is_file():
        sys.exit(f"{args.reference} does not hold mnist_vae/model/categorical.py")
    sys.path.insert(0, str(folder))  # the reference imports its estimators as the package `model`
    repara = importlib.import_module("model.categorical").categorical_repara
    sys.path.pop(0)

    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.latent_vars, args.classes)
    theta = 2 * torch.randn(shape, generator=generator) + 3  # raw, unnormalized logits
    upstream = torch.randn(shape, generator=generator)
    print(f"{'estimator':<26}{'max |dy|':>12}{'max |dgrad|':>14}{'max |grad|':>12}")
    for label, name, hparams, schedule, ref_method, tau in CASES:
        first = torch.rand(shape, generator=generator)  # the sample's Gumbel-max draw
        draws, exponential = [first], exponentials(first)
        if name == "gumbel-rao":
            repeats = make_method(name, hparams).config.rao_samples
            second = torch.rand((args.batch, repeats, *shape[1:]), generator=generator)
            draws.append(second)
            exponential = exponentials(second).permute(0, 2, 3, 1)  # the reference's (B, D, K, R)
        y, grad = dvae_side(name, hparams, schedule, theta, upstream, draws)
        sample = one_hot_sample(torch.log_softmax(theta, -1), -torch.log(exponentials(first)))
        if name == "st-gumbel":  # its sample is the argmax of the relaxed one, from the same Gumbels
            sample = y.round()
        ref_y, ref_grad = reference_side(repara, ref_method, tau, theta, upstream, sample, exponential)
        print(f"{label:<26}{(y - ref_y).abs().max().item():>12.2e}{(grad - ref_grad).abs().max().item():>14.2e}"
              f"{grad.abs().max().item():>12.2e}")
    if args.cv_reference:
        compare_reinmax_cv(args.cv_reference, theta, upstream, generator)


if __name__ == "__main__":
    main()
