"""The training loop: a Run builds model, method, optimizer and data from a TrainConfig, trains
epoch by epoch and writes its run folder (through runfolder.py), under torchrun too. `fit` and
`train_epoch` are the one loop, for one run and for several trained together (multirun.RunGroup).

Owns: the settings of a run (TrainConfig, checked once), the loop, the schedule of an epoch, what an
epoch records. Must not: spell the run folder's
file names (runfolder.py), resolve devices (distributed.py) or parse CLI flags."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import torch

from . import distributed
from ._version import __version__
from .checkpoint import TrainState, load_state, save_checkpoint, save_state
from .data import DataConfig, draw_binary, load_split, unverified_default, verify_files
from .errors import DVAEError, Setting, SettingError
from .distributed import resolve_device
from .interrupts import deferred_interrupt
from .methods import Method, MethodLoss, Noise, make_method
from .evaluate import CodeUse, elbo_terms
from .model import DiscreteVAE, ModelConfig
from .optim import OPTIMIZERS, make_optimizer
from .progress import Reporter
from .runfolder import (BEST, LAST, STATE, clear_unfinished, default_out, epoch_checkpoint, has_epoch, monitor_split,
                        read_config, read_metrics, write_config, write_metrics)
from .runlock import run_lock
from .seeds import RANGE as SEED_RANGE, is_seed

LEGACY_HPARAMS = {"diversity": 0.0, "diversity_warmup": 0}  # what a run recorded without these fields used


@dataclass
class TrainConfig:
    """Every setting of a run; defaults are the thesis's (DEFAULT_DATA: its images thresholded at 0.5, 50 epochs, batch
    100, Adam 3e-4). Checked once, here; `hparams` is completed with the method's defaults (a new
    dict: the caller's is left alone)."""

    method: str = "dtp"
    hparams: dict = field(default_factory=dict)  # the method's hyper-parameters (see `dvae train --help`)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: str = "adam"
    epochs: int = 50
    batch_size: int = 100
    lr: float = 3e-4
    seed: int = 0
    train_limit: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    save_every: int = 0  # also keep epoch-XXXX.safetensors every N epochs (0 = only best and last)
    compile: bool = False  # torch.compile the loss (on CUDA in mode "reduce-overhead": CUDA graphs)
    preset: str | None = None  # the protocol (presets.py) these settings came from, for the record
    unverified_data: bool = field(default_factory=unverified_default)  # train on files a named data set does
    # not know (data.verify_files); default: $DVAE_UNVERIFIED_DATA

    def __post_init__(self) -> None:
        self._method = make_method(self.method, self.hparams)
        self.hparams = dataclasses.asdict(self._method.config)  # every value recorded, defaults too
        problems = {
            "optimizer": self.optimizer not in OPTIMIZERS and f"must be one of {', '.join(OPTIMIZERS)}",
            "epochs": not _is_int(self.epochs, 1) and "must be an integer >= 1",
            "batch_size": not _is_int(self.batch_size, 1) and "must be an integer >= 1",
            "lr": not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0)
                  and "must be a finite number > 0",
            "seed": not is_seed(self.seed) and f"must be {SEED_RANGE}",
            "train_limit": self.train_limit is not None and not _is_int(self.train_limit, 1)
                           and "must be an integer >= 1 (or none)",
            "save_every": not _is_int(self.save_every, 0) and "must be an integer >= 0",
        }
        for name, problem in problems.items():
            if problem:
                raise SettingError(Setting(name), f" {problem}, got {getattr(self, name)!r}")
        if self.model.input_size != self.data.pixels:
            raise SettingError(Setting("input_size"), f" is {self.model.input_size}, but the data set's images have "
                               f"{self.data.pixels} pixels ({self.data.label})")

    def identity(self) -> str:
        """What makes a run this run (every setting but the epochs to train, the device, where the
        data lies and whether it compiles), as a short hash: a resume state must carry its run's."""
        kept = {k: v for k, v in self.to_dict().items() if k not in ("epochs", "device", "data_dir", "compile", "unverified_data")}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def method_object(self) -> Method:
        """The method these settings describe, built once."""
        return self._method

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"], d["data"] = self.model.to_dict(), self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a run's record; a record made before an option existed gets what dvae did then."""
        return cls(**{**d, "hparams": {**LEGACY_HPARAMS, **d.get("hparams", {})}, "model": ModelConfig(**d["model"]),
                      "data": DataConfig.from_dict(d.get("data"))})


