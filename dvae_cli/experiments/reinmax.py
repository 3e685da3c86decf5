"""`dvae reproduce --suite reinmax`: the field's MNIST-VAE benchmark (presets.REINMAX) over latent
shapes x estimators x seeds, each estimator at its own tuned settings, with the published per-seed
records (records.json, docs/RECORDS.md) beside dvae's rows.

Each (shape, method, seed) is a run folder `<out>/<C>x<L>-<method>-seed<k>`. Every run trains on all
training images and is read at its last epoch, as the reference does. Reported per run:
- what the reference reports: the last epoch's training -ELBO (the average of the training pass, with
  the estimator's own forward sample) and the test -ELBO with one forward sample per image, which for
  every method of the suite is an exact one-hot sample (dvae's end-of-epoch test evaluation);
- beside it, dvae's exact one-hot evaluation of the final model on the whole training set;
- code use (classes used, mean max pi, on test) and seconds per epoch.

Owns: the suite's plan, its evaluation cache, the records beside it and its results files. Must
not: spell CLI flags, train (a runner does) or print.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from importlib import resources
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..commandline import suite_command
from ..distributed import resolve_device
from ..errors import DVAEError
from ..evaluate import evaluate
from ..fileio import atomic_write_text
from ..figures import save_figure, suite_figure
from ..methods import get_method
from ..presets import apply_preset, get_preset
from ..progress import Reporter
from ..runfolder import LAST, read_metrics
from ..train import TrainConfig
from .plan import EVAL_SEED, RESULTS_JSON, RESULTS_MD, Outcome, PlannedRun, Splits, cached, evaluated, fmt, mean_std

SUITE_METHODS = ("st", "st-gumbel", "gumbel-rao", "gst", "reinmax", "reinmax-cv", "decoupled-st", "rloo",
                 "dtp")  # dtp: with its diversity term; indecater (D x C decoder passes an image) on request
SUITE_EVAL_CACHE, SUITE_FIGURE = "suite-eval.json", "results.png"
RECORDS = "records.json"
SPREAD = 2.0  # dvae's mean further than this many of a record's seed sds from its mean: "disagrees"


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


def suite_config(base: TrainConfig, shape: tuple[int, int], method: str, preset: str) -> TrainConfig:
    """One (shape, method)'s settings: `base` (epochs, device, data, train_limit) under the preset."""
    get_method(method)
    model = dataclasses.replace(base.model, classes=shape[0], latent_vars=shape[1])
    return apply_preset(dataclasses.replace(base, method=method, hparams={}, model=model), preset, {"epochs"})


def plan_suite(shapes: list[tuple[int, int]], methods: list[str], seeds: list[int], out: str | Path,
               base: TrainConfig, preset: str = "reinmax") -> list[PlannedRun]:
    """Every (shape, method, seed) of the suite as a run with its complete settings and folder."""
    if not (shapes and methods and seeds):
        raise DVAEError("the suite needs at least one shape, one method and one seed")
    out, plan = Path(out), []
    for shape in shapes:
        for method in methods:
            config = suite_config(base, shape, method, preset)
            group = f"{shape[0]}x{shape[1]} {method}"
            plan += [PlannedRun(dataclasses.replace(config, seed=seed), run_folder(out, shape, method, seed),
                                f"{group} seed {seed}", group) for seed in seeds]
    return plan


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


def load_records() -> list[dict]:
    """The published per-seed records shipped with dvae (numbers and their sources only)."""
    return json.loads(resources.files(__package__).joinpath(RECORDS).read_text())["records"]


def record_beside(records: list[dict], preset: str, shape: str, method: str) -> dict | None:
    """The published records of (shape, method), the source's best configuration: mean and sample sd
    over their seeds, their count, settings and sources; None when there are none."""
    mine = [r for r in records if (r["protocol"], r["shape"], r["method"]) == (preset, shape, method) and r.get("best")]
    if not mine:
        return None
    summary = {"n_seeds": len(mine), "epochs": mine[0]["epochs"], "settings": mine[0]["settings"],
               "sources": sorted({f"{r['source']['repository']}@{r['source']['commit'][:7]}" for r in mine})}
    for key in ("train_neg_elbo", "test_neg_elbo"):
        values = [r[key] for r in mine]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    return summary


def agreement(row: dict) -> str:
    """Whether dvae's row lies within SPREAD seed sds of its record (only at the record's epochs)."""
    record = row.get("record")
    if not record or not row["mean"]:
        return ""
    if {record["epochs"]} != set(row.get("epochs_run") or [row["epochs"]]):
        return f"record at {record['epochs']} epochs"
    far = [key.split("_")[0] for key in ("train_neg_elbo", "test_neg_elbo")
           if record[f"{key}_std"] is not None
           and abs(row["mean"][key] - record[key]) > SPREAD * record[f"{key}_std"]]
    return f"disagrees ({', '.join(far)})" if far else "agrees"


