"""`dvae encode` and `dvae decode`: images to code files and back, made for shell pipelines."""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np
import typer

from . import distributed
from .checkpoint import Checkpoint, load_checkpoint
from .cli_common import user_errors
from .cli_scale import SHARD_HELP, encode_codes, shard_block
from .codes import FORMATS, Codes, CodeWriter, read_codes
from .codes.model_side import decode_chunks
from .fileio import open_output
from .runfolder import default_checkpoint
from .errors import DVAEError
from .inputs import CHUNK, SIDE, open_images
from .pretrained import NAMES as PRETRAINED_NAMES
from .progress import for_terminal
from .distributed import resolve_device

Format = Enum("Format", {name: name for name in FORMATS}, type=str)
CKPT_HELP = (f"Checkpoint file, run folder, or {PRETRAINED_NAMES} (default: $DVAE_CKPT, else the "
             "newest run under ./runs, else pretrained:best).")
DEVICE_HELP = "auto (cuda when available), cpu, cuda or mps."


def _check_io(source: str, output: str, binary_output: bool) -> None:
    """Fail before any work on a terminal where data should flow, or an output that cannot be written."""
    if source == "-" and sys.stdin.isatty():
        raise DVAEError("input '-' reads stdin, but stdin is a terminal: pipe data in or give a file")
    if output == "-":
        if binary_output and sys.stdout.isatty():
            raise DVAEError("-o - writes binary data to stdout, which is a terminal: redirect or pipe it")
        return
    path = Path(output).absolute()
    if path.is_dir():
        raise DVAEError(f"-o {output}: is a folder; give a file name")
    folder = next(p for p in path.parents if p.exists())  # missing folders get created
    if not os.access(folder, os.W_OK):
        raise DVAEError(f"-o {output}: cannot write in {folder}")


def _format_for(output: str) -> str:
    """The format an output name suggests: .npy -> indices, .txt -> text, else packed."""
    return {".npy": "indices", ".txt": "text"}.get(Path(output).suffix.lower(), "packed")


def _load(ckpt: Optional[Path], device: str) -> Checkpoint:
    return load_checkpoint(ckpt or default_checkpoint(), distributed.local_device(resolve_device(device)))


def _report(json_out: bool, summary: dict, line: str, quiet: bool) -> None:
    if json_out:
        print(json.dumps(summary))
    elif not quiet:
        print(line, file=sys.stderr)


def encode(
    source: str = typer.Argument(..., metavar="INPUT", help="Images: a .npy array (N,28,28) or (N,784) of uint8 "
                                 "0-255, float in [0,1] or bool; an MNIST IDX file (gzip or raw); a PNG or a "
                                 "folder of PNGs; - = a .npy on stdin."),
    output: str = typer.Option(..., "--output", "-o", help="Codes file; - = stdout."),
    ckpt: Optional[Path] = typer.Option(None, help=CKPT_HELP),
    format: Optional[Format] = typer.Option(None, "--format", "-f", help="packed (header + 13 bytes an image "
                                            "for D=30, K=10), onehot, indices (.npy) or text (a line an image). "
                                            "Default: indices for *.npy, text for *.txt, else packed."),
    sample: bool = typer.Option(False, "--sample", help="Gumbel-max samples of q(y|x) instead of its argmax."),
    seed: int = typer.Option(0, help="Seed for --sample."),
    batch_size: int = typer.Option(CHUNK, min=1, help="Images per chunk (memory stays bounded)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help=SHARD_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (needs -o FILE)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
) -> None:
    """Encode images into their codes: D class indices an image (the argmax of q(y|x) by default).

    Examples: dvae encode imgs.npy -o codes.bin;  cat imgs.npy | dvae encode - -o - --format text
    Under torchrun the processes share the work and rank 0 writes the file.
    """
    with user_errors(), distributed.process_group(resolve_device(device)):
        fmt = format.value if format else _format_for(output)
        if json_out and output == "-":
            raise DVAEError("--json prints on stdout, which -o - uses for the codes: give -o FILE")
        if source == "-" and distributed.launched():
            raise DVAEError("under torchrun the input must be a file, not stdin")
        _check_io(source, output, fmt != "text")
        loaded = _load(ckpt, device)
        config = loaded.model.config
        images = open_images(source)
        block = shard_block(shard, len(images))
        count = block.stop - block.start
        main = distributed.is_main()
        reporter = for_terminal(quiet or not main)
        reporter.task("encode", "encoding", count)
        try:
            codes = encode_codes(loaded.model, images, block, batch_size, sample, seed)
            if main:
                with open_output(output) as f, CodeWriter(f, fmt, config.latent_vars, config.classes,
                                                          count, loaded.fingerprint) as writer:
                    for part in codes:
                        writer.write(part)
                        reporter.advance("encode", len(part))
        finally:
            reporter.close()
    if not main:
        return
    size = os.path.getsize(output) if output != "-" else None
    summary = {"images": count, "output": output, "format": fmt, "bytes": size, "shard": shard,
               "latent_vars": config.latent_vars, "classes": config.classes, "checkpoint": str(loaded.path),
               "fingerprint": loaded.fingerprint, "sample": sample, "seed": seed if sample else None}
    where = f"{output} ({fmt}, {size:,} bytes)" if size is not None else f"stdout ({fmt})"
    _report(json_out, summary, f"encoded {count:,} images with {loaded.path} -> {where}", quiet)


def _check_match(codes: Codes, loaded: Checkpoint, force: bool, name: str) -> None:
    """The codes must fit the checkpoint: same D and K always, same fingerprint unless --force."""
    config = loaded.model.config
    if codes.indices.shape[1] != config.latent_vars or codes.classes not in (None, config.classes):
        k = f", K={codes.classes}" if codes.classes is not None else ""
        raise DVAEError(f"{name}: codes have D={codes.indices.shape[1]}{k}; the checkpoint {loaded.path} "
                        f"has D={config.latent_vars}, K={config.classes}")
    if codes.indices.size and codes.indices.max() >= config.classes:
        raise DVAEError(f"{name}: class index {codes.indices.max()} is out of range for K={config.classes}")
    if codes.fingerprint not in (None, loaded.fingerprint) and not force:
        raise DVAEError(f"{name}: these codes were made by another model (fingerprint {codes.fingerprint}; "
                        f"{loaded.path} has {loaded.fingerprint}); use --force to decode them anyway")


def _write_npy(f: BinaryIO, chunks: Iterator[np.ndarray], count: int, dtype: np.dtype) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                             "fortran_order": False, "shape": (count, SIDE, SIDE)})
    for chunk in chunks:
        f.write(np.ascontiguousarray(chunk, dtype).tobytes())


