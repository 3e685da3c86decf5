"""The training loop waits for the device a fixed number of times per epoch, whatever its number of
steps, counted on CPU as the calls that hand a tensor's value to Python (tests/test_cuda.py checks
the same on a GPU with PyTorch's synchronisation checker)."""

import dataclasses
import tempfile
from pathlib import Path

import pytest
import torch

from dvae_cli.methods import METHODS, make_method
from dvae_cli.multirun import RunGroup
from dvae_cli.progress import Reporter
from dvae_cli.train import Run, TrainConfig

# Tensor methods that hand a value to Python, and so wait for the device that computes it.
TO_HOST = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _run(mnist_dir, method: str, images: int, device: str = "cpu", **kw) -> Run:
    config = TrainConfig(method=method, data_dir=str(mnist_dir), device=device, train_limit=images, **kw)
    return Run(config, Path(tempfile.mkdtemp()), Reporter())


def _group(mnist_dir, method: str, images: int, device: str = "cpu", seeds: int = 3) -> RunGroup:
    config = TrainConfig(method=method, data_dir=str(mnist_dir), device=device, train_limit=images)
    runs = [Run(dataclasses.replace(config, seed=seed), Path(tempfile.mkdtemp()), Reporter()) for seed in range(seeds)]
    return RunGroup(runs, Reporter())


def _host_reads_per_epoch(monkeypatch, run: Run | RunGroup, method: str) -> int:
    count = 0

    def counted(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            nonlocal count
            count += 1
            return original(self, *args, **kwargs)
        return wrapper

    with monkeypatch.context() as patch:
        for name in TO_HOST:
            patch.setattr(torch.Tensor, name, counted(name))
        run.train_epoch(make_method(method).schedule(1))
    return count


@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_epoch_reads_the_host_a_fixed_number_of_times(monkeypatch, mnist_dir, method):
    few, many = (_host_reads_per_epoch(monkeypatch, _run(mnist_dir, method, n), method) for n in (200, 600))
    assert few == many == 1  # the epoch's sums, once at its end: 2 steps or 6



@pytest.mark.parametrize("method", ["dtp", "rloo"])
def test_runs_trained_together_read_the_host_once_an_epoch(monkeypatch, mnist_dir, method):
    few, many = (_host_reads_per_epoch(monkeypatch, _group(mnist_dir, method, n), method) for n in (200, 600))
    assert few == many == 1  # every run's sums in one read
