"""The training loop: a Run builds model, method, optimizer and data from a TrainConfig, trains
epoch by epoch and writes its run folder (through runfolder.py), under torchrun too.

Owns: the loop, the schedule of an epoch, what an epoch records. Must not: spell the run folder's
file names (runfolder.py), resolve devices (distributed.py) or parse CLI flags."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from . import distributed
from ._version import __version__
from .checkpoint import TrainState, load_state, save_checkpoint, save_state
from .data import load_split
from .errors import DVAEError
from .distributed import resolve_device
from .interrupts import deferred_interrupt
from .methods import Method, Noise, Step, make_method
from .evaluate import code_statistics, elbo_terms
from .model import DiscreteVAE, ModelConfig, code_diversity
from .progress import Reporter
from .runfolder import (BEST, LAST, STATE, clear_unfinished, default_out, epoch_checkpoint, has_epoch, read_config, read_metrics,
                        write_config, write_metrics)
from .runlock import run_lock

LEGACY_HPARAMS = {"diversity": 0.0, "diversity_warmup": 0}  # what a run recorded without these fields used


@dataclass
class TrainConfig:
    """Every setting of a run; defaults are the thesis's (50 epochs, batch 100, Adam 3e-4)."""

    method: str = "dtp"
    hparams: dict = field(default_factory=dict)  # the method's hyper-parameters (see `dvae train --help`)
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 50
    batch_size: int = 100
    lr: float = 3e-4
    seed: int = 0
    train_limit: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    save_every: int = 0  # also keep epoch-XXXX.safetensors every N epochs (0 = only best and last)
    compile: bool = False  # torch.compile the loss (on CUDA in mode "reduce-overhead": CUDA graphs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{**d, "model": ModelConfig(**d["model"])})


