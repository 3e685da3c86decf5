"""Seconds per training epoch on the full 50k MNIST images, against the FLOP bound and a textbook loop.

    python bench/epoch_time.py [--data-dir DIR] [--methods dtp,gumbel,st-gumbel,st,reinmax,rloo] [--repeats 1]
                               [--device cpu|cuda] [--compile] [--cpu-time] [--no-textbook]

Prints, in one run: this machine's fp32 GEMM throughput; the FLOP lower bound of one
epoch (training FLOPs / GEMM throughput); dvae's measured seconds/epoch for each method
(its real training loop); the same model trained by a textbook loop (torchvision MNIST
dataset + DataLoader + ToTensor, as pytorch/examples' vae/main.py does); and the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from dvae_cli.data import MNIST, resolve_data_dir
from dvae_cli.methods import Noise, make_method
from dvae_cli.model import DiscreteVAE, ModelConfig
from dvae_cli.train import Run, TrainConfig
from dvae_cli.progress import Reporter


def gemm_gflops(n: int = 1024, seconds: float = 2.0, device: torch.device | str = "cpu",
                clock=time.perf_counter) -> float:
    """fp32 matrix-multiply throughput (GFLOP/s) on an n x n x n product, timed by `clock`."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    count, start = 0, clock()
    while clock() - start < seconds:
        a @ b
        count += 1
        if count % 64 == 0:
            sync()
    sync()
    return 2 * n**3 * count / (clock() - start) / 1e9


def epoch_flops(config: ModelConfig, images: int, method: str) -> float:
    """Training FLOPs of one epoch: 3x the forward pass (forward + backward), plus DTP's extra encoder
    pass; rloo decodes its S samples (default 4) per image."""
    latent = config.latent_vars * config.classes
    encoder = config.input_size * config.hidden + config.hidden * latent
    decoder = latent * config.hidden + config.hidden * config.input_size
    decodes = make_method(method).config.samples if method == "rloo" else 1
    per_image = 3 * 2 * (encoder + decodes * decoder) + (2 * encoder if method == "dtp" else 0)
    return per_image * images


def dvae_epoch_seconds(method: str, data_dir: str | None, repeats: int, device: str = "cpu",
                       compile: bool = False, clock=time.perf_counter) -> tuple[float, float]:
    """The first and the fastest of `repeats` further epochs of dvae's own loop on the 50k training images.

    The first epoch pays for compiling (with `compile`) and warming up; it is left out of the fastest.
    """
    run = Run(TrainConfig(method=method, data_dir=data_dir, device=device, compile=compile),
              Path(tempfile.mkdtemp()), Reporter())
    times = []
    for epoch in range(repeats + 1):
        start = clock()
        run.train_epoch(run.method.schedule(epoch))  # ends with the epoch's one host sync
        times.append(clock() - start)
    return times[0], min(times[1:])


def textbook_epoch_seconds(data_dir: Path, method: str, device: str = "cpu", clock=time.perf_counter) -> float:
    """One epoch of the textbook loop: torchvision MNIST + DataLoader(ToTensor), per-batch binarization."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    root = Path(tempfile.mkdtemp())
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in MNIST.files.values():
        os.symlink(data_dir / f"{stem}.gz", raw / f"{stem}.gz")  # torchvision extracts them, no download
    dataset = datasets.MNIST(str(root), train=True, download=True, transform=transforms.ToTensor())
    loader = DataLoader(Subset(dataset, range(50_000)), batch_size=100, shuffle=True)
    torch.manual_seed(0)
    model = DiscreteVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    step = make_method(method)
    schedule = step.schedule(0)
    generator = torch.Generator(device=device)
    start = clock()
    for images, _ in loader:
        x = (images.view(len(images), -1) >= 0.5).float().to(device)
        loss = step.loss(model, x, Noise(generator, len(x)), schedule).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss.item()  # wait for the device
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default="dtp,gumbel,st-gumbel,st,reinmax,rloo")
    parser.add_argument("--repeats", type=int, default=1, help="epochs per method after the first (the fastest counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="dvae's loop with torch.compile (dvae train --compile)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by this process's CPU seconds, not the wall clock: on a machine shared with "
                             "other work, with one thread (OMP_NUM_THREADS=1), what the process itself spent")
    parser.add_argument("--no-textbook", action="store_true", help="skip the textbook loop")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    methods = args.methods.split(",")
    device = torch.device(args.device)
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.cpu_time and device.type != "cpu":
        parser.error("--cpu-time times CPU work; use it with --device cpu")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{'compiled, ' if args.compile else ''}{'CPU' if args.cpu_time else 'wall'} seconds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    gflops = gemm_gflops(n=4096 if device.type == "cuda" else 1024, device=device, clock=clock)
    print(f"fp32 GEMM throughput ({4096 if device.type == 'cuda' else 1024}^3): {gflops:.1f} GFLOP/s")
    print(f"{'method':<10} {'FLOP bound s':>12} {'first epoch':>12} {'dvae s/epoch':>12} {'x bound':>8}")
    measured = {}
    for method in methods:
        bound = epoch_flops(ModelConfig(), 50_000, method) / (gflops * 1e9)
        first, measured[method] = dvae_epoch_seconds(method, args.data_dir, args.repeats, args.device,
                                                     args.compile, clock)
        print(f"{method:<10} {bound:>12.2f} {first:>12.2f} {measured[method]:>12.2f} "
              f"{measured[method] / bound:>8.2f}", flush=True)
    if args.no_textbook:
        return
    textbook_method = "gumbel"
    textbook = textbook_epoch_seconds(data_dir, textbook_method, args.device, clock)
    print(f"textbook loop ({textbook_method}, torchvision MNIST + DataLoader): {textbook:.2f} s/epoch")
    for method in methods:
        print(f"  {method}: {textbook / measured[method]:.2f}x faster than the textbook loop")

if __name__ == "__main__":
    main()