def _is_int(value: object, low: int) -> bool:
    return type(value) is int and value >= low


def load_data(config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's training images (the first train_limit; dynamic binarization: their grey values)
    and the targets of the split it monitors (runfolder.monitor_split), on `device`. The files are
    checked to be the named data set's first (unless `unverified_data`)."""
    if not config.unverified_data:
        verify_files(config.data, config.data_dir)
    return (load_split("train", config.data_dir, config.train_limit, device, config.data, training=True),
            load_split(monitor_split(config.data.valid_size), config.data_dir, device=device, data=config.data))


def environment(device: torch.device) -> dict:
    """Versions and machine facts recorded with every run."""
    return {
        "dvae_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "world_size": distributed.world_size(),
        "command": sys.argv,
    }


def _format_epoch(m: dict, epochs: int, split: str) -> str:
    sched = " ".join(f"{k} {m[k]:.4g}" for k in ("tau", "beta", "diversity") if k in m)
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train log p(x|y) {m['train_log_lik']:8.3f}  "
        f"{split} log p(x|y) {m[f'{split}_log_lik']:8.3f}  KL {m[f'{split}_kl']:6.3f}  "
        f"classes {m[f'{split}_classes_used']:4.2f}  train -ELBO {m['train_neg_elbo']:8.3f}  "
        f"{split} -ELBO {m[f'{split}_neg_elbo']:8.3f}  {sched}  {m['seconds']:.1f}s"
    )


def start_epoch(optimizer: torch.optim.Optimizer, config: TrainConfig, schedule: dict[str, float],
                device: torch.device) -> dict:
    """Set the epoch's learning rate; returns the schedule as the loss takes it (tensors when
    compiled, so that the next epoch's tau or beta is an input, not a recompile)."""
    for group in optimizer.param_groups:
        group["lr"] = config.lr * schedule.get("lr_scale", 1.0)
    if config.compile:
        return {k: torch.tensor(v, device=device) for k, v in schedule.items()}
    return schedule


