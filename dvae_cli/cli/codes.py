"""`dvae encode`, `dvae decode` and `dvae cat`: images to code files and back, made for shell
pipelines, and shards (`--shard I/N`, torchrun) joined into one file.

Owns: the flags and the stdout/terminal checks of the codes commands. Must not: know a format's
bytes (codes/formats/) or run the model itself (codes/model_side.py).
"""

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

from ..codes.formats import FORMATS, format_for, formats_help, get_format
from ..errors import DVAEError
from ..inputs import CHUNK
from ..terminal import escape
from .common import (seed_option, CKPT, DEVICE, QUIET, check_binary_stdout, check_json_output, check_output, check_stdin,
                     checkpoint, checkpoint_name, output_option, user_errors)

app = typer.Typer()
Format = Enum("Format", {name: name for name in FORMATS}, type=str)
SHARD_HELP = ("Encode only block I of N equal contiguous blocks of the input (I = 0 .. N-1), e.g. one job "
              "of a job array; join the outputs in order with `dvae cat`.")
JSON_SUMMARY = typer.Option(False, "--json", help="Print a JSON summary on stdout (needs -o FILE).")


def shard_numbers(spec: str | None) -> tuple[int, int]:
    """I and N of `--shard I/N` (0 and 1 without it), or a clear error for a bad spec."""
    if spec is None:
        return 0, 1
    index, _, parts = spec.partition("/")
    if not (index.isdigit() and parts.isdigit() and int(index) < int(parts) < 2**32):
        raise DVAEError(f"--shard {spec}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return int(index), int(parts)


def shard_block(spec: str | None, count: int) -> slice:
    """The images of `--shard I/N` (all of them without it)."""
    from ..distributed import shard

    index, parts = shard_numbers(spec)
    return shard(count, parts, index)


def _check_io(source: str, output: str, binary_output: bool, ckpt: Path) -> None:
    """Fail before any work on a terminal where data should flow, or an output that cannot be
    written or is one of the inputs (the data or the checkpoint)."""
    check_stdin(source)
    if binary_output:
        check_binary_stdout(output)
    check_output(output, source, ckpt)


def _size(output: str) -> int | None:
    """The bytes of a written file; None for stdout, a device or a FIFO (streamed, not kept)."""
    return os.path.getsize(output) if output != "-" and os.path.isfile(output) else None


def _report(json_out: bool, summary: dict, line: str, quiet: bool) -> None:
    if json_out:
        print(json.dumps(summary))
    elif not quiet:
        print(escape(line), file=sys.stderr)  # it names files, which may hold control characters


@app.command()
def encode(
    source: str = typer.Argument(..., metavar="INPUT", help="Images of the size the checkpoint learned: a .npy "
                                 "array (N,height,width) or (N,pixels) of uint8 0-255, float in [0,1] or bool; an IDX file (gzip or raw); a PNG or a "
                                 "folder of PNGs; - = a .npy on stdin."),
    output: str = output_option("Codes file; - = stdout."),
    ckpt: Optional[str] = CKPT,
    format: Optional[Format] = typer.Option(None, "--format", "-f", help=formats_help()),
    sample: bool = typer.Option(False, "--sample", help="Gumbel-max samples of q(y|x) instead of its argmax."),
    seed: int = seed_option("Seed for --sample"),
    batch_size: int = typer.Option(CHUNK, min=1, help="Images per chunk (memory stays bounded)."),
    device: str = DEVICE,
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help=SHARD_HELP),
    json_out: bool = JSON_SUMMARY,
    quiet: bool = QUIET,
) -> None:
    """Encode images into their codes: D class indices an image (the argmax of q(y|x) by default).

    Examples: dvae encode imgs.npy -o codes.bin;  cat imgs.npy | dvae encode - -o - --format text
    Under torchrun the processes share the work and rank 0 writes the file.
    """
    from .. import distributed
    from ..checkpoint import load_checkpoint
    from ..codes import CodeWriter, Shard
    from ..codes.model_side import encode_shared
    from ..fileio import open_output
    from ..inputs import identity, open_images
    from ..progress import for_terminal

    with user_errors(), distributed.process_group(distributed.resolve_device(device)):
        fmt = format.value if format else format_for(output)
        check_json_output(json_out, output, "codes")
        if source == "-" and distributed.launched():
            raise DVAEError("under torchrun the input must be a file, not stdin")
        ckpt_path = checkpoint(None, ckpt)
        _check_io(source, output, get_format(fmt).binary, ckpt_path)
        loaded = load_checkpoint(ckpt_path, distributed.local_device(distributed.resolve_device(device)))
        config = loaded.model.config
        images = open_images(source, data=loaded.data)
        block = shard_block(shard, len(images))
        count = block.stop - block.start
        main = distributed.is_main()
        index, parts = shard_numbers(shard)
        origin = Shard(index, parts, len(images), identity(images)) if main else None
        reporter = for_terminal(quiet or not main)
        reporter.task("encode", "encoding", count)
        try:
            codes = encode_shared(loaded.model, images, block, batch_size, sample, seed)
            if main:
                with open_output(output) as f, CodeWriter(f, fmt, config.latent_vars, config.classes,
                                                          count, loaded.fingerprint, origin) as writer:
                    for part in codes:
                        writer.write(part)
                        reporter.advance("encode", len(part))
        finally:
            reporter.close()
    if not main:
        return
    name = checkpoint_name(ckpt, loaded.path)
    size = _size(output)
    summary = {"images": count, "output": output, "format": fmt, "bytes": size, "shard": shard,
               "latent_vars": config.latent_vars, "classes": config.classes, "checkpoint": name,
               "fingerprint": loaded.fingerprint, "input_identity": origin.identity, "sample": sample,
               "seed": seed if sample else None}
    where = f"{output} ({fmt}, {size:,} bytes)" if size is not None else f"{'stdout' if output == '-' else output} ({fmt})"
    _report(json_out, summary, f"encoded {count:,} images with {name} -> {where}", quiet)


