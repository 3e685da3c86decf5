"""`dvae reproduce --suite reinmax` as a Python API: the field's MNIST-VAE benchmark (presets.REINMAX)
over latent shapes x estimators x seeds, beside the thesis's suite (reproduce.py).

Each (shape, method, seed) gets a run folder `<out>/<C>x<L>-<method>-seed<k>`, reused, resumed or
trained by the rules of reproduce.py (a folder of other settings is refused). Every run trains on all
training images and is read at its last epoch, as the reference does. Reported per run:
- what the reference reports: the last epoch's training -ELBO (the average of the training pass, with
  the estimator's own forward sample) and the test -ELBO with one forward sample per image, which for
  every method of the suite is an exact one-hot sample (dvae's end-of-epoch test evaluation);
- beside it, dvae's exact one-hot evaluation of the final model on the whole training set;
- code use (classes used, mean max pi, on test) and seconds per epoch.

Owns: the suite's plan, its evaluation cache and its results files. Must not: spell CLI flags or print.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from .checkpoint import load_checkpoint
from .commandline import suite_command
from .errors import DVAEError
from .evaluate import evaluate
from .fileio import atomic_write_text
from .figures import save_figure, suite_figure
from .methods import get_method
from .presets import apply_preset, get_preset
from .progress import Reporter
from .distributed import resolve_device
from .reproduce import EVAL_SEED, RESULTS_JSON, RESULTS_MD, Splits, cached, ensure_runs, evaluated, fmt, mean_std
from .runfolder import LAST, read_metrics
from .train import TrainConfig

SUITE_METHODS = ("st", "st-gumbel", "gumbel-rao", "gst", "reinmax", "rloo", "dtp")  # dtp: with its diversity term
SUITE_EVAL_CACHE, SUITE_FIGURE = "suite-eval.json", "results.png"


def parse_shape(text: str) -> tuple[int, int]:
    """'10x30' -> (10, 30): C classes x L variables, the reference's order."""
    try:
        classes, variables = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise DVAEError(f"a latent shape is C x L, classes by variables, like 10x30; got {text!r}") from None
    if classes < 2 or variables < 1:
        raise DVAEError(f"a latent shape needs at least 2 classes and 1 variable; got {text!r}")
    return classes, variables


def run_folder(out: Path, shape: tuple[int, int], method: str, seed: int) -> Path:
    return out / f"{shape[0]}x{shape[1]}-{method}-seed{seed}"


def evaluate_suite_run(run: Path, splits: Splits) -> dict:
    """The reference's numbers from the run's records and dvae's one-hot evaluation of its last
    checkpoint on train; cached in the run folder (keyed by the checkpoint's fingerprint)."""
    ckpt = load_checkpoint(run / LAST, splits.device)
    key = {"fingerprint": ckpt.fingerprint, "train_limit": splits.train_limit, "seed": EVAL_SEED}

    def compute() -> dict:
        metrics = read_metrics(run)
        last = metrics[-1]
        exact = evaluate(ckpt.model, splits["train"], iw_samples=0, seed=EVAL_SEED)
        return {"epoch": ckpt.epoch, "train_neg_elbo": last["train_neg_elbo"], "test_neg_elbo": last["test_neg_elbo"],
                "train_neg_elbo_onehot": exact["neg_elbo"], "test_classes_used": last["test_classes_used"],
                "test_mean_max_prob": last["test_mean_max_prob"],
                "seconds_per_epoch": statistics.fmean(m["seconds"] for m in metrics)}

    return cached(run / SUITE_EVAL_CACHE, key, compute)


def suite_configs(base: TrainConfig, shape: tuple[int, int], method: str, seeds: list[int],
                  preset: str) -> list[TrainConfig]:
    """The runs of one (shape, method): `base` (epochs, device, data, train_limit) under the preset."""
    get_method(method)
    classes, variables = shape
    model = dataclasses.replace(base.model, classes=classes, latent_vars=variables)
    config = apply_preset(dataclasses.replace(base, method=method, hparams={}, model=model), preset, {"epochs"})
    return [dataclasses.replace(config, seed=seed) for seed in seeds]


