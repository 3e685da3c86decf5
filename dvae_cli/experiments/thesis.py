"""`dvae reproduce` (the thesis's suite): the thesis's models (and, optionally, every other method)
over several seeds, evaluated under one protocol and compared with its Table 5.1.

Each (model, seed) is a run folder `<out>/<model>-seed<k>`, executed by a runner (runners.py).
Evaluation uses the best checkpoint (lowest validation -ELBO) with exact one-hot samples, and is
cached in the run folder, so re-running is cheap.

Owns: the model catalogue, the thesis's results.json and results.md. Must not: spell CLI flags
(commandline.py), train (a runner does) or print (the CLI prints the tables).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..commandline import train_command
from ..distributed import resolve_device
from ..errors import DVAEError, Setting, SettingError
from ..evaluate import evaluate, relaxed_log_lik
from ..fileio import atomic_write_text
from ..progress import Reporter
from ..runfolder import BEST, read_metrics
from ..train import TrainConfig
from .plan import (EVAL_SEED, RESULTS_JSON, RESULTS_MD, Outcome, PlannedRun, Splits, cached, evaluated, fmt,
                   mean_std)

EVAL_CACHE = "reproduce-eval.json"


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a method with fixed hyper-parameters."""

    name: str  # run folder prefix and --methods choice
    label: str
    method: str
    hparams: dict = field(default_factory=dict)
    thesis: dict[str, float] | None = None  # Table 5.1: reconstruction log-likelihood, "train" and "valid"
    train: dict = field(default_factory=dict)  # TrainConfig fields that differ from the shared protocol (e.g. lr)


TABLE_5_1_DTP = {"train": -70.102, "valid": -72.545}
THESIS_MODELS = [
    Entry("dtp", "target propagation with the code-diversity term warmed up over 10 epochs (dvae's default)", "dtp", {},
          TABLE_5_1_DTP),
    Entry("gumbel-tau0.5", "Gumbel-Softmax tau=0.5", "gumbel", {"tau_min": 0.5},
          {"train": -63.876, "valid": -64.401}),
    Entry("gumbel-tau0.1", "Gumbel-Softmax tau=0.1", "gumbel", {"tau_min": 0.1, "anneal_rate": 0.046},
          {"train": -68.883, "valid": -68.623}),
]
EXTRA_MODELS = [
    Entry("dtp-literal", "target propagation, literal reading (no diversity term)", "dtp", {"diversity": 0.0},
          TABLE_5_1_DTP),
    Entry("dtp-div0.1", "DTP, diversity weight 0.1, no warm-up", "dtp", {"diversity": 0.1, "diversity_warmup": 0}),
    Entry("dtp-div0.3", "DTP, diversity weight 0.3, no warm-up", "dtp", {"diversity": 0.3, "diversity_warmup": 0}),
    Entry("dtp-div3", "DTP, diversity weight 3, no warm-up", "dtp", {"diversity": 3.0, "diversity_warmup": 0}),
    Entry("dtp-div1", "DTP, diversity weight 1 from the first step (no warm-up)", "dtp",
          {"diversity": 1.0, "diversity_warmup": 0}),
    Entry("dtp-div-beta", "DTP, diversity 1 and per-image KL beta 0 -> 0.01 over 10 epochs", "dtp",
          {"diversity": 1.0, "beta_max": 0.01}),
    Entry("dtp-div-inverse", "DTP, diversity 1 and the inverse loss", "dtp",
          {"diversity": 1.0, "dtp_inverse_loss": True}),
    Entry("st-div", "straight-through with the diversity term (w = 1)", "st", {"diversity": 1.0}),
    Entry("st-gumbel-div", "straight-through Gumbel-Softmax with the diversity term (w = 1)", "st-gumbel",
          {"diversity": 1.0}),
    Entry("reinmax-div", "ReinMax with the diversity term (w = 1)", "reinmax", {"diversity": 1.0}),
    Entry("dtp-sample", "DTP, sample target y + pi(x) - pi(x')", "dtp", {"dtp_target": "sample"}),
    Entry("dtp-inverse", "DTP with inverse loss", "dtp", {"dtp_inverse_loss": True}),
    Entry("dtp-log-mse", "DTP, log correction + squared error", "dtp", {"dtp_correction": "log"}),
    Entry("dtp-log-ce", "DTP, log correction + cross-entropy", "dtp", {"dtp_correction": "log", "dtp_loss": "ce"}),
    Entry("dtp-log-ce-inverse", "DTP, log correction + cross-entropy + inverse loss", "dtp",
          {"dtp_correction": "log", "dtp_loss": "ce", "dtp_inverse_loss": True}),
    Entry("st-gumbel", "straight-through Gumbel-Softmax", "st-gumbel", {}),
    Entry("st", "straight-through", "st", {}),
    Entry("reinmax", "ReinMax", "reinmax", {}),
    Entry("rloo", "REINFORCE, leave-one-out baseline", "rloo", {}),
    Entry("gst", "gapped straight-through, gap 1 (Fan et al. 2022)", "gst", {}),
    Entry("gumbel-rao", "Gumbel-Rao, 100 samples (Paulus et al. 2021)", "gumbel-rao", {}),
    Entry("reinmax-cv", "ReinMax-CV, eta 1, tau2 0.7 (Wang and Bui 2026)", "reinmax-cv", {}),
    Entry("decoupled-st", "decoupled straight-through, tau_f = tau_b = 1 (Shah et al. 2024)", "decoupled-st", {}),
    Entry("indecater", "IndeCateR, 1 sample: D x C = 300 decoder passes an image (De Smet et al. 2023)",
          "indecater", {}),
    Entry("gumbel-lr1e-3", "Gumbel-Softmax tau=0.5, Adam lr 1e-3 (tuned)", "gumbel", {"tau_min": 0.5},
          train={"lr": 1e-3}),
    Entry("st-gumbel-lr1e-3", "straight-through Gumbel-Softmax, Adam lr 1e-3", "st-gumbel", {},
          train={"lr": 1e-3}),
    Entry("reinmax-lr1e-3", "ReinMax, Adam lr 1e-3", "reinmax", {}, train={"lr": 1e-3}),
]
MODELS = {m.name: m for m in THESIS_MODELS + EXTRA_MODELS}


