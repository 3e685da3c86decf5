"""Several runs of one configuration, differing only in their seeds, trained in one process as one
batched computation: their weights stacked along a leading dimension, the method's loss vectorized
over it (torch.func.vmap of a functional call, so the matrix products become batched products), and
one optimizer over the stacked weights (Adam and RAdam are element-wise, so it is each run's own).

Each run keeps its own generator and draws its permutations and noise from it exactly as a run
trained alone does (outside the vectorized loss, handed in as PresetNoise), and writes its own run
folder through train.Run, identical in format to a single run's: its numbers equal those of
training it alone up to float rounding, and each folder can be resumed alone or with the others.

Owns: stacking runs and unstacking them, the batched update (RunGroup, a train.Learner),
`train_seeds` and `resume_group`. Must not: know any one method, loop over epochs or batches (train.fit
and train.train_epoch do, for one run and several alike), or write a file other than through train.Run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import torch
from torch.func import functional_call, vmap

from . import distributed
from .errors import DVAEError, Setting, SettingError
from .distributed import resolve_device
from .methods import MethodLoss, Noise, PresetNoise, Step
from .progress import Prefixed, Reporter
from .runfolder import default_out, group_runs, is_run, seed_folder, write_config
from .optim import make_optimizer
from .train import Run, TrainConfig, environment, fit, load_data, resume_config, starting, train_epoch, writing


class RunGroup:
    """Runs (train.Run, built and possibly restored, all at the same epoch) trained as one: the
    Learner that train.fit drives for several runs."""

    def __init__(self, runs: list[Run], reporter: Reporter):
        first = runs[0]
        if any(run.epoch != first.epoch for run in runs):
            raise DVAEError("runs trained together must be at the same epoch")
        self.runs, self.reporter, self.device = runs, reporter, first.device
        self.weights = {name: torch.zeros(len(runs), *_stored(p).shape, device=self.device, requires_grad=True)
                        for name, p in first.model.named_parameters()}
        self.optimizer = make_optimizer(first.config.optimizer, self.weights.values(), first.config.lr, self.device)
        self.template = MethodLoss(copy.deepcopy(first.model).to("meta"), first.method)  # the network, without weights
        self.loss = vmap(self._loss, in_dims=(0, 0, 0, None))
        if first.config.compile:  # as for one run; it also removes vmap's per-operation cost on the host
            self.loss = torch.compile(self.loss, mode="reduce-overhead" if self.device.type == "cuda" else None)
        self.noise_shapes = self._noise_shapes()
        self.stack()

    def _loss(self, weights: dict, x: torch.Tensor, draws: list[torch.Tensor], schedule: dict) -> Step:
        """One run's loss on its batch x with its noise: what vmap vectorizes over the runs."""
        weights = {f"model.{name}": _stored(w) for name, w in weights.items()}
        return functional_call(self.template, weights, (x, PresetNoise(draws, len(x)), schedule))

    def _noise_shapes(self) -> list[tuple[int, ...]]:
        """What the method draws for a batch, in order (found by one step on two images, no update)."""
        run = self.runs[0]
        probe = Noise(torch.Generator(device=self.device), 2)
        with torch.no_grad():  # the plain loss: a compiled one would compile for this call
            MethodLoss(run.model, run.method)(run.train_data[:2], probe, run.method.schedule(run.epoch))
        return probe.shapes

    def stack(self) -> None:
        """Take every run's weights and optimizer state into the stacked ones."""
        params = [dict(run.model.named_parameters()) for run in self.runs]
        with torch.no_grad():
            for name, stacked in self.weights.items():
                stacked.copy_(torch.stack([_stored(p[name]) for p in params]))
        states = [run.optimizer.state_dict() for run in self.runs]
        if not states[0]["state"]:  # before the first step
            return
        merged = {}
        for index, state in states[0]["state"].items():
            merged[index] = {key: value if key == "step" else torch.stack([_stored(s["state"][index][key]) for s in states])
                             for key, value in state.items()}
        self.optimizer.load_state_dict({"state": merged, "param_groups": states[0]["param_groups"]})

    def release(self) -> None:
        """Give every run its slice of the stacked weights and optimizer state (before it saves an epoch)."""
        state = self.optimizer.state_dict()
        for i, run in enumerate(self.runs):
            with torch.no_grad():
                for name, p in run.model.named_parameters():
                    p.copy_(_stored(self.weights[name][i]))
            run.optimizer.load_state_dict({
                "state": {index: {key: (value if key == "step" else _stored(value[i])).clone(
                    memory_format=torch.contiguous_format) for key, value in s.items()}
                          for index, s in state["state"].items()},
                "param_groups": state["param_groups"]})

    def step(self, batches: list[torch.Tensor], schedule: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of every run on its batch; each run draws its inputs and then its noise from its
        own generator, as it would alone."""
        x = torch.stack([run.inputs(batch) for run, batch in zip(self.runs, batches)])
        draws = [torch.stack([torch.rand((len(batches[0]), *shape), generator=run.generator, device=self.device)
                              for run in self.runs]) for shape in self.noise_shapes]
        step = self.loss(self.weights, x, draws, schedule)
        self.optimizer.zero_grad(set_to_none=True)
        step.loss.sum().backward()  # the runs' losses are independent: each weight gets its own run's gradient
        self.optimizer.step()
        return step.log_lik, step.kl

    def train_epoch(self, schedule: dict[str, float]) -> list[dict[str, float]]:
        """One epoch of every run (train.train_epoch); each run's training averages."""
        return train_epoch(self.runs, self, schedule, self.reporter)

    def fit(self) -> None:
        """Train every run up to its config.epochs, each checkpointing after every epoch."""
        fit(self.runs, self, self.reporter)


def _stored(weight: torch.Tensor) -> torch.Tensor:
    """A run's weight in the stacked layout, or back: matrices transposed, so that the batched
    product x W^T reads them in place and their gradients come out contiguous (as W^T's gradient
    does); anything else as it is."""
    return weight.transpose(-1, -2) if weight.dim() == 2 else weight


TOGETHER_BYTES = 4 << 30  # the most that runs trained together may ask for: weights, gradients, two optimizer states


def _check_group(configs: list[TrainConfig]) -> None:
    """Runs trained together must differ in their seeds alone, in one process, and fit TOGETHER_BYTES
    (checked before anything is allocated)."""
    if distributed.launched():
        raise DVAEError("several seeds train in one process; under torchrun train one seed per job")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise DVAEError(f"the seeds of runs trained together must differ, got {seeds}")
    shared = [dataclasses.replace(c, seed=0).to_dict() for c in configs]
    if any(s != shared[0] for s in shared):
        raise DVAEError("runs trained together must share every setting but the seed")
    need = len(configs) * configs[0].model.parameter_count() * 4 * 4  # float32 weights, gradients, Adam's m and v
    if need > TOGETHER_BYTES:
        fit = max(1, len(configs) * TOGETHER_BYTES // need)
        raise DVAEError(f"{len(configs)} runs trained together would need about {need / 2**30:.1f} GiB for their "
                        f"weights, gradients and optimizer state, over the {TOGETHER_BYTES >> 30} GiB ceiling; "
                        f"train at most {fit} seeds together")


def _runs(configs: list[TrainConfig], outs: list[Path], reporter: Reporter) -> list[Run]:
    """A Run for each (config, folder), all on the same images loaded once, each logging as 'seed N: '."""
    data = load_data(configs[0], resolve_device(configs[0].device))
    return [Run(config, out, Prefixed(reporter, f"seed {config.seed}: "), data) for config, out in zip(configs, outs)]


@contextlib.contextmanager
def _group_folder(group: Path):
    """Remove `group` when the block fails and leaves it empty, if the block made it."""
    created = not group.exists()
    try:
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                group.rmdir()
        raise


def train_seeds(config: TrainConfig, seeds: list[int], out: str | Path | None = None,
                reporter: Reporter | None = None) -> list[Path]:
    """Train one run per seed of `config` together into out/seed-N (default out:
    runs/<method>-<timestamp>); returns the run folders."""
    group = Path(out) if out is not None else default_out(config.method)
    if not seeds:
        raise DVAEError("give at least one seed")
    if is_run(group):
        raise SettingError(f"{group} is a run folder; runs trained together go into a folder of their own: "
                           "choose another ", Setting("out"))
    configs = [dataclasses.replace(config, seed=seed, hparams=dict(config.hparams)) for seed in seeds]
    outs = [seed_folder(group, seed) for seed in seeds]
    with _group_folder(group):
        return train_together(configs, outs, reporter)


def train_together(configs: list[TrainConfig], outs: list[Path], reporter: Reporter | None = None) -> list[Path]:
    """Train new runs (configs differing in their seeds alone) into `outs`, together."""
    reporter = reporter or Reporter()
    resolve_device(configs[0].device)  # before any folder is touched (the settings were checked when built)
    _check_group(configs)
    seeds = [c.seed for c in configs]
    with contextlib.ExitStack() as folders:
        for run_out in outs:
            folders.enter_context(starting(run_out, reporter))
        runs = _runs(configs, outs, reporter)
        for run in runs:
            write_config(run.out, {"train": run.config.to_dict(),
                                   "environment": {**environment(run.device), "trained_with_seeds": seeds}})
        RunGroup(runs, reporter).fit()
    return outs


def resume_group(group: str | Path, epochs: int | None = None, device: str | None = None,
                 reporter: Reporter | None = None, data_dir: str | None = None) -> list[Path]:
    """Continue the runs in `group` (trained together by `train_seeds`), together again."""
    outs = group_runs(group)
    if not outs:
        raise DVAEError(f"{group}: neither a run folder nor a folder of runs (no config.json in it or its subfolders)")
    return resume_together(outs, epochs, device, reporter, data_dir)


def resume_together(outs: list[Path], epochs: int | None = None, device: str | None = None,
                    reporter: Reporter | None = None, data_dir: str | None = None) -> list[Path]:
    """Continue the runs in `outs` from their last complete epoch, together. A run behind the others
    (stopped between their saves) first catches up alone."""
    reporter = reporter or Reporter()
    with contextlib.ExitStack() as folders:
        for run_out in outs:
            folders.enter_context(writing(run_out, reporter))
        resumed = [resume_config(run_out, epochs, device, data_dir) for run_out in outs]
        configs = [config for config, _ in resumed]
        _check_group(configs)
        runs = _runs(configs, outs, reporter)
        for run, (_, saved) in zip(runs, resumed):
            run.restore()
            if epochs is not None:
                saved["train"]["epochs"] = epochs
                write_config(run.out, saved)
        level = max(run.epoch for run in runs)
        for run in runs:
            if run.epoch < level:
                reporter.log(f"seed {run.config.seed}: catching up alone to epoch {level}")
                run.fit(until=level)
        RunGroup(runs, reporter).fit()
    return outs
