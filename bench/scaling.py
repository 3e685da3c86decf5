"""Seconds per training epoch at world sizes 1 and 2 (CPU, gloo), or 1 .. #GPUs (CUDA, NCCL), under torchrun.

    python bench/scaling.py [--data-dir DIR] [--method dtp] [--train-limit N] [--batch-size 100] [--repeats 2]
                            [--threads T]

Each world size is one `torchrun --standalone --nproc-per-node W` job of dvae's own training loop
(`Run.train_epoch`, the global batch split over the processes; no validation, no files). Prints
seconds/epoch, images/s and the throughput relative to one process. On CPU the processes share the
machine's cores (each gets OMP_NUM_THREADS = cores / W unless --threads says otherwise); on a
machine shared with other work, OpenMP threads that outnumber the free cores slow one process down
badly, so compare with --threads 1 too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def worker(args: argparse.Namespace) -> None:
    """One process of the job: time `repeats` epochs, rank 0 prints the fastest."""
    from dvae_cli import distributed
    from dvae_cli.progress import Reporter
    from dvae_cli.train import Run, TrainConfig

    config = TrainConfig(method=args.method, batch_size=args.batch_size, train_limit=args.train_limit,
                         data_dir=args.data_dir, device=args.device)
    with distributed.process_group(torch.device(args.device)):
        run = Run(config, Path(tempfile.mkdtemp()), Reporter())
        times = []
        for epoch in range(args.repeats):
            distributed.barrier()
            start = time.perf_counter()
            run.train_epoch(run.method.schedule(epoch))
            times.append(time.perf_counter() - start)
        if distributed.is_main():
            print(f"RESULT {min(times)} {len(run.train_data)}", flush=True)


def measure(world: int, args: argparse.Namespace) -> tuple[float, int]:
    """(seconds/epoch, images) of a torchrun job of `world` processes."""
    threads = args.threads or (max(1, (os.cpu_count() or 1) // world) if args.device == "cpu" else 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
           __file__, "--worker", "--device", args.device, "--method", args.method, "--batch-size",
           str(args.batch_size), "--repeats", str(args.repeats)]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    cmd += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        sys.exit(f"world size {world} failed:\n{result.stderr[-3000:]}")
    seconds, images = lines[0].split()[1:]
    return float(seconds), int(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--method", default="dtp")
    parser.add_argument("--train-limit", type=int, default=None, help="default: all 50,000 training images")
    parser.add_argument("--batch-size", type=int, default=100, help="the global batch")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per world size; the fastest counts")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of each process (default: CPU cores / world size on CPU, else 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    worlds = [1, 2] if args.device == "cpu" else list(range(1, torch.cuda.device_count() + 1))
    where = f"{os.cpu_count()} CPU cores" if args.device == "cpu" else \
        f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    print(f"{args.method}, global batch {args.batch_size}, {where}, torch {torch.__version__}")
    base = None
    for world in worlds:
        seconds, images = measure(world, args)
        base = base or seconds
        print(f"world size {world}: {seconds:7.2f} s/epoch  {images / seconds:9.0f} images/s  "
              f"throughput x{base / seconds:.2f} of 1 process", flush=True)


if __name__ == "__main__":
    main()
