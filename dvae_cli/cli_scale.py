"""Scaling out the codes: `dvae encode --shard I/N` blocks and under torchrun, and `dvae cat` to join them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import typer

from . import distributed
from .cli_common import user_errors
from .codes import index_dtype, join_codes
from .codes.model_side import encode_block
from .errors import DVAEError
from .inputs import ImageSource
from .model import DiscreteVAE

SHARD_HELP = ("Encode only block I of N equal contiguous blocks of the input (I = 0 .. N-1), e.g. one job "
              "of a job array; join the outputs in order with `dvae cat`.")


def shard_block(spec: str | None, count: int) -> slice:
    """The images of `--shard I/N` (all of them without it), or a clear error for a bad spec."""
    if spec is None:
        return slice(0, count)
    index, _, parts = spec.partition("/")
    if not (index.isdigit() and parts.isdigit() and int(index) < int(parts)):
        raise DVAEError(f"--shard {spec}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return distributed.shard(count, int(parts), int(index))


def encode_codes(model: DiscreteVAE, images: ImageSource, block: slice, batch_size: int, sample: bool,
                 seed: int) -> Iterable[np.ndarray]:
    """The codes of images[block] in order, chunk by chunk. Under torchrun each process encodes its
    part of the block and rank 0 gets all parts (held in memory: D bytes an image); the others none."""
    if distributed.world_size() == 1:
        return encode_block(model, images, block.start, block.stop, batch_size, sample, seed)
    mine = distributed.shard(block.stop - block.start)
    codes = encode_block(model, images, block.start + mine.start, block.start + mine.stop, batch_size, sample, seed)
    empty = np.zeros((0, model.config.latent_vars), index_dtype(model.config.classes))
    return distributed.gather_to_main(np.concatenate([empty, *codes])) or []


def cat(
    files: list[Path] = typer.Argument(..., metavar="CODES...", help="Codes files, joined in the order given."),
    output: str = typer.Option(..., "--output", "-o", help="The joined codes file (same format); - = stdout."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (needs -o FILE)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
) -> None:
    """Join codes files (e.g. the shards of `dvae encode --shard I/N`) into one, in the order given.

    The files must share format, D, K and checkpoint fingerprint. Example: dvae cat part-0.bin part-1.bin -o all.bin
    """
    with user_errors():
        if json_out and output == "-":
            raise DVAEError("--json prints on stdout, which -o - uses for the codes: give -o FILE")
        if output != "-" and Path(output).absolute() in {f.absolute() for f in files}:
            raise DVAEError(f"-o {output}: is also an input; write the joined file elsewhere")
        if output == "-" and sys.stdout.isatty():
            raise DVAEError("-o - writes binary data to stdout, which is a terminal: redirect or pipe it")
        joined = join_codes(files, output)
    summary = {"files": len(files), "images": len(joined.indices), "output": output, "format": joined.format,
               "bytes": os.path.getsize(output) if output != "-" else None, "fingerprint": joined.fingerprint}
    if json_out:
        print(json.dumps(summary))
    elif not quiet:
        print(f"joined {len(files)} files, {len(joined.indices):,} codes ({joined.format}) -> {output}",
              file=sys.stderr)
