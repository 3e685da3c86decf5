"""Each training method's encoder update, measured against the true gradient of the -ELBO.

Owns the reference gradient, the draws of a method's update, the numbers that compare them and
their figures; no printing, no flags (the CLI is cli/gradients.py).

- Reference: the gradient of the batch-mean -ELBO, mean_b [KL_b - E_q log p(x_b|y)], w.r.t. the
  encoder's parameters. The KL term's gradient is exact (analytic); the reconstruction term's,
  E_q[log p(x|y) grad log q(y|x)], is the score-function estimate with S samples per image and a
  leave-one-out baseline (Kool et al. 2019), unbiased, computed in G independent groups of S/G
  samples so that their spread gives the estimate's standard error.
- A method's update: the gradient w.r.t. the encoder's parameters of its training loss, the
  code-diversity term included (methods.MethodLoss): what the optimizer gets. R draws, each with new noise.
- DTP's update follows a target, not the ELBO (the thesis, 3 and 5.2.1): its scale is its own, so
  only its direction (cosine with the reference) and its signal-to-noise ratio are comparable.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import Checkpoint
from .errors import Setting, SettingError
from .methods import Method, Noise, make_method
from .model import DiscreteVAE, kl_to_uniform, log_likelihood
from .progress import Reporter
from .methods import MethodLoss
from .train import LEGACY_HPARAMS
from .seeds import check_seed
from .terminal import shown_lines

if TYPE_CHECKING:
    from matplotlib.figure import Figure

QUANTILES = (0.1, 0.5, 0.9)  # of the single-draw cosines
LINE_STYLES = ("-", "--", ":", "-.")  # one per run in the over-training figure
DECODER_ROWS = 20_000  # decoder passes per chunk of the reference: bounds its memory (~150 MB)


class Moments:
    """Running mean of vectors and the trace of their covariance (Welford, in float64)."""

    def __init__(self) -> None:
        self.count, self.squares = 0, 0.0
        self.mean: Tensor | None = None

    def add(self, vector: Tensor) -> None:
        vector = vector.double()
        if self.mean is None:
            self.mean = torch.zeros_like(vector)
        self.count += 1
        delta = vector - self.mean
        self.mean += delta / self.count
        self.squares += torch.dot(delta, vector - self.mean).item()

    def trace_covariance(self) -> float:
        """sum_i Var(v_i) of one vector (unbiased; needs two vectors)."""
        return self.squares / (self.count - 1)


def encoder_gradient(model: DiscreteVAE, output: Tensor, grad_output: Tensor | None = None,
                     retain_graph: bool = False) -> Tensor:
    """d output / d (encoder parameters), flattened into one vector."""
    grads = torch.autograd.grad(output, list(model.encoder.parameters()), grad_outputs=grad_output,
                                retain_graph=retain_graph)
    return torch.cat([g.flatten() for g in grads])


@dataclass
class Reference:
    """The reference gradient and its own error."""

    gradient: Tensor  # (P,) float64
    kl_gradient: Tensor  # (P,) its exact KL part; the rest is the reconstruction part
    standard_error: float  # sqrt(trace of the covariance of `gradient`), from the G groups' spread
    samples: int  # S per image
    groups: int  # G
    seconds: float

    def summary(self) -> dict:
        norm = self.gradient.norm().item()
        return {"samples": self.samples, "groups": self.groups, "norm": norm,
                "kl_norm": self.kl_gradient.norm().item(),
                "reconstruction_norm": (self.gradient - self.kl_gradient).norm().item(),
                "standard_error": self.standard_error, "relative_standard_error": self.standard_error / norm,
                "seconds": self.seconds}


def reference_gradient(model: DiscreteVAE, x: Tensor, samples: int, generator: torch.Generator,
                       groups: int = 20, reporter: Reporter | None = None) -> Reference:
    """The -ELBO's encoder gradient on the batch x: exact KL part, score-function reconstruction part.

    Per group of n = S/G samples y_s ~ q(y|x) and f_s = log p(x|y_s), the leave-one-out estimate of
    grad E_q f is sum_s (f_s - mean of the other f) grad log q(y_s) / n
    = sum_s (f_s - fbar) grad log q(y_s) / (n - 1); since log q(y_s) = sum_dk y_sdk log pi_dk, it
    is the gradient of sum_dk c_dk log pi_dk with c = (sum_s f_s y_s - fbar sum_s y_s) / (n - 1),
    so the samples only accumulate c, chunk by chunk, and one backward pass per group follows.
    """
    if groups < 2 or samples < 2 * groups:
        raise SettingError(Setting("reference_samples"), f" must be at least {2 * groups} (2 per group of {groups})")
    reporter = reporter or Reporter()
    start_time = time.perf_counter()
    cfg, batch = model.config, len(x)
    per_group = samples // groups
    log_pi = model.encode(x)
    pi = log_pi.detach().exp().flatten(0, 1)  # (B*D, K)
    kl = encoder_gradient(model, kl_to_uniform(log_pi).mean(), retain_graph=True).double()
    chunk = max(1, DECODER_ROWS // batch)
    reporter.task("reference", f"reference: {per_group * groups:,} samples x {batch} images", per_group * groups)
    moments = Moments()
    for _ in range(groups):
        weighted = torch.zeros(log_pi.shape, dtype=torch.float64, device=x.device)  # sum_s f_s y_s
        counts = torch.zeros_like(weighted)  # sum_s y_s
        total = torch.zeros(batch, dtype=torch.float64, device=x.device)  # sum_s f_s
        for first in range(0, per_group, chunk):
            n = min(chunk, per_group - first)
            with torch.no_grad():  # n exact samples per image (cheaper than Gumbel-max's D*K noises)
                index = torch.multinomial(pi, n, replacement=True, generator=generator)  # (B*D, n)
                y = F.one_hot(index.T.reshape(n, batch, cfg.latent_vars), cfg.classes).to(x.dtype)
                f = log_likelihood(model.decode(y.flatten(0, 1)), x.repeat(n, 1)).view(n, batch)
                weighted += torch.einsum("sb,sbdk->bdk", f.double(), y.double())
                counts += y.sum(dim=0).double()
                total += f.double().sum(dim=0)
            reporter.advance("reference", n)
        coefficient = (weighted - (total / per_group)[:, None, None] * counts) / (per_group - 1)
        reconstruction = encoder_gradient(model, log_pi, (-coefficient / batch).to(log_pi.dtype), retain_graph=True)
        moments.add(reconstruction)  # the KL part is exact: the groups differ in this part only
    return Reference(kl + moments.mean, kl, math.sqrt(max(moments.trace_covariance(), 0.0) / groups),
                     per_group * groups, groups, time.perf_counter() - start_time)


@dataclass
class Estimator:
    """A method as it would train now: its loss and the schedule's values (tau, beta, diversity)."""

    label: str
    method: Method
    schedule: dict[str, float]


