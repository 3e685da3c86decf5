"""The registry of command groups: one line each in COMMAND_GROUPS (its module, its commands, its
help panel), and the version line. cli/__init__.py (the entry point) and main.py (the app) read it.

Owns: which command groups exist. Must not: import any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._version import __version__


@dataclass(frozen=True)
class CommandGroup:
    module: str  # defines `app`, a typer.Typer holding the commands
    commands: tuple[str, ...]
    panel: str | None = None  # the heading of the commands in `dvae --help`


COMMAND_GROUPS = [  # one line per command group
    CommandGroup("dvae_cli.cli.train", ("train",)),
    CommandGroup("dvae_cli.cli.eval", ("eval",)),
    CommandGroup("dvae_cli.cli.reproduce", ("reproduce",), "Experiments"),
    CommandGroup("dvae_cli.cli.pretrained", ("pretrained",), "Experiments"),
    CommandGroup("dvae_cli.cli.gradients", ("gradients",), "Experiments"),
    CommandGroup("dvae_cli.cli.codes", ("encode", "decode", "cat"), "Codes"),
    CommandGroup("dvae_cli.cli.search", ("index", "search"), "Codes"),
    CommandGroup("dvae_cli.cli.figures", ("heatmap", "recon", "samples", "traverse", "plot"), "Figures"),
]


def version_line() -> str:
    return f"dvae {__version__}"
