"""The run folder that `dvae train` writes, and where checkpoints are found.

    runs/dtp-20261129-093000/
        config.json        {"train": TrainConfig, "environment": versions and machine}
        metrics.jsonl      one JSON record per completed epoch
        best.safetensors   the checkpoint of the lowest validation -ELBO so far
        last.safetensors   the checkpoint of the last completed epoch
        state.safetensors  what --resume needs (weights, optimizer, random state)

    runs/dtp-20261129-093000/seed-1/   `dvae train --seeds 1,2`: one such folder per seed

Owns: the file names, reading and writing config.json and metrics.jsonl, and turning a checkpoint
argument (file, run folder, `pretrained:NAME`, nothing) into a file. Must not: train, or read the
safetensors files themselves (checkpoint.py does); it imports no torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import DVAEError
from .fileio import atomic_write_text
from .pretrained import is_pretrained, pretrained_path

CONFIG, METRICS = "config.json", "metrics.jsonl"
BEST, LAST, STATE = "best.safetensors", "last.safetensors", "state.safetensors"
RUNS = Path("runs")  # where new runs go and where the default checkpoint is looked for
ENV_CKPT = "DVAE_CKPT"


def epoch_checkpoint(epoch: int) -> str:
    """The file name of the checkpoint `dvae train --save-every` keeps after epoch `epoch`."""
    return f"epoch-{epoch:04d}.safetensors"


def seed_folder(group: str | os.PathLike, seed: int) -> Path:
    """The run folder of seed `seed` among several runs trained together into `group`."""
    return Path(group) / f"seed-{seed}"


def is_run(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a run folder (it holds a config.json)."""
    return (Path(folder) / CONFIG).is_file()


def group_runs(group: str | os.PathLike) -> list[Path]:
    """The run folders in `group` (itself not one), in name order; [] for none."""
    group = Path(group)
    if not group.is_dir() or is_run(group):
        return []
    return sorted((d for d in group.iterdir() if is_run(d)), key=lambda d: (len(d.name), d.name))


def monitor_split(valid_size: int) -> str:
    """The split a run evaluates after each epoch: its validation split, or the test split when it
    trains on all training images (valid_size 0; its best checkpoint is then its last)."""
    return "valid" if valid_size else "test"


def monitored(record: dict, name: str) -> float:
    """An epoch record's metric `name` (e.g. "neg_elbo") on the split the run monitored."""
    return record.get(f"valid_{name}", record.get(f"test_{name}", float("nan")))


def default_out(method: str) -> Path:
    """A new run's folder: runs/<method>-<timestamp>."""
    return RUNS / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def has_epoch(run_dir: str | os.PathLike) -> bool:
    """Whether the folder holds a run with a complete epoch (what --resume continues from)."""
    return (Path(run_dir) / STATE).exists()


def clear_unfinished(run_dir: str | os.PathLike) -> bool:
    """Remove what a run that never completed an epoch left (it cannot be resumed); whether there was any."""
    found = False
    for name in (CONFIG, METRICS, BEST, LAST):
        path = Path(run_dir) / name
        if path.is_file():
            path.unlink()
            found = True
    return found


MAX_RECORD_BYTES = 64 << 20  # config.json and metrics.jsonl: far above any run's, checked before reading


def _read_text(path: Path) -> str:
    """A run record's text: its size checked first, UTF-8 (anything else is a corrupt record)."""
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise DVAEError(f"{path}: {size:,} bytes, over the {MAX_RECORD_BYTES:,} a run record may have")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DVAEError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); a corrupt run record") from None
    except OSError as e:
        raise DVAEError(f"{path}: cannot read it ({e.strerror})") from None


def read_config(run_dir: str | os.PathLike) -> dict:
    """The whole config.json of a run folder: {"train": ..., "environment": ...}."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise DVAEError(f"{run_dir}: not a run folder (no {CONFIG})")
    try:
        saved = json.loads(_read_text(path))
        saved["train"]["method"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DVAEError(f"{path}: corrupt run config ({e})") from None
    return saved


def write_config(run_dir: str | os.PathLike, saved: dict) -> None:
    """Write config.json (atomically)."""
    atomic_write_text(Path(run_dir) / CONFIG, json.dumps(saved, indent=2) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of a run folder's metrics.jsonl ([] before its first epoch)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    try:
        records = [json.loads(line) for line in _read_text(path).splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DVAEError(f"{path}: corrupt metrics ({e})") from None
    if not all(isinstance(m, dict) and type(m.get("epoch")) is int for m in records):
        raise DVAEError(f"{path}: corrupt metrics (every line must be a record with its epoch)")
    return records


def write_metrics(run_dir: str | os.PathLike, metrics: list[dict]) -> None:
    """Write metrics.jsonl (atomically), one record a line."""
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))


def read_run(run_dir: str | os.PathLike) -> tuple[str, list[dict]]:
    """A run folder's method (from config.json) and per-epoch metrics (metrics.jsonl)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS
    if not path.is_file():
        what = "not a run folder" if not (run_dir / CONFIG).is_file() else "no epoch finished yet"
        raise DVAEError(f"{run_dir}: {what} (no {METRICS})")
    metrics = read_metrics(run_dir)
    method = read_config(run_dir)["train"]["method"]
    if not metrics:
        raise DVAEError(f"{path}: no epochs recorded yet")
    return method, metrics


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, a run folder's best (else last) checkpoint, or a shipped `pretrained:NAME`."""
    if is_pretrained(path):
        return pretrained_path(path)
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        runs = group_runs(path)
        if runs:
            raise DVAEError(f"{path} holds {len(runs)} runs ({', '.join(r.name for r in runs)}); name one, "
                            f"e.g. {runs[0]}")
        raise DVAEError(f"{path}: run folder without {BEST} or {LAST} (has training finished an epoch?)")
    if not path.exists():
        raise DVAEError(f"{path}: no such checkpoint file or run folder")
    return path


def default_checkpoint(runs: str | os.PathLike = RUNS) -> Path:
    """The checkpoint to use when none is given: $DVAE_CKPT, else the best checkpoint of the run
    under `runs` (or one level further, seed-N of several trained together) that wrote a
    checkpoint last, else the shipped `pretrained:best`."""
    if os.environ.get(ENV_CKPT):
        return resolve_checkpoint(os.environ[ENV_CKPT])
    folders = [*Path(runs).glob("*"), *Path(runs).glob("*/seed-*")]  # runs, and runs trained together
    found = [f for d in folders for f in (d / BEST, d / LAST) if f.is_file()]
    if not found:
        return resolve_checkpoint("pretrained:best")
    return resolve_checkpoint(max(found, key=lambda f: f.stat().st_mtime).parent)
