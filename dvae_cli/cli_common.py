"""What every `dvae` subcommand shares: consoles, error handling, common option types."""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from .errors import DVAEError

stdout = Console()
stderr = Console(stderr=True)

Split = Enum("Split", {name: name for name in ("train", "valid", "test")}, type=str)
DATA_DIR_HELP = "Folder with the four MNIST IDX files (default: $DVAE_DATA_DIR, else ~/.cache/dvae/mnist)"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user mistakes into a one-line message and exit code 1; Ctrl-C into exit 130."""
    try:
        yield
    except DVAEError as e:
        stderr.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