def read_suite(plan: list[PlannedRun], outcomes: dict[Path, Outcome], out: str | Path, base: TrainConfig,
               preset: str = "reinmax", reporter: Reporter | None = None) -> dict:
    """Evaluate the finished runs of `plan`, one row per (shape, method) with its settings and the
    records beside it; write results.json, results.md and results.png into `out`."""
    out, reporter = Path(out), reporter or Reporter()
    protocol, records = get_preset(preset), load_records()
    data = plan[0].config.data
    splits = Splits(base.data_dir, base.train_limit, resolve_device(base.device), data)
    rows = []
    for group in dict.fromkeys(run.group for run in plan):
        members = [run for run in plan if run.group == group]
        runs, failed = evaluated(members, outcomes, lambda run: evaluate_suite_run(run, splits), reporter)
        config = members[0].config
        shape = f"{config.model.classes}x{config.model.latent_vars}"
        tuning = protocol.tuning(config.method, config.model.classes, config.model.latent_vars)
        furthest = max((r["metrics"]["epoch"] for r in runs), default=0)
        behind = [r for r in runs if r["metrics"]["epoch"] < furthest]  # a suite read part-way: kept apart
        runs = [r for r in runs if r["metrics"]["epoch"] == furthest]
        mean, std = mean_std(runs)
        row = {"shape": shape, "method": config.method, "epochs": config.epochs,
               "epochs_run": [furthest] if runs else [], "behind": behind, "lr": config.lr,
               "optimizer": config.optimizer, "hparams": config.hparams,
               "settings_source": None if tuning is None else tuning.tuned.source,
               "own_settings": None if tuning is None else tuning.own,
               "seeds": [r["seed"] for r in runs], "mean": mean, "std": std, "runs": runs, "failed": failed,
               "record": record_beside(records, preset, shape, config.method)}
        row["agreement"] = agreement(row)
        rows.append(row)
    results = {
        "protocol": {"suite": preset, "summary": protocol.summary, "epochs": base.epochs,
                     "train_limit": base.train_limit, "eval_seed": EVAL_SEED, "checkpoint": "last epoch",
                     "data": data.to_dict()},
        "rows": rows,
    }
    atomic_write_text(out / RESULTS_JSON, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / RESULTS_MD, suite_markdown(results))
    if any(row["mean"] for row in rows):
        save_figure(suite_figure(results), out / SUITE_FIGURE)
    return results


SUITE_COLUMNS = ["shape (C x L)", "method", "seeds", "epochs", "settings", "temperature", "train -ELBO", "test -ELBO",
                 "train -ELBO, one-hot eval", "classes used", "max pi", "s/epoch", "published train", "published test",
                 "vs published"]


def _settings(row: dict) -> str:
    own = " *" if row.get("own_settings") is False else ""
    return f"{row['lr']:g} ({row['optimizer']}){own}"


def _record(row: dict, key: str) -> str:
    record = row.get("record")
    if not record:
        return ""
    std = record[f"{key}_std"]
    return f"{record[key]:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" (n={record['n_seeds']})"


def suite_markdown(results: dict) -> str:
    """results.md: the protocol and one row per (shape, method), mean ± sd over seeds, beside the records."""
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
            row["shape"], row["method"], str(len(row["seeds"])), ", ".join(map(str, row.get("epochs_run", []))),
            _settings(row),
            "" if temperature is None else f"{temperature:g}", fmt(row, "train_neg_elbo"),
            fmt(row, "test_neg_elbo"), fmt(row, "train_neg_elbo_onehot"), fmt(row, "test_classes_used"),
            fmt(row, "test_mean_max_prob", 3), fmt(row, "seconds_per_epoch", 1),
            _record(row, "train_neg_elbo"), _record(row, "test_neg_elbo"), row.get("agreement", "")]) + " |")
    failed = [(row, f) for row in results["rows"] for f in row.get("failed", [])]
    sources = sorted({s for row in results["rows"] if row.get("record") for s in row["record"]["sources"]})
    lines += [
        "",
        "- epochs: the epochs the row's runs ran (a suite read before it finished has partial runs, each at "
        "its last complete epoch; a row averages its runs that went furthest, the others are listed below).",
        "- settings: lr (optimizer) and temperature, each estimator's own tuned values for the shape "
        "(dvae_cli/presets.py names the source of each); * marks an estimator with no tuned value, run at "
        "ReinMax's.",
        "- train -ELBO: the average -ELBO of the last epoch's training pass, with the estimator's own forward "
        "sample (what the reference script prints as 'Average loss').",
        "- test -ELBO: the test set with one forward sample per image after the last epoch (for every method "
        "here an exact one-hot sample), as the reference prints 'Test set loss'.",
        "- train -ELBO, one-hot eval: dvae's evaluation of the final model on the whole training set with one "
        "exact one-hot sample per image.",
        "- The targets are grey values in [0, 1] (the protocol's Bernoulli cross-entropy): these -ELBOs are not "
        "bounds on the likelihood of a discrete image. classes used, max pi: on test. s/epoch: training and "
        "the end-of-epoch test evaluation.",
        f"- published: the per-seed records of the same protocol, shape and estimator (the source's best "
        f"configuration), mean ± sample sd over n seeds; vs published: 'disagrees' where dvae's mean lies more "
        f"than {SPREAD:g} of the records' seed sds from theirs (only compared at the records' epochs). "
        f"Sources: {', '.join(sources) or 'none for these rows'} (docs/RECORDS.md).",
        *(f"- FAILED: {row['shape']} {row['method']} seed {f['seed']} ({f['run']}): {f['message']}" for row, f in failed),
        *(f"- not in the row's mean, still training: {row['shape']} {row['method']} seed {r['seed']} at epoch "
          f"{r['metrics']['epoch']}: train {r['metrics']['train_neg_elbo']:.2f}, test {r['metrics']['test_neg_elbo']:.2f}"
          for row in results["rows"] for r in row.get("behind", [])),
        "",
    ]
    return "\n".join(lines)