@dataclass
class Comparison:
    """One method's update against the reference (norms relative to ||reference||)."""

    method: str
    elbo_gradient: bool  # False (DTP): bias, variance and norm are not comparable, only directions
    repeats: int
    cosine: float  # of the mean update with the reference
    reconstruction_cosine: float  # of its reconstruction part with the reference's (see `compare`)
    draw_cosines: dict[str, float]  # quantiles of the single-draw cosines with the reference
    snr: float  # ||mean update|| / sqrt(trace Cov) of one draw
    relative_bias: float | None  # ||mean - reference|| / ||reference||
    bias_noise_floor: float | None  # its expected value for an unbiased method: sqrt(trCov / R + se^2) / ||ref||
    bias: float | None  # the estimate of ||E update - true gradient|| / ||ref||: sqrt(max(0, bias^2 - floor^2))
    relative_std: float | None  # sqrt(trace Cov of one draw) / ||reference||
    relative_norm: float | None  # ||mean update|| / ||reference||
    schedule: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _cosine(a: Tensor, b: Tensor) -> float:
    return (torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)).item()


def compare(model: DiscreteVAE, x: Tensor, estimator: Estimator, reference: Reference, repeats: int,
            generator: torch.Generator, reporter: Reporter | None = None) -> Comparison:
    """R draws of the estimator's encoder update on the batch x, each with new noise, against `reference`.

    `reconstruction_cosine` leaves the exact KL gradient out of both sides: every ELBO estimator
    adds it exactly, so the rest is its estimate of the reconstruction term's gradient; DTP's update
    (KL weight beta, 0 by default) is compared whole with the reference's reconstruction part.
    """
    if repeats < 2:
        raise SettingError(Setting("repeats"), " must be at least 2 (the variance needs two draws)")
    reporter = reporter or Reporter()
    start_time = time.perf_counter()
    loss = MethodLoss(model, estimator.method)
    moments, cosines = Moments(), []
    reporter.task("draws", f"{estimator.label}: {repeats} draws", repeats)
    for _ in range(repeats):
        step = loss(x, Noise(generator, len(x)), estimator.schedule)
        update = encoder_gradient(model, step.loss).double()
        moments.add(update)
        cosines.append(_cosine(update, reference.gradient))
        reporter.advance("draws")
    mean, variance, ref_norm = moments.mean, moments.trace_covariance(), reference.gradient.norm().item()
    elbo = estimator.method.elbo_gradient
    raw_bias = (mean - reference.gradient).norm().item() / ref_norm
    floor = math.sqrt(variance / repeats + reference.standard_error**2) / ref_norm
    reconstruction = reference.gradient - reference.kl_gradient
    return Comparison(
        method=estimator.label, elbo_gradient=elbo, repeats=repeats,
        cosine=_cosine(mean, reference.gradient),
        reconstruction_cosine=_cosine(mean - reference.kl_gradient if elbo else mean, reconstruction),
        draw_cosines={f"{q:.0%}": float(np.quantile(cosines, q)) for q in QUANTILES},
        snr=mean.norm().item() / math.sqrt(variance) if variance > 0 else math.inf,
        relative_bias=raw_bias if elbo else None,
        bias_noise_floor=floor if elbo else None,
        bias=math.sqrt(max(0.0, raw_bias**2 - floor**2)) if elbo else None,
        relative_std=math.sqrt(variance) / ref_norm if elbo else None,
        relative_norm=mean.norm().item() / ref_norm if elbo else None,
        schedule=estimator.schedule, seconds=time.perf_counter() - start_time,
    )


