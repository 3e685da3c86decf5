"""Several runs trained as one batched computation against one run alone: seconds per epoch.

    python bench/multirun.py [--data-dir DIR] [--methods dtp,gumbel] [--seeds 3] [--repeats 1]
                             [--device cpu|cuda] [--train-limit N] [--compile] [--tiny] [--cpu-time]

For each method: one run's training epoch (train.Run, what `dvae train` does), then S runs of it
trained together (multirun.RunGroup, what `dvae train --seeds 0,1,...` does), each timed as the
fastest of `repeats` epochs after a first one, and their ratio: S runs together in at most 1.5x the
time of one is issue 13's target. Training epochs only (validation is per run either way).

--tiny trains a network of 2 variables of 2 classes and 8 hidden units on batches of 4 instead:
the arithmetic vanishes and what is left is each path's fixed cost per step on the host (Python,
dispatch, vmap), which is what bounds a step on a GPU, where the real network's kernels take
microseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from dvae_cli.model import ModelConfig
from dvae_cli.multirun import RunGroup
from dvae_cli.progress import Reporter
from dvae_cli.train import Run, TrainConfig, load_data


def fastest_epoch(train_epoch, schedule, repeats: int, clock, sync) -> float:
    """The fastest of `repeats` epochs after a first (warm-up, and with --compile compiling) one."""
    times = []
    for _ in range(repeats + 1):
        start = clock()
        train_epoch(dict(schedule))
        sync()
        times.append(clock() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default="dtp,gumbel")
    parser.add_argument("--seeds", type=int, default=3, help="runs trained together")
    parser.add_argument("--repeats", type=int, default=1, help="timed epochs after the first (the fastest counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images (default 50k)")
    parser.add_argument("--compile", action="store_true", help="both with torch.compile (dvae train --compile)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network on batches of 4: the host's cost per step")
    parser.add_argument("--cpu-time", action="store_true", help="time this process's CPU seconds, not the wall clock")
    args = parser.parse_args()
    device = torch.device(args.device)
    clock = time.process_time if args.cpu_time else time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{'compiled, ' if args.compile else ''}{'tiny network, batch 4, ' if args.tiny else ''}"
          f"{'CPU' if args.cpu_time else 'wall'} seconds, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'method':<10} {'1 run s/epoch':>14} {f'{args.seeds} together':>14} {'x one run':>10} "
          f"{'1 run ms/step':>14} {f'{args.seeds} together':>14}")
    tiny = {"batch_size": 4, "model": ModelConfig(latent_vars=2, classes=2, hidden=8)} if args.tiny else {}
    for method in args.methods.split(","):
        base = TrainConfig(method=method, data_dir=args.data_dir, device=args.device, train_limit=args.train_limit,
                           compile=args.compile, **tiny)
        data = load_data(base, device)
        def run(seed: int) -> Run:
            return Run(dataclasses.replace(base, seed=seed), Path(tempfile.mkdtemp()), Reporter(), data)

        alone = run(0)
        schedule = alone.method.schedule(0)
        one = fastest_epoch(alone.train_epoch, schedule, args.repeats, clock, sync)
        together = RunGroup([run(seed) for seed in range(args.seeds)], Reporter())
        group = fastest_epoch(together.train_epoch, schedule, args.repeats, clock, sync)
        steps = -(-len(data[0]) // base.batch_size)
        print(f"{method:<10} {one:>14.2f} {group:>14.2f} {group / one:>10.2f} {one / steps * 1e3:>14.3f} "
              f"{group / steps * 1e3:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
