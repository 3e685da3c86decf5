"""Seconds per training epoch of `gumbel-rao` before and after its closed-form rewrite, beside
`st-gumbel` (not a test).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/gumbel_rao_speed.py --data-dir DIR [--steps 600] [--rounds 3]

Each variant is dvae's real update (train.Run.step: encoder, sample, estimator, decoder, RAdam) under
`dvae train --preset reinmax` at 10 classes x 30 variables: batch 100, 600 steps = one epoch of
the 60,000 training images. The variants take turns, `--rounds` times, on the same batches; the
median of each is printed (wall and this process's CPU seconds) with the ratios and the load average
(`uptime`) before and after, for readers to judge a shared machine.

`before` is the formulation of commit 9652414, kept here: the K x D x C conditional Gumbels in log
space from Gumbel noise, and autograd through K softmaxes (`GumbelRaoBefore`, the same as the
one tests/test_estimators_extra.py checks the closed form against).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dvae_cli.methods import MethodLoss
from dvae_cli.methods.base import neg_elbo_step
from dvae_cli.methods.gumbel_rao import GumbelRao
from dvae_cli.model import ModelConfig, one_hot_sample
from dvae_cli.presets import apply_preset
from dvae_cli.progress import Reporter
from dvae_cli.train import Run, TrainConfig, load_data


class GumbelRaoBefore(GumbelRao):
    """gumbel-rao as of commit 9652414: the same noise, the straightforward formula."""

    def loss(self, model, x, noise, schedule):
        cfg = model.config
        log_pi = model.encode(x)
        sample = one_hot_sample(log_pi, noise.gumbel(cfg.latent_vars, cfg.classes))
        gumbel = noise.gumbel(self.config.rao_samples, cfg.latent_vars, cfg.classes)
        theta, d = log_pi.detach().unsqueeze(1), sample.unsqueeze(1)
        top = (gumbel * d).sum(dim=-1, keepdim=True)
        perturbed = d * top + (1 - d) * -torch.logaddexp(-(theta + gumbel), -top)
        soft = F.softmax((log_pi.unsqueeze(1) + (perturbed - theta)) / self.config.rao_tau, dim=-1).mean(dim=1)
        return neg_elbo_step(model, x, log_pi, sample + soft - soft.detach())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def make_run(method: str, data, data_dir: str) -> Run:
    config = apply_preset(TrainConfig(method=method, model=ModelConfig(latent_vars=30, classes=10),
                                      data_dir=data_dir, device="cpu"), "reinmax")
    return Run(config, Path(tempfile.mkdtemp()), Reporter(), data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=600,
                        help="updates per timing (600 = one epoch of 60k at batch 100)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = apply_preset(TrainConfig(method="gumbel-rao", data_dir=args.data_dir, device="cpu"), "reinmax")
    data = load_data(config, torch.device("cpu"))
    runs = {name: make_run(method, data, args.data_dir)
            for name, method in (("before", "gumbel-rao"), ("after", "gumbel-rao"), ("st-gumbel", "st-gumbel"))}
    before = runs["before"]
    before.method = GumbelRaoBefore(before.method.config)
    before.loss = MethodLoss(before.model, before.method)
    batches = torch.randperm(len(data[0]), generator=torch.Generator().manual_seed(0)).split(100)
    batches = [batches[i % len(batches)] for i in range(args.steps)]

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"start: {uptime()}")
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for round in range(args.rounds):
        for name, run in runs.items():
            schedule = run.method.schedule(0)
            run.step([batches[0]], schedule)  # warm-up
            start, start_cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                run.step([batch], schedule)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"round {round + 1} {name:<10} {wall[name][-1]:7.2f} s wall {cpu[name][-1]:7.2f} s CPU", flush=True)
    print(f"end: {uptime()}")
    scale = 600 / args.steps
    print(f"{'variant':<10} {'s/epoch wall':>13} {'s/epoch CPU':>12} {'ms/step CPU':>12} {'x st-gumbel':>12}")
    base = statistics.median(cpu["st-gumbel"])
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<10} {w * scale:>13.2f} {c * scale:>12.2f} {1000 * c / args.steps:>12.1f} {c / base:>12.2f}")
    print(f"before / after (CPU): {statistics.median(cpu['before']) / statistics.median(cpu['after']):.2f}x")


if __name__ == "__main__":
    main()