def estimators(checkpoint: Checkpoint, names: list[str], tau: float | None = None) -> list[Estimator]:
    """The methods `names` as they would train the checkpoint's model in its next epoch: the
    checkpoint's own method with its recorded hyper-parameters, the others with their defaults;
    `tau` replaces the temperature of the relaxed methods."""
    result = []
    for name in names:
        hparams = {**LEGACY_HPARAMS, **checkpoint.hparams} if name == checkpoint.method else {}
        method = make_method(name, hparams)
        schedule = method.schedule(checkpoint.epoch)
        if tau is not None and "tau" in schedule:
            schedule["tau"] = tau
        result.append(Estimator(name, method, schedule))
    return result


@dataclass
class Report:
    """Every method against the reference, on one checkpoint and batch."""

    checkpoint: str  # as the user named it (e.g. pretrained:best)
    path: str  # the file
    method: str  # the checkpoint's
    epoch: int
    images: int
    reference: dict  # Reference.summary()
    comparisons: list[Comparison]

    def to_dict(self) -> dict:
        return asdict(self)


def measure(checkpoint: Checkpoint, x: Tensor, methods: list[Estimator], samples: int, repeats: int,
            seed: int = 0, reporter: Reporter | None = None, label: str | None = None) -> Report:
    """The reference gradient on the batch x, then each method's R draws against it.

    Every method draws its noise from a generator seeded with `seed` + 1, so that its numbers do
    not depend on which other methods are measured."""
    model = checkpoint.model
    reference = reference_gradient(model, x, samples, torch.Generator(x.device).manual_seed(check_seed(seed)), reporter=reporter)
    comparisons = [compare(model, x, estimator, reference, repeats, torch.Generator(x.device).manual_seed(seed + 1),
                           reporter) for estimator in methods]
    return Report(label or str(checkpoint.path), str(checkpoint.path), checkpoint.method, checkpoint.epoch, len(x), reference.summary(), comparisons)