def reproduce_suite(shapes: list[tuple[int, int]], methods: list[str], seeds: list[int], out: str | Path,
                    base: TrainConfig, preset: str = "reinmax", reporter: Reporter | None = None,
                    parallel: int = 1) -> dict:
    """Train (or reuse) and evaluate every (shape, method, seed); write results.json, results.md and
    results.png into `out`. `base` gives epochs, device, data set and train_limit; the preset the rest."""
    if parallel < 1:
        raise DVAEError(f"parallel must be at least 1, got {parallel}")
    if not (shapes and methods and seeds):
        raise DVAEError("the suite needs at least one shape, one method and one seed")
    out, reporter = Path(out), reporter or Reporter()
    protocol = get_preset(preset)
    data = suite_configs(base, shapes[0], methods[0], seeds, preset)[0].data  # the preset's, for every run
    splits = Splits(base.data_dir, base.train_limit, resolve_device(base.device), data)
    rows = []
    for shape in shapes:
        for method in methods:
            configs = suite_configs(base, shape, method, seeds, preset)
            folders = [run_folder(out, shape, method, seed) for seed in seeds]
            statuses = ensure_runs(configs, folders, parallel, reporter)
            runs = evaluated(folders, seeds, statuses, f"{shape[0]}x{shape[1]} {method}",
                             lambda run: evaluate_suite_run(run, splits), reporter)
            rows.append(_summarize(shape, method, configs[0], runs))
    results = {
        "protocol": {"suite": preset, "summary": protocol.summary, "epochs": base.epochs,
                     "train_limit": base.train_limit, "eval_seed": EVAL_SEED, "checkpoint": "last epoch",
                     "data": data.to_dict()},
        "rows": rows,
    }
    atomic_write_text(out / RESULTS_JSON, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / RESULTS_MD, suite_markdown(results))
    save_figure(suite_figure(results), out / SUITE_FIGURE)
    return results


def _summarize(shape: tuple[int, int], method: str, config: TrainConfig, runs: list[dict]) -> dict:
    mean, std = mean_std(runs)
    return {"shape": f"{shape[0]}x{shape[1]}", "method": method, "lr": config.lr, "optimizer": config.optimizer,
            "hparams": config.hparams, "seeds": [r["seed"] for r in runs], "mean": mean, "std": std, "runs": runs}


SUITE_COLUMNS = ["shape (C x L)", "method", "seeds", "lr", "temperature", "train -ELBO", "test -ELBO",
                 "train -ELBO, one-hot eval", "classes used", "max pi", "s/epoch"]


def suite_markdown(results: dict) -> str:
    """results.md: the protocol and one row per (shape, method), mean ± sd over seeds."""
    p = results["protocol"]
    lines = [
        f"# {suite_command(p['suite'])}",
        "",
        f"{p['summary']}. Epochs: {p['epochs']}; "
        f"{'all' if p['train_limit'] is None else p['train_limit']} training images; the checkpoint of the "
        "last epoch; every number per image, mean ± sd over seeds.",
        "",
        "| " + " | ".join(SUITE_COLUMNS) + " |",
        "|" + "---|" * len(SUITE_COLUMNS),
    ]
    for row in results["rows"]:
        temperature = next((row["hparams"][k] for k in get_method(row["method"]).temperature), None)
        lines.append("| " + " | ".join([
            row["shape"], row["method"], str(len(row["seeds"])), f"{row['lr']:g} ({row['optimizer']})",
            "" if temperature is None else f"{temperature:g}", fmt(row, "train_neg_elbo"),
            fmt(row, "test_neg_elbo"), fmt(row, "train_neg_elbo_onehot"), fmt(row, "test_classes_used"),
            fmt(row, "test_mean_max_prob", 3), fmt(row, "seconds_per_epoch", 1)]) + " |")
    lines += [
        "",
        "- train -ELBO: the average -ELBO of the last epoch's training pass, with the estimator's own forward "
        "sample (what the reference script prints as 'Average loss').",
        "- test -ELBO: the test set with one forward sample per image after the last epoch (for every method "
        "here an exact one-hot sample), as the reference prints 'Test set loss'.",
        "- train -ELBO, one-hot eval: dvae's evaluation of the final model on the whole training set with one "
        "exact one-hot sample per image.",
        "- The targets are grey values in [0, 1] (the protocol's Bernoulli cross-entropy): these -ELBOs are not "
        "bounds on the likelihood of a discrete image. classes used, max pi: on test. s/epoch: training and "
        "the end-of-epoch test evaluation.",
        "",
    ]
    return "\n".join(lines)

