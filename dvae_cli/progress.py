"""Progress on stderr: Rich progress bars on a terminal, plain lines otherwise.

Owns: every progress line and bar. Must not: write to stdout (data and results go there).
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class Reporter:
    """Reports nothing; the base of the others (and what library calls use by default)."""

    def task(self, key: str, description: str, total: int) -> None:
        """Start (or restart) the bar `key`."""

    def advance(self, key: str, n: int = 1) -> None:
        """Move the bar `key` on by n."""

    def log(self, line: str) -> None:
        """Print a line of its own."""

    def close(self) -> None:
        """Finish the display."""


class Plain(Reporter):
    """Lines on a stream, no bars: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr

    def log(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class Prefixed(Reporter):
    """Another reporter's lines, each with a prefix, and none of its bars: one of several runs
    trained together, whose bars the group drives."""

    def __init__(self, reporter: Reporter, prefix: str):
        self.reporter, self.prefix = reporter, prefix

    def log(self, line: str) -> None:
        self.reporter.log(self.prefix + line)


class Bars(Reporter):
    """Rich progress bars on stderr, one per key (e.g. 'epochs' and 'batches')."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self.progress.start()
        self.tasks: dict[str, int] = {}

    def task(self, key: str, description: str, total: int) -> None:
        if key in self.tasks:
            self.progress.reset(self.tasks[key], total=total, description=description)
        else:
            self.tasks[key] = self.progress.add_task(description, total=total)

    def advance(self, key: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[key], n)

    def log(self, line: str) -> None:
        self.progress.console.print(line, highlight=False, markup=False)

    def close(self) -> None:
        self.progress.stop()  # idempotent


def for_terminal(quiet: bool = False) -> Reporter:
    """Bars when stderr is a terminal, plain lines when it is not, nothing when quiet."""
    if quiet:
        return Reporter()
    return Bars() if sys.stderr.isatty() else Plain()