def select_models(names: list[str] | None = None, include_all: bool = False) -> list[Entry]:
    """The models named (in the catalogue's order), else the thesis's three, plus the rest with `include_all`."""
    if names is None:
        return THESIS_MODELS + (EXTRA_MODELS if include_all else [])
    if include_all:
        raise SettingError("give either ", Setting("methods"), " or ", Setting("all"), ", not both")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise DVAEError(f"unknown model(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MODELS)}")
    return [m for m in MODELS.values() if m.name in names]


def evaluate_run(run: Path, splits: Splits, iw_samples: int) -> dict:
    """Metrics of the run's best checkpoint on train, valid and test, under "metrics", with the
    checkpoint's fingerprint under "key"; cached in the run folder."""
    ckpt = load_checkpoint(run / BEST, splits.device)
    key = {"fingerprint": ckpt.fingerprint, "iw_samples": iw_samples, "train_limit": splits.train_limit,
           "seed": EVAL_SEED}
    return cached(run / EVAL_CACHE, key, lambda: _evaluate(run, ckpt, splits, iw_samples))


def _evaluate(run: Path, ckpt, splits: Splits, iw_samples: int) -> dict:
    result = {"epoch": ckpt.epoch,
              "seconds_per_epoch": statistics.fmean(m["seconds"] for m in read_metrics(run))}
    for split in ("train", "valid", "test"):
        r = evaluate(ckpt.model, splits[split], iw_samples if split == "test" else 0, EVAL_SEED)
        result.update({f"{split}_{k}": r[k] for k in ("log_lik", "kl", "neg_elbo", "mean_max_prob")})
        result[f"{split}_classes_used"] = r["perplexity_mean"]
        if split == "test":
            result["test_neg_iw_log_px"] = -r["iw_log_px"]
    if ckpt.method == "gumbel":
        result["tau"] = tau = ckpt.metrics["tau"]
        generator = torch.Generator(device=splits.device)
        for split in ("train", "valid"):
            generator.manual_seed(EVAL_SEED)
            result[f"{split}_relaxed_log_lik"] = relaxed_log_lik(ckpt.model, splits[split], tau, generator)
    return result


def summarize(model: Entry, runs: list[dict]) -> dict:
    """Mean and (sample) std over seeds of every metric; the difference to Table 5.1."""
    mean, std = mean_std(runs)
    row = {"name": model.name, "label": model.label, "method": model.method, "hparams": model.hparams,
           "train": model.train,
           "seeds": [r["seed"] for r in runs], "mean": mean, "std": std, "runs": runs, "thesis": model.thesis}
    if model.thesis and mean:
        row["difference"] = {s: mean[f"{s}_log_lik"] - model.thesis[s] for s in ("train", "valid")}
    return row


def plan_thesis(plan: list[tuple[Entry, list[int]]], out: str | Path, base: TrainConfig) -> list[PlannedRun]:
    """Every (model, seed) of `plan` as a run: `base`'s settings (epochs, batch size, lr, device, data,
    train_limit) with the model's method, hyper-parameters and changes."""
    out = Path(out)
    return [PlannedRun(dataclasses.replace(base, method=model.method, hparams=dict(model.hparams), seed=seed,
                                           **model.train), out / f"{model.name}-seed{seed}", f"{model.name} seed {seed}",
                       model.name)
            for model, seeds in plan for seed in seeds]


