"""Images per second of `dvae eval` (its importance-weighted bound included) against the FLOP bound.

    python bench/eval_time.py [--ckpt pretrained:best] [--split valid] [--iw 100] [--limit N] [--device cpu]
                              [--repeats 2] [--cpu-time]

Prints, in one run: this machine's fp32 GEMM throughput (measured before, between and after
the evaluations; on a machine shared with other work the best probe and the fastest
evaluation are the least disturbed, and those two count); the FLOPs
of the evaluation, dense (every decode multiplies the 300-wide one-hot code) and gathered (the
first decoder layer as the sum of 30 weight rows, what dvae runs); the time of
`dvae_cli.evaluate.evaluate` as `dvae eval` calls it, images/s, and the ratio to each bound.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.data import load_split
from dvae_cli.evaluate import evaluate
from dvae_cli.model import ModelConfig
from dvae_cli.train import resolve_device
from epoch_time import gemm_gflops


def eval_flops(config: ModelConfig, images: int, iw_samples: int, gathered: bool) -> float:
    """FLOPs of `evaluate`: 3 encodes per image (ELBO, IW, code statistics), 1 + iw_samples decodes.

    A dense decode's first layer is 2 x (D K) x hidden; gathered it is D x hidden additions.
    """
    latent = config.latent_vars * config.classes
    encode = 2 * (config.input_size * config.hidden + config.hidden * latent)
    first = config.latent_vars * config.hidden if gathered else 2 * latent * config.hidden
    decode = first + 2 * config.hidden * config.input_size
    return images * (3 * encode + (1 + iw_samples) * decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="pretrained:best")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--iw", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="evaluations (the fastest counts)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by this process's CPU seconds, not the wall clock: on a machine shared with "
                             "other work, with one thread (OMP_NUM_THREADS=1), what the process itself spent")
    args = parser.parse_args()
    device = resolve_device(args.device)
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.cpu_time and device.type != "cpu":
        parser.error("--cpu-time times CPU work; use it with --device cpu")
    size = 4096 if device.type == "cuda" else 1024

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}, {'CPU' if args.cpu_time else 'wall'} seconds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    model = load_checkpoint(args.ckpt, device).model
    data = load_split(args.split, args.data_dir, args.limit, device)
    rates, times = [gemm_gflops(size, device=device, clock=clock)], []
    for _ in range(args.repeats):  # probes between the rounds see the machine as the rounds did
        start = clock()
        result = evaluate(model, data, iw_samples=args.iw)  # ends reading its results to the host
        times.append(clock() - start)
        rates.append(gemm_gflops(size, device=device, clock=clock))
    gflops, seconds = max(rates), min(times)
    print(f"fp32 GEMM throughput ({size}^3), GFLOP/s: " + ", ".join(f"{r:.1f}" for r in rates) + f"; best {gflops:.1f}")
    print(f"{args.ckpt} on {args.split}: {len(data)} images, --iw {args.iw}: "
          f"iw log p(x) {result.get('iw_log_px', float('nan')):.4f}, log p(x|y) {result['log_lik']:.4f}")
    print("evaluate() seconds: " + ", ".join(f"{t:.2f}" for t in times) +
          f"; best {seconds:.2f} s = {len(data) / seconds:.0f} images/s")
    for name, gathered in (("dense", False), ("gathered", True)):
        flops = eval_flops(model.config, len(data), args.iw, gathered)
        bound = flops / (gflops * 1e9)
        print(f"FLOP bound ({name} first layer): {flops / 1e12:.3f} TFLOP, {bound:.2f} s, "
              f"{len(data) / bound:.0f} images/s; best measured = {seconds / bound:.2f}x the bound")

if __name__ == "__main__":
    main()