# ---- figures ------------------------------------------------------------------------------

def bias_variance_figure(comparisons: list[Comparison], title: str) -> Figure:
    """Measured relative bias ||mean - ref|| / ||ref|| against the relative std of one draw, one
    point per ELBO estimator, each with its noise floor (the value an unbiased method would show)
    as a grey dash. DTP, not an ELBO gradient, is named with its alignment in the subtitle."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.subplots()
    shown = [c for c in comparisons if c.elbo_gradient]
    for i, c in enumerate(shown):
        ax.plot(c.relative_std, c.relative_bias, "o", color=f"C{i}", label=shown_lines(f"{c.method}  (cos {c.cosine:.2f})"))
        ax.plot(c.relative_std, c.bias_noise_floor, "_", color="grey", markersize=14, markeredgewidth=2,
                label="noise floor (unbiased)" if i == 0 else None)
        ax.annotate(c.method, (c.relative_std, c.relative_bias), textcoords="offset points", xytext=(6, 4),
                    fontsize=9)
    ax.set_xlabel("relative std of one draw  sqrt(trace Cov) / ||ref||")
    ax.set_ylabel("relative bias  ||mean - ref|| / ||ref||")
    ax.set_xlim(0, 1.15 * max([c.relative_std for c in shown], default=1.0))  # room for the labels
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8)
    others = [c for c in comparisons if not c.elbo_gradient]
    subtitle = "; ".join(f"{c.method}: not an ELBO gradient, cos(mean, ref) {c.cosine:.2f}" for c in others)
    ax.set_title(shown_lines(subtitle), fontsize=9)
    fig.suptitle(shown_lines(title), fontsize=10)
    return fig


def training_figure(series: dict[tuple[str, str], list[tuple[int, Comparison]]], title: str) -> Figure:
    """Over training, against the checkpoint's epoch, one line per (run, method) series, a colour
    per method and a line style per run: the cosine of the mean update with the reference, the same
    for the reconstruction parts, and the median single-draw cosine."""
    from matplotlib.figure import Figure

    panels = (("cos(mean update, reference)", lambda c: c.cosine),
              ("cos of the reconstruction parts (KL left out)", lambda c: c.reconstruction_cosine),
              ("median cos(one draw, reference)", lambda c: c.draw_cosines["50%"]))
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True)
    runs = list(dict.fromkeys(run for run, _ in series))
    methods = list(dict.fromkeys(method for _, method in series))
    for (run, method), points in series.items():
        points = sorted(points, key=lambda p: p[0])
        style = {"color": f"C{methods.index(method) % 10}", "marker": "o", "markersize": 3,
                 "linestyle": LINE_STYLES[runs.index(run) % len(LINE_STYLES)], "label": f"{run}: {method}"}
        for ax, (_, value) in zip(axes, panels):
            ax.plot([e for e, _ in points], [value(c) for _, c in points], **style)
    for ax, (name, _) in zip(axes, panels):
        ax.set_title(shown_lines(name), fontsize=10)
        ax.set_xlabel("epoch")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(shown_lines(title), fontsize=10)
    return fig


def reports_figure(reports: list[Report]) -> Figure:
    """Bias against std for one report; for several (checkpoints of runs), the cosines against the
    epoch, one line per run folder and method."""
    if len(reports) == 1:
        report = reports[0]
        return bias_variance_figure(report.comparisons, f"{report.checkpoint} ({report.method}, epoch "
                                    f"{report.epoch}): encoder updates vs the -ELBO gradient")
    series: dict[tuple[str, str], list[tuple[int, Comparison]]] = {}
    for report in reports:
        for c in report.comparisons:
            series.setdefault((Path(report.path).parent.name, c.method), []).append((report.epoch, c))
    return training_figure(series, "Alignment of each method's encoder update with the -ELBO gradient")