def _write_png(f: BinaryIO, chunks: Iterator[np.ndarray], count: int) -> None:
    """A near-square grid of the images, row by row, white on black."""
    from PIL import Image

    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = np.zeros((rows * columns, SIDE, SIDE), np.uint8)
    start = 0
    for chunk in chunks:
        tiles[start:start + len(chunk)] = np.rint(chunk * 255)
        start += len(chunk)
    grid = tiles.reshape(rows, columns, SIDE, SIDE).transpose(0, 2, 1, 3).reshape(rows * SIDE, columns * SIDE)
    Image.fromarray(grid, "L").save(f, format="PNG")


def decode(
    codes_file: str = typer.Argument(..., metavar="CODES", help="Codes file in any format (detected from its "
                                     "content); - = stdin."),
    output: str = typer.Option(..., "--output", "-o", help="*.npy: (N,28,28) float32 Bernoulli means (uint8 0/1 "
                               "with --binarize); *.png: a grid of the images; - = .npy on stdout."),
    ckpt: Optional[Path] = typer.Option(None, help=CKPT_HELP),
    binarize: bool = typer.Option(False, "--binarize", help="Pixels 0/1 (mean >= 0.5) instead of the means."),
    force: bool = typer.Option(False, "--force", help="Decode codes made by another checkpoint "
                               "(D and K must still match)."),
    batch_size: int = typer.Option(CHUNK, min=1, help="Codes per chunk (memory stays bounded)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (needs -o FILE)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
) -> None:
    """Decode codes into images: the decoder's Bernoulli means, as .npy or a PNG grid.

    Example: dvae encode imgs.npy -o - | dvae decode - -o out.npy
    """
    with user_errors():
        suffix = "npy" if output == "-" else Path(output).suffix.lower().lstrip(".")
        if suffix not in ("npy", "png"):
            raise DVAEError(f"-o {output}: write images to a .npy or .png file (or - for .npy on stdout)")
        if json_out and output == "-":
            raise DVAEError("--json prints on stdout, which -o - uses for the images: give -o FILE")
        _check_io(codes_file, output, True)
        loaded = _load(ckpt, device)
        config = loaded.model.config
        codes = read_codes(codes_file, config.latent_vars, config.classes)
        name = "stdin" if codes_file == "-" else codes_file
        _check_match(codes, loaded, force, name)
        count = len(codes.indices)
        if suffix == "png" and count == 0:
            raise DVAEError(f"{name}: no codes, so no images to draw")
        reporter = for_terminal(quiet)
        reporter.task("decode", "decoding", count)

        def chunks() -> Iterator[np.ndarray]:
            parts = (codes.indices[start:start + batch_size] for start in range(0, count, batch_size))
            for means in decode_chunks(loaded.model, parts):
                reporter.advance("decode", len(means))
                yield (means >= 0.5).astype(np.uint8) if binarize else means

        try:
            with open_output(output) as f:
                if suffix == "png":
                    _write_png(f, chunks(), count)
                else:
                    _write_npy(f, chunks(), count, np.dtype(np.uint8 if binarize else np.float32))
        finally:
            reporter.close()
    summary = {"images": count, "output": output, "codes_format": codes.format, "checkpoint": str(loaded.path),
               "fingerprint_checked": codes.fingerprint is not None and not force}
    _report(json_out, summary, f"decoded {count:,} images with {loaded.path} -> {output}", quiet)
