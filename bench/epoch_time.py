"""Seconds per training epoch on the full 50k MNIST images, against the FLOP bound and a textbook loop.

    python bench/epoch_time.py [--data-dir DIR] [--methods dtp,gumbel,st-gumbel,st,reinmax,rloo] [--repeats 1]

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

from dvae_cli.data import FILES, resolve_data_dir
from dvae_cli.methods import Noise, make_method
from dvae_cli.model import DiscreteVAE, ModelConfig
from dvae_cli.train import Run, TrainConfig
from dvae_cli.progress import Reporter


def gemm_gflops(n: int = 1024, seconds: float = 2.0, device: torch.device | str = "cpu") -> float:
    """fp32 matrix-multiply throughput (GFLOP/s) on an n x n x n product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if count % 64 == 0:
            sync()
    sync()
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def epoch_flops(config: ModelConfig, images: int, method: str) -> float:
    """Training FLOPs of one epoch: 3x the forward pass (forward + backward), plus DTP's extra encoder
    pass; rloo decodes its S samples (default 4) per image."""
    latent = config.latent_vars * config.classes
    encoder = config.input_size * config.hidden + config.hidden * latent
    decoder = latent * config.hidden + config.hidden * config.input_size
    decodes = make_method(method).config.samples if method == "rloo" else 1
    per_image = 3 * 2 * (encoder + decodes * decoder) + (2 * encoder if method == "dtp" else 0)
    return per_image * images


def dvae_epoch_seconds(method: str, data_dir: str | None, repeats: int) -> float:
    """The fastest of `repeats` epochs of dvae's own training loop on the 50k training images."""
    run = Run(TrainConfig(method=method, data_dir=data_dir, device="cpu"), Path(tempfile.mkdtemp()), Reporter())
    times = []
    for epoch in range(repeats):
        start = time.perf_counter()
        run.train_epoch(run.method.schedule(epoch))
        times.append(time.perf_counter() - start)
    return min(times)


def textbook_epoch_seconds(data_dir: Path, method: str) -> float:
    """One epoch of the textbook loop: torchvision MNIST + DataLoader(ToTensor), per-batch binarization."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    root = Path(tempfile.mkdtemp())
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILES.values():
        os.symlink(data_dir / f"{stem}.gz", raw / f"{stem}.gz")  # torchvision extracts them, no download
    dataset = datasets.MNIST(str(root), train=True, download=True, transform=transforms.ToTensor())
    loader = DataLoader(Subset(dataset, range(50_000)), batch_size=100, shuffle=True)
    torch.manual_seed(0)
    model = DiscreteVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    step = make_method(method)
    schedule = step.schedule(0)
    generator = torch.Generator()
    start = time.perf_counter()
    for images, _ in loader:
        x = (images.view(len(images), -1) >= 0.5).float()
        loss = step.loss(model, x, Noise(generator, len(x)), schedule).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default="dtp,gumbel,st-gumbel,st,reinmax,rloo")
    parser.add_argument("--repeats", type=int, default=1, help="epochs per method (the fastest counts)")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    methods = args.methods.split(",")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    gflops = gemm_gflops()
    print(f"fp32 GEMM throughput (1024^3): {gflops:.1f} GFLOP/s")
    print(f"{'method':<10} {'FLOP bound s':>12} {'dvae s/epoch':>12} {'x bound':>8}")
    measured = {}
    for method in methods:
        bound = epoch_flops(ModelConfig(), 50_000, method) / (gflops * 1e9)
        measured[method] = dvae_epoch_seconds(method, args.data_dir, args.repeats)
        print(f"{method:<10} {bound:>12.2f} {measured[method]:>12.2f} {measured[method] / bound:>8.2f}")
    textbook_method = "gumbel"
    textbook = textbook_epoch_seconds(data_dir, textbook_method)
    print(f"textbook loop ({textbook_method}, torchvision MNIST + DataLoader): {textbook:.2f} s/epoch")
    for method in methods:
        print(f"  {method}: {textbook / measured[method]:.2f}x faster than the textbook loop")


if __name__ == "__main__":
    main()