def _check_match(codes, loaded, force: bool, name: str) -> None:
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


def _write_npy(f: BinaryIO, chunks: Iterator[np.ndarray], count: int, dtype: np.dtype,
               shape: tuple[int, int]) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                             "fortran_order": False, "shape": (count, *shape)})
    for chunk in chunks:
        f.write(np.ascontiguousarray(chunk, dtype).tobytes())


def _write_png(f: BinaryIO, chunks: Iterator[np.ndarray], count: int, shape: tuple[int, int]) -> None:
    """A near-square grid of the images, drawn as every figure draws digits (figures.tile)."""
    from PIL import Image

    from ..figures import tile

    columns = math.ceil(math.sqrt(count))
    grid = np.full((math.ceil(count / columns) * columns, shape[0] * shape[1]), np.nan)
    start = 0
    for chunk in chunks:
        grid[start:start + len(chunk)] = chunk.reshape(len(chunk), -1)
        start += len(chunk)
    Image.fromarray(tile(grid.reshape(-1, columns, grid.shape[1]), shape, scale=1), "RGB").save(f, format="PNG")


@app.command()
def decode(
    codes_file: str = typer.Argument(..., metavar="CODES", help="Codes file in any format (detected from its "
                                     "content); - = stdin."),
    output: str = output_option("*.npy: (N,height,width) float32 Bernoulli means (uint8 0/1 with --binarize); "
                                "*.png: a grid of the images; - = .npy on stdout."),
    ckpt: Optional[str] = CKPT,
    binarize: bool = typer.Option(False, "--binarize", help="Pixels 0/1 (mean >= 0.5) instead of the means."),
    force: bool = typer.Option(False, "--force", help="Decode codes made by another checkpoint "
                               "(D and K must still match)."),
    batch_size: int = typer.Option(CHUNK, min=1, help="Codes per chunk (memory stays bounded)."),
    device: str = DEVICE,
    json_out: bool = JSON_SUMMARY,
    quiet: bool = QUIET,
) -> None:
    """Decode codes into images: the decoder's Bernoulli means, as .npy or a PNG grid.

    Example: dvae encode imgs.npy -o - | dvae decode - -o out.npy
    """
    from .. import distributed
    from ..checkpoint import load_checkpoint
    from ..codes import read_codes
    from ..codes.model_side import decode_chunks
    from ..fileio import is_stream, open_output
    from ..progress import for_terminal

    with user_errors():
        suffix = Path(output).suffix.lower().lstrip(".")
        if suffix not in ("npy", "png") and is_stream(output):  # stdout, /dev/stdout, a FIFO: .npy
            suffix = "npy"
        if suffix not in ("npy", "png"):
            raise DVAEError(f"-o {output}: write images to a .npy or .png file (or - for .npy on stdout)")
        check_json_output(json_out, output, "images")
        ckpt_path = checkpoint(None, ckpt)
        _check_io(codes_file, output, True, ckpt_path)
        loaded = load_checkpoint(ckpt_path, distributed.local_device(distributed.resolve_device(device)))
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
            for means in decode_chunks(loaded.model, parts, loaded.data.shape):
                reporter.advance("decode", len(means))
                yield (means >= 0.5).astype(np.uint8) if binarize else means

        try:
            with open_output(output) as f:
                if suffix == "png":
                    _write_png(f, chunks(), count, loaded.data.shape)
                else:
                    _write_npy(f, chunks(), count, np.dtype(np.uint8 if binarize else np.float32), loaded.data.shape)
        finally:
            reporter.close()
    ckpt_name = checkpoint_name(ckpt, loaded.path)
    summary = {"images": count, "output": output, "codes_format": codes.format, "checkpoint": ckpt_name,
               "fingerprint_checked": codes.fingerprint is not None and not force}
    _report(json_out, summary, f"decoded {count:,} images with {ckpt_name} -> {output}", quiet)


@app.command()
def cat(
    files: list[Path] = typer.Argument(..., metavar="CODES...", help="Codes files, joined in the order given."),
    output: str = output_option("The joined codes file (same format); - = stdout."),
    json_out: bool = JSON_SUMMARY,
    quiet: bool = QUIET,
) -> None:
    """Join codes files (e.g. the shards of `dvae encode --shard I/N`) into one, in the order given.

    The files must share format, D, K and checkpoint fingerprint. Shards of `dvae encode --shard I/N` (packed and
    onehot record which) must be all N shards of one input, in order. Example: dvae cat part-0.bin part-1.bin -o all.bin
    """
    from ..codes import join_codes

    with user_errors():
        check_json_output(json_out, output, "codes")
        check_binary_stdout(output)
        check_output(output, *files)
        joined = join_codes(files, output)
    summary = {"files": len(files), "images": len(joined.indices), "output": output, "format": joined.format,
               "bytes": _size(output), "fingerprint": joined.fingerprint}
    _report(json_out, summary, f"joined {len(files)} files, {len(joined.indices):,} codes ({joined.format}) "
            f"-> {output}", quiet)