def read_thesis(plan: list[tuple[Entry, list[int]]], runs: list[PlannedRun], outcomes: dict[Path, Outcome],
                out: str | Path, base: TrainConfig, iw_samples: int = 100, reporter: Reporter | None = None) -> dict:
    """Evaluate the finished runs, one row per model beside Table 5.1; write results.json and results.md."""
    if iw_samples < 1:
        raise DVAEError(f"the importance-weighted bound needs at least 1 sample, got {iw_samples}")
    out, reporter = Path(out), reporter or Reporter()
    splits = Splits(base.data_dir, base.train_limit, resolve_device(base.device), base.data)
    rows = []
    for model, _ in plan:
        members = [run for run in runs if run.group == model.name]
        records, failed = evaluated(members, outcomes, lambda run: evaluate_run(run, splits, iw_samples), reporter)
        rows.append({**summarize(model, records), "failed": failed})
    results = {
        "protocol": {"epochs": base.epochs, "batch_size": base.batch_size, "lr": base.lr,
                     "train_limit": base.train_limit, "iw_samples": iw_samples, "eval_seed": EVAL_SEED,
                     "checkpoint": "best (lowest validation -ELBO)", "codes": "exact one-hot samples"},
        "models": rows,
    }
    atomic_write_text(out / RESULTS_JSON, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / RESULTS_MD, markdown(results))
    return results


def thesis_cells(row: dict, split: str) -> tuple[str, str]:
    """Table 5.1's number and our difference to it, or blanks for models the thesis lacks."""
    if not row["thesis"] or "difference" not in row:
        return "", ""
    return f"{row['thesis'][split]:.3f}", f"{row['difference'][split]:+.2f}"


COLUMNS = [
    "model", "seeds", "train log p(x|y)", "thesis", "diff", "valid log p(x|y)", "thesis", "diff",
    "relaxed train / valid", "KL", "valid -ELBO", "test -ELBO", "test -log p(x) (IW)", "max prob", "classes used",
    "s/epoch",
]


def table_rows(results: dict) -> list[list[str]]:
    """The Markdown table's cells, one list per model (in COLUMNS order)."""
    cells = []
    for row in results["models"]:
        relaxed = f"{fmt(row, 'train_relaxed_log_lik')} / {fmt(row, 'valid_relaxed_log_lik')}" \
            if "train_relaxed_log_lik" in row["mean"] else ""
        cells.append([
            row["name"], str(len(row["seeds"])),
            fmt(row, "train_log_lik"), *thesis_cells(row, "train"),
            fmt(row, "valid_log_lik"), *thesis_cells(row, "valid"),
            relaxed, fmt(row, "valid_kl"), fmt(row, "valid_neg_elbo"), fmt(row, "test_neg_elbo"),
            fmt(row, "test_neg_iw_log_px"), fmt(row, "valid_mean_max_prob", 4),
            fmt(row, "valid_classes_used"), fmt(row, "seconds_per_epoch", 1),
        ])
    return cells


def train_flags(row: dict) -> str:
    """The `dvae train` command of a model (beyond --seed, --epochs and the protocol's defaults)."""
    return train_command(row["method"], {**row["hparams"], **row["train"]})


def markdown(results: dict) -> str:
    """results.md: the protocol, the table beside Table 5.1, and how to read it."""
    p = results["protocol"]
    lines = [
        "# dvae reproduce: the thesis's Table 5.1 and more",
        "",
        f"Epochs: {p['epochs']}, batch {p['batch_size']}, Adam lr {p['lr']}, "
        f"{'all' if p['train_limit'] is None else p['train_limit']} training images; "
        f"best checkpoint by validation -ELBO; every metric per image, mean ± std over seeds.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(c) + " |" for c in table_rows(results)),
        "",
        "Models:",
        "",
        *(f"- {row['name']}: {row['label']}; `{train_flags(row)}`" for row in results["models"]),
        "",
        "- log p(x|y): reconstruction log-likelihood (Table 5.1's metric), with y an exact one-hot "
        "sample of q(y|x) for every method; diff = ours - thesis.",
        "- relaxed (Gumbel-Softmax only): log p(x|y) with y the relaxed Gumbel-Softmax sample at the "
        "checkpoint's temperature, what the training pass measures. The thesis's Gumbel numbers were "
        "most likely measured this way, so compare them with this column.",
        f"- KL: KL(q(y|x) || uniform) on valid. -log p(x): importance-weighted bound, K = {p['iw_samples']} "
        "samples from q(y|x). max prob: mean over variables of max_k pi_k on valid (codes are always "
        "one-hot at evaluation). classes used: perplexity of the valid-mean pi per variable, averaged "
        "over variables (10 = every class used evenly, 1 = a constant code). s/epoch: training plus per-epoch validation.",
        *(f"- FAILED: {row['name']} seed {f['seed']} ({f['run']}): {f['message']}"
          for row in results["models"] for f in row.get("failed", [])),
        "",
    ]
    return "\n".join(lines)
