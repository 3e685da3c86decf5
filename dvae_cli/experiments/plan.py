"""A suite's plan and its results plumbing: the runs (each a complete TrainConfig and its folder),
what a folder holds already, and the reading of finished runs into rows.

The run is the unit and its folder is its state: a complete folder is skipped, a partial one is
resumed from its last complete epoch, an empty one is trained; a folder of other settings is refused.
Both suites (thesis.py, reinmax.py) plan through `PlannedRun`, execute through a runner
(runners.py) and summarize through `evaluated` and `mean_std`.

Owns: PlannedRun, the reuse rules of a folder, the evaluation cache, mean and sd over seeds.
Must not: train (runners.py does), spell CLI flags or print.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import DataConfig, load_split
from ..errors import Setting, SettingError
from ..fileio import atomic_write_text
from ..progress import Reporter
from ..runfolder import BEST, CONFIG, STATE, read_config, read_metrics
from ..train import TrainConfig

EVAL_SEED = 0  # the seed of `dvae eval`: `dvae eval RUN --split test --iw K` gives the same numbers
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
MATCHED = ("method", "hparams", "model", "data", "optimizer", "batch_size", "lr", "seed",
           "train_limit")  # must agree to reuse a run


@dataclass(frozen=True)
class PlannedRun:
    """One run of a suite: its complete settings, its folder, a label for people, and its group
    (runs that differ in their seed alone: what `--parallel` trains together in one process)."""

    config: TrainConfig
    folder: Path
    label: str
    group: str


@dataclass(frozen=True)
class Outcome:
    """What executing a planned run gave: 'complete' (it was already), 'resumed', 'trained' or
    'failed' (with the message that says why); reading a plan without training (`report_plan`) also
    gives 'partial' (some epochs done: read at its last) and 'missing' (none)."""

    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run can be read (partial runs too, at the epoch they reached)."""
        return self.status not in ("failed", "missing")


def run_status(config: TrainConfig, run: Path) -> str:
    """What bringing `run` to config.epochs complete epochs takes: 'complete' (nothing), 'resumed'
    or 'trained'; an error when the folder holds a run of other settings or more epochs."""
    if (run / CONFIG).is_file():
        try:
            saved = TrainConfig.from_dict(read_config(run)["train"]).to_dict()  # an old record as it reads today
        except (KeyError, TypeError) as e:
            raise SettingError(f"{run}: corrupt run config ({e}); choose another ", Setting("out")) from None
        wanted = config.to_dict()
        differ = [k for k in MATCHED if saved.get(k) != wanted[k]]
        if differ:
            raise SettingError(f"{run} holds a run with other settings ({', '.join(differ)}); choose another ",
                               Setting("out"))
    done = epochs_done(run)
    if done > config.epochs:
        raise SettingError(f"{run} has {done} epochs, more than ", Setting("epochs"), f" {config.epochs}; choose another ",
                           Setting("out"))
    if done == config.epochs and (run / BEST).is_file():
        return "complete"
    return "resumed" if (run / STATE).is_file() else "trained"


def epochs_done(run: Path) -> int:
    """The last complete epoch the folder records (0 for none or no folder)."""
    return max((m["epoch"] for m in read_metrics(run)), default=0) if (run / CONFIG).is_file() else 0


def check_plan(plan: list[PlannedRun]) -> dict[Path, str]:
    """Every run's status before anything trains (so that a folder of other settings stops the
    suite at once, not hours in), and no folder planned twice."""
    folders = [run.folder for run in plan]
    if len(set(folders)) != len(folders):
        raise SettingError("the plan holds a run folder twice; give distinct ", Setting("seeds"))
    return {run.folder: run_status(run.config, run.folder) for run in plan}


def report_plan(plan: list[PlannedRun]) -> dict[Path, Outcome]:
    """Each run's Outcome as its folder holds it now, training nothing: what a long suite has so far."""
    outcomes = {}
    for run in plan:
        status, done = run_status(run.config, run.folder), epochs_done(run.folder)
        outcomes[run.folder] = (Outcome("complete") if status == "complete" else
                                Outcome("partial", f"{done} of {run.config.epochs} epochs") if done else
                                Outcome("missing", "not started"))
    return outcomes


def cached(cache: Path, key: dict, compute: Callable[[], dict]) -> dict:
    """{"key": key, "metrics": compute()}, kept in `cache` and taken from it while its key is the same."""
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved
    evaluation = {"key": key, "metrics": compute()}
    atomic_write_text(cache, json.dumps(evaluation, indent=2) + "\n")
    return evaluation


def evaluated(runs: list[PlannedRun], outcomes: dict[Path, Outcome], evaluate_one: Callable[[Path], dict],
              reporter: Reporter) -> tuple[list[dict], list[dict]]:
    """The records of a row's runs that finished (seed, folder, status, fingerprint, `evaluate_one`'s
    metrics) and of those that failed (seed, folder, message)."""
    records, failed = [], []
    for run in runs:
        outcome = outcomes[run.folder]
        if outcome.status == "missing":
            continue
        if not outcome.ok:
            failed.append({"seed": run.config.seed, "run": str(run.folder), "message": outcome.message})
            continue
        reporter.log(f"{run.label}: {outcome.status} ({run.folder})")
        evaluation = evaluate_one(run.folder)
        records.append({"seed": run.config.seed, "run": str(run.folder), "status": outcome.status,
                        "fingerprint": evaluation["key"]["fingerprint"], "metrics": evaluation["metrics"]})
    return records, failed


def mean_std(runs: list[dict]) -> tuple[dict, dict]:
    """Mean and (sample) std over seeds of every metric all runs have (std None for one seed; both
    empty for no run)."""
    if not runs:
        return {}, {}
    keys = [k for k in runs[0]["metrics"] if all(k in r["metrics"] for r in runs)]
    values = {k: [r["metrics"][k] for r in runs] for k in keys}
    return ({k: statistics.fmean(v) for k, v in values.items()},
            {k: statistics.stdev(v) if len(v) > 1 else None for k, v in values.items()})


def fmt(row: dict, key: str, digits: int = 2, with_std: bool = True) -> str:
    """'mean ± std' of a metric ('' when the row lacks it; no std for one seed)."""
    if key not in row["mean"]:
        return ""
    mean, std = row["mean"][key], row["std"][key]
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if with_std and std is not None else "")


class Splits:
    """The evaluation splits of the data set the runs learned, loaded once and only when an
    evaluation is needed."""

    def __init__(self, data_dir: str | None, train_limit: int | None, device: torch.device, data: DataConfig):
        self.data_dir, self.train_limit, self.device, self.data = data_dir, train_limit, device, data
        self.loaded: dict[str, torch.Tensor] = {}

    def __getitem__(self, split: str) -> torch.Tensor:
        if split not in self.loaded:
            limit = self.train_limit if split == "train" else None  # train: the images the runs trained on
            self.loaded[split] = load_split(split, self.data_dir, limit, self.device, self.data)
        return self.loaded[split]
