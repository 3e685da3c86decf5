"""What every `dvae` command shares: consoles, the error path, and the options typed once
(device, quiet, JSON, data folder, checkpoint, output) with their checks.

Owns: option spellings, help texts of shared options, the stdout/terminal guards. Must not:
import torch or any module that does (commands import those inside their bodies).
"""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .. import fileio, terminal
from ..commandline import flag
from ..data import BINARIZATIONS, DATASETS, ENV_DATA_DIR
from ..errors import DVAEError, SettingError
from ..interrupts import Interrupted, exit_code, signal_name
from ..pretrained import NAMES as PRETRAINED_NAMES
from ..runfolder import ENV_CKPT
from ..seeds import MAX_SEED, RANGE as SEED_RANGE, is_seed

stdout = Console()
stderr = Console(stderr=True)

Split = Enum("Split", {name: name for name in ("train", "valid", "test")}, type=str)

DEVICE = typer.Option("auto", "--device", help="auto (cuda when available, else mps, else cpu), cpu, cuda, "
                      "cuda:N or mps.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")
JSON = typer.Option(False, "--json", help="Print JSON on stdout instead.")
DATA_DIR = typer.Option(None, "--data-dir", envvar=ENV_DATA_DIR, show_envvar=True,
                        help="Folder with the data set's IDX image files, or a torchvision root (<class>/raw "
                             "inside); default: the cache ~/.cache/dvae/<data set>. The data set is the one the "
                             "checkpoint learned (dvae train --dataset).")
Dataset = Enum("Dataset", {name: name for name in DATASETS}, type=str)
Binarize = Enum("Binarize", {name: name for name in BINARIZATIONS}, type=str)
DATASET = typer.Option("mnist", "--dataset", help="Data set: " + ", ".join(DATASETS) + " (IDX files in MNIST's "
                       "layout, any image size: their header gives it); npy = train.npy and test.npy, uint8 arrays "
                       "(N, height, width) of grey images in --data-dir.")
BINARIZE = typer.Option("threshold", "--binarize", help="; ".join(f"{k} = {v}" for k, v in BINARIZATIONS.items()) + ".")
CKPT_HELP = (f"Checkpoint file, run folder (its best checkpoint), or {PRETRAINED_NAMES} (shipped with dvae); "
             "default: the newest run under ./runs, else pretrained:best.")
CKPT = typer.Option(None, "--ckpt", "-c", envvar=ENV_CKPT, show_envvar=True, help=CKPT_HELP)
CKPT_ARG = typer.Argument(None, metavar="CKPT", show_default=False,
                          help="The checkpoint, as --ckpt (the older spelling, kept).")
OUTPUT_DECLS = ("--output", "-o", "--out")  # one spelling for every command's output; --out kept


def output_option(help: str, required: bool = True):
    """The output option of a command: -o/--output (and the older --out)."""
    return typer.Option(... if required else None, *OUTPUT_DECLS, help=help)


def checkpoint(positional: Optional[str], option: Optional[str]) -> Path:
    """The checkpoint file a command uses: the positional CKPT, else --ckpt (or $DVAE_CKPT), else
    the newest run under ./runs, else pretrained:best."""
    from ..runfolder import default_checkpoint, resolve_checkpoint

    given = positional if positional is not None else option
    return resolve_checkpoint(given) if given is not None else default_checkpoint()


def checkpoint_name(given: Optional[str], path: Path) -> str:
    """How a report names the checkpoint: `pretrained:NAME` by its name, any other by its file."""
    from ..pretrained import is_pretrained

    return str(given) if given is not None and is_pretrained(given) else str(path)


def check_json_output(json_out: bool, output: str, what: str) -> None:
    """--json prints on stdout, so the data cannot go there too."""
    if json_out and output == "-":
        raise DVAEError(f"--json prints on stdout, which -o - uses for the {what}: give -o FILE")


def check_binary_stdout(output: str) -> None:
    """Binary data is not for a terminal."""
    if output == "-" and sys.stdout.isatty():
        raise DVAEError("-o - writes binary data to stdout, which is a terminal: redirect or pipe it")


def check_output(output: str | Path, *inputs: str | Path | None, data_dir: Optional[str | Path] = None) -> None:
    """Before any work: an output that can be written and is none of the inputs, nor any file of a
    data set (in --data-dir, $DVAE_DATA_DIR or the cache), whatever the command reads (fileio's policy)."""
    from ..data import dataset_files

    fileio.check_output(output, [source for source in inputs if source is not None], dataset_files(data_dir))


def check_stdin(source: str, flag: str = "input") -> None:
    """'-' reads stdin, which must be open and not a terminal."""
    if source == "-":
        fileio.stdin(f"{flag} '-'")


def data_dir_arg(data_dir: Optional[Path]) -> Optional[str]:
    return str(data_dir) if data_dir else None


def seed_option(help: str):
    """A command's --seed: one range for every command (seeds.py), refused as a usage error outside it."""
    return typer.Option(0, min=0, max=MAX_SEED, help=f"{help} ({SEED_RANGE}).")


def parse_seeds(text: str) -> list[int]:
    """--seeds '0,1,2' -> [0, 1, 2]: distinct seeds (seeds.py)."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise DVAEError(f"seeds must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not all(map(is_seed, seeds)) or len(set(seeds)) != len(seeds):
        raise DVAEError(f"seeds must be distinct, each {SEED_RANGE}; got {text!r}")
    return seeds


def data_config(dataset: Dataset, binarize: Binarize, data_dir: Optional[Path], valid_size: Optional[int] = None):
    """The DataConfig of --dataset, --binarize (and --valid-size), its image size read from the files in
    --data-dir."""
    from ..data import describe

    return describe(dataset.value, data_dir_arg(data_dir), binarize.value, valid_size)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user mistakes into a one-line message and exit code 1; a stop signal into one line and
    exit 128 + its number (Ctrl-C 130, SIGTERM 143, SIGHUP 129)."""
    try:
        yield
    except DVAEError as e:
        message = e.spelled(flag) if isinstance(e, SettingError) else str(e)
        stderr.print(f"[bold red]error:[/] {escape(terminal.shown(message, terminal.MAX_LINE))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, Interrupted) as e:
        stderr.print(f"[yellow]interrupted[/] ({signal_name(e)})", highlight=False)
        raise typer.Exit(exit_code(e)) from None
