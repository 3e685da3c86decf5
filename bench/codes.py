"""Benchmark of `dvae encode` / `dvae decode` on the 70,000 MNIST images (not a test).

Prints bytes per image of every codes format; end-to-end images/s of `dvae encode` (read .npy,
binarize, model, pack, write) and `dvae decode` (read, unpack, model, write .npy) run in this
process (so without the ~4 s process start, mostly `import torch`); the FLOP bound measured in the
same run; how stable codes are under encode -> decode -> encode; and the peak resident memory
of `dvae encode` on 1,000,000 images in a .npy file (written to a temporary folder, then deleted).

    DVAE_DATA_DIR=/path/to/mnist python bench/codes.py [--ckpt RUN_OR_FILE] [--big 1000000]

Without --ckpt it uses `dvae encode`'s default checkpoint, else untrained weights (speed only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dvae_cli.checkpoint import load_checkpoint, save_checkpoint
from dvae_cli.cli import app
from dvae_cli.codes import FORMATS, decode, encode
from dvae_cli.runfolder import default_checkpoint
from dvae_cli.data import load_images
from dvae_cli.errors import DVAEError
from dvae_cli.inputs import CHUNK, open_images
from dvae_cli.model import DiscreteVAE


# Run a command and print its peak resident memory (KiB). A child's peak includes its parent's
# memory at the time it was started, so this small process, not the benchmark, starts `dvae`.
PEAK_RSS = """
import os, subprocess, sys
_, status, usage = os.wait4(subprocess.Popen(sys.argv[1:]).pid, 0)
sys.exit(f"failed: {sys.argv[1:]}") if status else print(usage.ru_maxrss)
"""


def best_of(repeats: int, run) -> float:
    """The shortest of `repeats` timings of run(), in seconds (the machine is shared)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_flops(m: int, k: int, n: int) -> float:
    """Measured float32 FLOP/s of an (m, k) @ (k, n) matrix product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm up
    return 2 * m * k * n / best_of(5, lambda: a @ b)


def model_flops(layers: list[tuple[int, int]]) -> int:
    """FLOPs per image of a stack of linear layers (one multiply and one add per weight)."""
    return sum(2 * inputs * outputs for inputs, outputs in layers)


def checkpoint(arg: str | None, folder: Path) -> tuple[Path, bool]:
    """The checkpoint to measure and whether it is trained."""
    if arg:
        return Path(arg), True
    try:
        return default_checkpoint(), True
    except DVAEError:
        torch.manual_seed(0)
        save_checkpoint(folder / "untrained.safetensors", DiscreteVAE(), "untrained", {}, 0)
        return folder / "untrained.safetensors", False


def dvae(*args: object) -> None:
    """Run a `dvae` command in this process: the command line's work without the process start."""
    app([str(a) for a in args], standalone_mode=False)


def write_big(path: Path, images: np.ndarray, count: int) -> None:
    """A uint8 (count, 28, 28) .npy of the MNIST images repeated, written through a memory map."""
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 28, 28))
    for start in range(0, count, len(images)):
        big[start:start + len(images)] = images[:count - start]
    big.flush()
    del big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="checkpoint file or run folder")
    parser.add_argument("--data-dir", help="MNIST folder (default: $DVAE_DATA_DIR or the cache)")
    parser.add_argument("--big", type=int, default=1_000_000, help="images for the memory run (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dvae-bench-") as tmp:
        tmp = Path(tmp)
        ckpt_path, trained = checkpoint(args.ckpt, tmp)
        loaded = load_checkpoint(ckpt_path)
        model, config = loaded.model, loaded.model.config
        mnist = np.concatenate([load_images(split, args.data_dir) for split in ("train", "valid", "test")])
        n = len(mnist)
        np.save(tmp / "mnist.npy", mnist)
        print(f"checkpoint {ckpt_path}{'' if trained else ' (untrained weights: speed only)'}; "
              f"D={config.latent_vars}, K={config.classes}; {n:,} MNIST images; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunks of {CHUNK:,}")

        print("\nbytes per image (whole file / N, headers included)")
        for fmt in FORMATS:
            dvae("encode", tmp / "mnist.npy", "-o", tmp / f"codes.{fmt}", "--format", fmt, "--ckpt", ckpt_path, "-q")
            print(f"  {fmt:8s} {(tmp / f'codes.{fmt}').stat().st_size / n:8.3f}")

        encoder = model_flops([(784, config.hidden), (config.hidden, config.latent_vars * config.classes)])
        decoder = model_flops([(config.latent_vars * config.classes, config.hidden), (config.hidden, 784)])
        binarized = next(open_images(tmp / "mnist.npy").chunks())
        with torch.inference_mode():
            layers = model.encoder[0], model.encoder[2]
            matmuls = len(binarized) / best_of(5, lambda: layers[1](layers[0](binarized)))
        # The best float32 rate seen now, over a square product, the first layer's and both layers'
        # (the machine is shared, so each is the best of several tries).
        peak = max(gemm_flops(2048, 2048, 2048), gemm_flops(CHUNK, 784, config.hidden), matmuls * encoder)
        encode_s = best_of(3, lambda: dvae("encode", tmp / "mnist.npy", "-o", tmp / "e2e.bin", "--ckpt", ckpt_path,
                                           "--device", "cpu", "-q"))
        decode_s = best_of(3, lambda: dvae("decode", tmp / "e2e.bin", "-o", tmp / "decoded.npy", "--ckpt", ckpt_path,
                                           "--device", "cpu", "-q"))
        print(f"\nmatrix products: {peak / 1e9:.1f} GFLOP/s at best (float32, measured now); "
              f"encoder {encoder / 1e6:.2f} MFLOP/image, decoder {decoder / 1e6:.2f} MFLOP/image")
        print(f"  FLOP bound of the encoder: {peak / encoder:10,.0f} images/s")
        print(f"  encoder's two matrix products alone (no activation, batch {len(binarized):,}): "
              f"{matmuls:10,.0f} images/s")
        print(f"encode end to end (.npy -> packed file): {n / encode_s:10,.0f} images/s "
              f"= {n / encode_s / (peak / encoder):.0%} of the FLOP bound")
        print(f"decode end to end (packed -> float32 .npy): {n / decode_s:10,.0f} images/s "
              f"= {n / decode_s / (peak / decoder):.0%} of the decoder's FLOP bound")

        if trained:
            test = load_images("test", args.data_dir)
            codes = encode(model, test)
            again = encode(model, decode(model, codes) >= 0.5)
            print(f"\nencode -> decode -> binarize -> encode on the {len(test):,} test images: "
                  f"{(codes == again).mean():.1%} of variables and {(codes == again).all(axis=1).mean():.1%} "
                  f"of images keep their code")

        if args.big:
            write_big(tmp / "big.npy", mnist, args.big)
            executable = Path(sys.executable).with_name("dvae")
            command = [str(executable), "encode", str(tmp / "big.npy"), "-o", str(tmp / "big.bin"), "--device", "cpu", "--ckpt",
                       str(ckpt_path), "-q"]
            start = time.perf_counter()
            measured = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], check=True,
                                      capture_output=True, text=True)
            seconds = time.perf_counter() - start
            rss = int(measured.stdout) / 1024  # KiB on Linux
            size = (tmp / "big.npy").stat().st_size
            print(f"\n`dvae encode` of {args.big:,} images ({size / 1e6:,.0f} MB uint8 .npy): "
                  f"peak resident memory {rss:,.0f} MiB, {seconds:.1f} s with the process start "
                  f"({args.big / seconds:,.0f} images/s)")


if __name__ == "__main__":
    main()
