"""`dvae reproduce --dry-run`: what a plan costs on this machine, from a short measured probe.

For each distinct setting of the plan (seeds aside) the probe times a few training steps of the
run's own network, method and optimizer on random images of the data set's size, and one
evaluation pass over 1,000 of them, with the threads a run will have. A run's estimate is then
  epochs x (training batches x seconds per step + monitored images x seconds per evaluated image)
for the epochs it has left. Only the device at hand is measured: CPU here; a GPU's time is not
estimated unless the plan runs on one.

Owns: the probe and the estimates. Must not: train a run or print.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..data import load_images
from ..distributed import resolve_device
from ..evaluate import elbo_terms
from ..methods import MethodLoss, Noise
from ..model import DiscreteVAE
from ..optim import make_optimizer
from ..train import TrainConfig
from .plan import PlannedRun, epochs_done

PROBE_STEPS, PROBE_WARMUP, PROBE_EVAL = 10, 3, 1000


@dataclass(frozen=True)
class Probe:
    """Measured costs of one setting: seconds per training step and per evaluated image."""

    step: float
    eval_image: float


@dataclass(frozen=True)
class Estimate:
    run: PlannedRun
    epochs_left: int
    seconds_per_epoch: float

    @property
    def seconds(self) -> float:
        return self.epochs_left * self.seconds_per_epoch


def probe(config: TrainConfig, threads: int | None = None) -> Probe:
    """Time PROBE_STEPS training steps (after PROBE_WARMUP) and one evaluation of PROBE_EVAL images."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(config.device)
        generator = torch.Generator(device=device).manual_seed(0)
        torch.manual_seed(0)
        model = DiscreteVAE(config.model).to(device)
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, device)
        loss = MethodLoss(model, config.method_object)
        images = torch.rand(PROBE_EVAL, config.data.pixels, generator=generator, device=device)
        x = images[: config.batch_size] if config.data.binarize == "none" else (images[: config.batch_size] > 0.5).float()
        schedule = config.method_object.schedule(0)
        start = 0.0
        for i in range(PROBE_WARMUP + PROBE_STEPS):
            if i == PROBE_WARMUP:
                _sync(device)
                start = time.perf_counter()
            step = loss(x, Noise(generator, len(x)), schedule)
            optimizer.zero_grad(set_to_none=True)
            step.loss.backward()
            optimizer.step()
        _sync(device)
        per_step = (time.perf_counter() - start) / PROBE_STEPS
        start = time.perf_counter()
        elbo_terms(model.eval(), images, generator)
        _sync(device)
        return Probe(per_step, (time.perf_counter() - start) / PROBE_EVAL)
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_plan(plan: list[PlannedRun], threads: int | None = None) -> list[Estimate]:
    """Each run's estimated seconds for the epochs it has left, one probe per distinct setting."""
    probes: dict[str, Probe] = {}
    sizes: dict[tuple, tuple[int, int]] = {}
    estimates = []
    for run in plan:
        config = run.config
        key = (config.data_dir, config.data.name, config.data.valid_size)
        if key not in sizes:
            train_file = len(load_images("train", config.data_dir, config.data))
            test_file = len(load_images("test", config.data_dir, config.data))
            sizes[key] = (train_file - config.data.valid_size, config.data.valid_size or test_file)
        train_images, monitored = sizes[key]
        if config.train_limit is not None:
            train_images = min(train_images, config.train_limit)
        if run.group not in probes:
            probes[run.group] = probe(config, threads)
        cost = probes[run.group]
        per_epoch = math.ceil(train_images / config.batch_size) * cost.step + monitored * cost.eval_image
        estimates.append(Estimate(run, config.epochs - epochs_done(run.folder), per_epoch))
    return estimates