def load_data(config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's training images (the first train_limit) and the validation images, on `device`."""
    return (load_split("train", config.data_dir, config.train_limit, device),
            load_split("valid", config.data_dir, device=device))


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


def _format_epoch(m: dict, epochs: int) -> str:
    sched = " ".join(f"{k} {m[k]:.4g}" for k in ("tau", "beta", "diversity") if k in m)
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train log p(x|y) {m['train_log_lik']:8.3f}  "
        f"valid log p(x|y) {m['valid_log_lik']:8.3f}  KL {m['valid_kl']:6.3f}  "
        f"classes {m['valid_classes_used']:4.2f}  "
        f"valid -ELBO {m['valid_neg_elbo']:8.3f}  {sched}  {m['seconds']:.1f}s"
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


class MethodLoss(torch.nn.Module):
    """A method's loss as a module, so that DistributedDataParallel sees the whole forward pass."""

    def __init__(self, model: DiscreteVAE, method: Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor, noise: Noise, schedule: dict[str, float]) -> Step:
        step = self.method.loss(self.model, x, noise, schedule)
        if "diversity" in schedule:  # batch-mean pi over the global batch: every process adds the same term
            weight = schedule["diversity"]
            mean_pi = distributed.all_reduce_sum(step.log_pi.detach().exp().sum(dim=0)) / noise.global_batch
            step = step._replace(loss=step.loss + weight * code_diversity(step.log_pi, mean_pi))
        return step


class Run:
    """A run folder being trained: builds everything from a TrainConfig, or resumes one.

    Under torchrun (see distributed.py) every process builds the same Run, trains on its slice of
    each global batch through DistributedDataParallel, and only rank 0 evaluates, writes and reports.
    """

    def __init__(self, config: TrainConfig, out: Path, reporter: Reporter,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.config, self.out = config, out
        self.reporter = reporter if distributed.is_main() else Reporter()
        self.device = distributed.local_device(resolve_device(config.device))
        self.method = make_method(config.method, config.hparams)
        config.hparams = dataclasses.asdict(self.method.config)  # record every value, defaults too
        if config.batch_size < 1 or config.epochs < 0 or config.lr <= 0 or config.save_every < 0:
            raise DVAEError("batch size and learning rate must be positive, epochs and --save-every not negative")
        self.train_data, self.valid_data = data or load_data(config, self.device)
        torch.manual_seed(config.seed)  # the initial weights do not depend on the device
        self.model = DiscreteVAE(config.model).to(self.device)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=fused)
        self.loss = distributed.data_parallel(MethodLoss(self.model, self.method), self.device)
        if config.compile:
            self.loss = torch.compile(self.loss, mode="reduce-overhead" if self.device.type == "cuda" else None)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch, self.best = 0, math.inf
        self.metrics: list[dict] = []

    def restore(self) -> None:
        """Continue from the folder's state.safetensors (the last complete epoch)."""
        state = load_state(self.out / STATE)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.rng)
        self.epoch, self.best = state.epoch, state.best
        self.metrics = [m for m in read_metrics(self.out) if m["epoch"] <= self.epoch]

    def train_epoch(self, schedule: dict[str, float]) -> dict[str, float]:
        """One pass over the shuffled training set; returns the training averages.

        Every process draws the same permutation and noise, and takes its slice of each global
        batch. Its mean loss is weighted by slice size * world size / batch size, so that the
        gradients DDP averages equal those of the whole batch's mean loss, even for uneven slices.
        """
        cfg, data, world = self.config, self.train_data, distributed.world_size()
        schedule = start_epoch(self.optimizer, cfg, schedule, self.device)
        order = torch.randperm(len(data), generator=self.generator, device=self.device)
        sums = torch.zeros(2, device=self.device)
        self.model.train()
        for start in range(0, len(data), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            rows = distributed.shard(len(batch))
            x = data[batch[rows]]
            step = self.loss(x, Noise(self.generator, len(batch), rows), schedule)
            self.optimizer.zero_grad(set_to_none=True)
            (step.loss * (len(x) * world / len(batch))).backward()
            self.optimizer.step()
            sums += torch.stack([step.log_lik.sum(), step.kl.sum()])
            self.reporter.advance("batches")
        log_lik, kl = (distributed.all_reduce_sum(sums) / len(data)).tolist()  # the one sync of the epoch
        return {"train_log_lik": log_lik, "train_kl": kl, "train_neg_elbo": kl - log_lik}

    def save(self, record: dict) -> None:
        """Checkpoints, metrics and (last, as the commit point) the resume state."""
        method, hparams = self.config.method, self.config.hparams
        info = {"train_config": self.config.to_dict()}
        if record["valid_neg_elbo"] < self.best:
            self.best = record["valid_neg_elbo"]
            save_checkpoint(self.out / BEST, self.model, method, hparams, self.epoch, record, info)
        save_checkpoint(self.out / LAST, self.model, method, hparams, self.epoch, record, info)
        if self.config.save_every and self.epoch % self.config.save_every == 0:
            save_checkpoint(self.out / epoch_checkpoint(self.epoch), self.model, method, hparams, self.epoch, record, info)
        write_metrics(self.out, self.metrics)
        save_state(self.out / STATE, TrainState(
            self.epoch, self.model.state_dict(), self.optimizer.state_dict(),
            self.generator.get_state(), self.best))

    def fit(self) -> list[dict]:
        """Train up to config.epochs, checkpointing after every epoch."""
        cfg = self.config
        batches = math.ceil(len(self.train_data) / cfg.batch_size)
        self.reporter.task("epochs", f"{cfg.method} epochs", cfg.epochs)
        self.reporter.advance("epochs", self.epoch)
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            schedule = self.method.schedule(self.epoch)
            self.reporter.task("batches", f"epoch {self.epoch + 1}", batches)
            train = self.train_epoch(schedule)
            self.check_finite(train)
            self.epoch += 1
            if distributed.is_main():  # the others go on and wait for it in the next all-reduce
                self.end_epoch(train, schedule, t0)
        distributed.barrier()  # every process returns once the run folder is complete
        return self.metrics

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
        valid = elbo_terms(self.model.eval(), self.valid_data, eval_generator)
        codes = code_statistics(self.model, self.valid_data)
        valid.update(classes_used=codes["perplexity_mean"], mean_max_prob=codes["mean_max_prob"])
        record = {"epoch": self.epoch, **train, **{f"valid_{k}": v for k, v in valid.items()},
                  **{k: v for k, v in schedule.items() if k != "lr_scale"},
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        with deferred_interrupt():  # an epoch's files are written completely or not at all
            self.metrics.append(record)
            self.save(record)
        self.reporter.advance("epochs")
        self.reporter.log(_format_epoch(record, self.config.epochs))


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
                raise DVAEError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
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
    make_method(config.method, config.hparams)  # settings and device checked before the folder is touched
    device = resolve_device(config.device)
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

    `data_dir` points to MNIST when it has moved since the run started (the data must be the same).
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
    for name, value in LEGACY_HPARAMS.items():  # runs recorded before the option existed did without it
        config.hparams.setdefault(name, value)
    if epochs is not None:
        config.epochs = epochs
    if device is not None:
        config.device = device
    if data_dir is not None:
        config.data_dir = data_dir
    recorded = torch.device(saved["environment"]["device"]).type
    if resolve_device(config.device).type != recorded:
        raise DVAEError(f"{out} was trained on {recorded}; resume it there (its random state is device-specific)")
    return config, saved