class Learner(Protocol):
    """What updates the weights of the runs of `fit`: one Run itself, or several stacked (multirun.RunGroup)."""

    optimizer: torch.optim.Optimizer

    def step(self, batches: list[torch.Tensor], schedule: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on each run's batch (indices into its training images); log p(x|y) and KL (runs, images)."""

    def release(self) -> None:
        """Leave every run's model and optimizer holding the current weights (before it saves)."""


def train_epoch(runs: list[Run], learner: Learner, schedule: dict[str, float], reporter: Reporter) -> list[dict]:
    """One pass of every run over its own shuffle of the training set; each run's training averages.

    Each run draws its permutation, then per batch its binarization (dynamic) and its method's noise,
    from its own generator, in that order, whether it trains alone or with others. Under torchrun
    every process draws the same and takes its slice of each global batch (Run.step).
    """
    first = runs[0]
    cfg, size, device = first.config, len(first.train_data), first.device
    schedule = start_epoch(learner.optimizer, cfg, schedule, device)
    orders = [torch.randperm(size, generator=run.generator, device=device) for run in runs]
    sums = torch.zeros(len(runs), 2, device=device)
    for run in runs:
        run.model.train()
    for start in range(0, size, cfg.batch_size):
        log_lik, kl = learner.step([order[start : start + cfg.batch_size] for order in orders], schedule)
        sums += torch.stack([log_lik.sum(dim=-1), kl.sum(dim=-1)], dim=-1)
        reporter.advance("batches")
    averages = distributed.all_reduce_sum(sums) / size
    return [{"train_log_lik": log_lik, "train_kl": kl, "train_neg_elbo": kl - log_lik}
            for log_lik, kl in averages.tolist()]  # the one sync of the epoch


def fit(runs: list[Run], learner: Learner, reporter: Reporter, until: int | None = None) -> None:
    """Train every run (all at the same epoch, of one configuration but the seed) up to epoch `until`
    (default config.epochs), each checkpointing after every epoch: the one training loop of dvae."""
    first = runs[0]
    cfg = first.config
    last = cfg.epochs if until is None else until
    several = f", {len(runs)} runs" if len(runs) > 1 else ""
    reporter.task("epochs", f"{cfg.method} epochs{several}", last)
    reporter.advance("epochs", first.epoch)
    while first.epoch < last:
        t0 = time.perf_counter()
        schedule = first.method.schedule(first.epoch)
        reporter.task("batches", f"epoch {first.epoch + 1}", math.ceil(len(first.train_data) / cfg.batch_size))
        trains = train_epoch(runs, learner, schedule, reporter)
        for run, train in zip(runs, trains):
            run.check_finite(train)
        learner.release()
        for run in runs:
            run.epoch += 1
        if distributed.is_main():  # the others go on and wait for it in the next all-reduce
            with deferred_interrupt():  # every run completes the epoch, or none does
                for run, train in zip(runs, trains):
                    started = time.perf_counter()
                    run.end_epoch(train, schedule, t0)
                    t0 += time.perf_counter() - started  # a run's seconds: the shared training and its own validation
            reporter.advance("epochs")
    distributed.barrier()  # every process returns once the run folders are complete


class Run:
    """A run folder being trained: builds everything from a TrainConfig, or resumes one. Alone it is
    its own Learner (DistributedDataParallel under torchrun); several are stacked by multirun.RunGroup.

    Under torchrun (see distributed.py) every process builds the same Run, trains on its slice of
    each global batch, and only rank 0 evaluates, writes and reports.
    """

    def __init__(self, config: TrainConfig, out: Path, reporter: Reporter,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.config, self.out = config, out
        self.reporter = reporter if distributed.is_main() else Reporter()
        self.device = distributed.local_device(resolve_device(config.device))
        self.method = config.method_object
        self.train_data, self.valid_data = data or load_data(config, self.device)
        self.monitor = monitor_split(config.data.valid_size)  # valid_data: that split's targets
        torch.manual_seed(config.seed)  # the initial weights do not depend on the device
        self.model = DiscreteVAE(config.model).to(self.device)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr, self.device)
        self.loss = distributed.data_parallel(MethodLoss(self.model, self.method), self.device)
        if config.compile:
            self.loss = torch.compile(self.loss, mode="reduce-overhead" if self.device.type == "cuda" else None)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch, self.best = 0, math.inf
        self.metrics: list[dict] = []

    def restore(self) -> None:
        """Continue from the folder's state.safetensors (the last complete epoch)."""
        state = load_state(self.out / STATE)
        if state.run not in (None, self.config.identity()):
            raise DVAEError(f"{self.out / STATE}: the training state of another run (other settings or seed); "
                            f"this folder's config.json and its state disagree, so it cannot be resumed")
        if state.epoch > self.config.epochs:
            raise DVAEError(f"{self.out / STATE}: the state is at epoch {state.epoch}, past the run's "
                            f"{self.config.epochs} epochs")
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.rng)
        self.epoch, self.best = state.epoch, state.best
        self.metrics = [m for m in read_metrics(self.out) if m["epoch"] <= self.epoch]

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """The images of `batch` (indices) as the model trains on them: with dynamic binarization a
        fresh draw for the whole (global) batch from the run's generator."""
        x = self.train_data[batch]
        return draw_binary(x, self.generator) if self.config.data.binarize == "dynamic" else x

    def step(self, batches: list[torch.Tensor], schedule: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on this process's slice of the batch. Its mean loss is weighted by slice size *
        world size / batch size, so that the gradients DDP averages equal those of the whole batch's
        mean loss, even for uneven slices."""
        (batch,) = batches
        rows = distributed.shard(len(batch))
        x = self.inputs(batch)[rows]
        step = self.loss(x, Noise(self.generator, len(batch), rows), schedule)
        self.optimizer.zero_grad(set_to_none=True)
        (step.loss * (len(x) * distributed.world_size() / len(batch))).backward()
        self.optimizer.step()
        return step.log_lik[None], step.kl[None]

    def release(self) -> None:
        """Nothing to do: the run's model is what trains."""

    def train_epoch(self, schedule: dict[str, float]) -> dict[str, float]:
        """One epoch of this run alone (`train_epoch`); its training averages."""
        return train_epoch([self], self, schedule, self.reporter)[0]

    def fit(self, until: int | None = None) -> list[dict]:
        """Train up to epoch `until` (default config.epochs) alone, checkpointing after every epoch."""
        fit([self], self, self.reporter, until)
        return self.metrics

    def save(self, record: dict) -> None:
        """Checkpoints, metrics and (last, as the commit point) the resume state."""
        files = [LAST]
        if self.monitor == "test" or record["valid_neg_elbo"] < self.best:  # no validation split: best = last
            self.best = record[f"{self.monitor}_neg_elbo"]
            files.insert(0, BEST)
        if self.config.save_every and self.epoch % self.config.save_every == 0:
            files.append(epoch_checkpoint(self.epoch))
        for name in files:
            save_checkpoint(self.out / name, self.model, self.config.method, self.config.hparams, self.epoch, record,
                            {"train_config": self.config.to_dict()}, self.config.data)
        write_metrics(self.out, self.metrics)
        save_state(self.out / STATE, TrainState(
            self.epoch, self.model.state_dict(), self.optimizer.state_dict(),
            self.generator.get_state(), self.best, self.config.identity()))

    def check_finite(self, train: dict[str, float]) -> None:
        """Stop with a clear error when the epoch's training averages are not finite."""
        if not all(map(math.isfinite, train.values())):
            kept = (f"the last good checkpoint (epoch {self.epoch}) is kept in {self.out}" if self.epoch
                    else "no epoch completed, so there is nothing to keep or resume")
            raise DVAEError(f"training diverged in epoch {self.epoch + 1}: the loss is not finite "
                            f"({train}); {kept}")

    def end_epoch(self, train: dict[str, float], schedule: dict[str, float], t0: float) -> None:
        """Validate, write the epoch's files and report it (rank 0 alone)."""
        eval_generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        use = CodeUse(self.config.model.latent_vars, self.config.model.classes, self.device)
        valid = elbo_terms(self.model.eval(), self.valid_data, eval_generator, code_use=use)  # one pass for both
        codes = use.result()
        valid.update(classes_used=codes["perplexity_mean"], mean_max_prob=codes["mean_max_prob"])
        record = {"epoch": self.epoch, **train, **{f"{self.monitor}_{k}": v for k, v in valid.items()},
                  **{k: v for k, v in schedule.items() if k != "lr_scale"},
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        with deferred_interrupt():  # an epoch's files are written completely or not at all
            self.metrics.append(record)
            self.save(record)
        self.reporter.log(_format_epoch(record, self.config.epochs, self.monitor))


@contextlib.contextmanager
def writing(out: Path, reporter: Reporter) -> Iterator[None]:
    """Hold the run folder's lock (runlock.py) for the block: rank 0 alone, the one process that
    writes (the others start only once it holds the lock, in the process group's rendezvous)."""
    if not distributed.is_main():
        yield
        return
    with run_lock(out, on_takeover=reporter.log):
        yield


@contextlib.contextmanager
def starting(out: Path, reporter: Reporter) -> Iterator[None]:
    """A new run in `out` under the lock. Files of an earlier run that never completed an epoch are
    replaced; a run stopped (or failed) before its first epoch removes what it wrote, and the folder
    too when it made it, so no folder is left that neither a new run nor --resume would take."""
    created = not out.exists()
    try:
        with writing(out, reporter):
            if has_epoch(out):
                raise SettingError(f"{out} already holds a run; continue it with ", Setting("resume"), f" {out} or "
                                   "choose another ", Setting("out"))
            if distributed.is_main() and clear_unfinished(out):
                reporter.log(f"{out}: starting over (the run there stopped before completing an epoch)")
            try:
                yield
            except BaseException:
                if distributed.is_main() and not has_epoch(out):
                    clear_unfinished(out)
                raise
    except BaseException:
        if created and distributed.is_main():
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a folder another process is using is left alone
        raise


def train(config: TrainConfig, out: str | Path | None = None, reporter: Reporter | None = None) -> Path:
    """Train a new run into `out` (default runs/<method>-<timestamp>); returns the folder."""
    out = Path(out) if out is not None else default_out(config.method)
    reporter = reporter or Reporter()
    device = resolve_device(config.device)  # before the folder is touched (the settings were checked when built)
    with starting(out, reporter), distributed.process_group(device):
        run = Run(config, out, reporter)
        if distributed.is_main():
            write_config(out, {"train": config.to_dict(), "environment": environment(run.device)})
        run.fit()
    return out


def resume(
    out: str | Path, epochs: int | None = None, device: str | None = None, reporter: Reporter | None = None,
    data_dir: str | None = None,
) -> Path:
    """Continue the run in `out` from its last complete epoch (optionally to more epochs).

    `data_dir` points to the data set when it has moved since the run started (it must be the same).
    """
    out = Path(out)
    reporter = reporter or Reporter()
    read_config(out)  # a run folder (so that the lock makes none)
    with writing(out, reporter):
        return _resume(out, epochs, device, reporter, data_dir)


def _resume(out: Path, epochs: int | None, device: str | None, reporter: Reporter, data_dir: str | None) -> Path:
    config, saved = resume_config(out, epochs, device, data_dir)
    with distributed.process_group(resolve_device(config.device)):
        run = Run(config, out, reporter)
        run.restore()  # every process reads the folder: under torchrun, on a file system they share
        if epochs is not None and distributed.is_main():
            saved["train"]["epochs"] = epochs
            write_config(out, saved)
        run.fit()
    return out


def resume_config(out: Path, epochs: int | None, device: str | None,
                  data_dir: str | None) -> tuple[TrainConfig, dict]:
    """The TrainConfig that continues the run in `out` (with the changes allowed on resuming) and
    its whole config.json; a clear error when the folder cannot be resumed."""
    saved = read_config(out)
    if not has_epoch(out):
        raise DVAEError(f"{out}: no complete epoch to resume from (no {STATE}); start a new run instead")
    try:
        config = TrainConfig.from_dict(saved["train"])
    except (KeyError, TypeError) as e:
        raise DVAEError(f"{out}: corrupt run config ({e})") from None
    done = max((m["epoch"] for m in read_metrics(out)), default=0)
    if epochs is not None and epochs < done:
        raise SettingError(Setting("epochs"), f" {epochs} is below the {done} epochs {out} has done; "
                           "a run is continued, never cut back")
    changes = {"epochs": epochs, "device": device, "data_dir": data_dir}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    recorded = torch.device(saved["environment"]["device"]).type
    if resolve_device(config.device).type != recorded:
        raise DVAEError(f"{out} was trained on {recorded}; resume it there (its random state is device-specific)")
    return config, saved
