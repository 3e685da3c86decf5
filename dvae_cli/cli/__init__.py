"""The `dvae` command line: a thin layer over the Python API, one small module per command group.

Registering a command group is one line in COMMAND_GROUPS (groups.py): its module, its commands,
its help panel. The module defines `app = typer.Typer()` and its commands with `@app.command()`; it is
imported only when one of its commands runs or shows its own help, so `dvae --version` and
`dvae --help` import no torch (the listing reads each command's docstring from its source).
`main.py` builds the top-level app from that list.

Owns: the entry point. Must not: hold any command's logic.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from .groups import version_line

if TYPE_CHECKING:
    from .main import app


def run() -> None:
    """Console-script entry point. `dvae --version` alone answers before the app is built.

    Ctrl-C, SIGTERM and SIGHUP unwind every command alike (interrupts.py); one that arrives
    outside a command's own handling (while torch loads, say) still ends in one line."""
    if sys.argv[1:] == ["--version"]:
        print(version_line())
        return
    from ..interrupts import Interrupted, exit_code, handle_stop_signals, signal_name

    if sys.stdout is None:  # started with stdout closed (`dvae ... >&-`): what it prints would be lost
        with contextlib.suppress(OSError, ValueError, AttributeError):
            print("error: stdout is closed; give it somewhere to go (e.g. >/dev/null)", file=sys.stderr, flush=True)
        sys.exit(1)
    handle_stop_signals()
    try:
        from .main import app

        app()
    except Interrupted as e:
        _say(f"interrupted ({signal_name(e)})")
        sys.exit(exit_code(e))
    except OSError as e:  # stdout or stderr could not be written (a full disk); outputs say so themselves
        _say(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        sys.exit(1)


def _say(line: str) -> None:
    """The last line on stderr, if it can still be written; stdout is sent to /dev/null, so what
    is left in its buffer cannot fail again (and print a traceback) when Python exits."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    from ..terminal import escape

    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(escape(line), file=sys.stderr, flush=True)


def __getattr__(name: str):
    if name == "app":  # built on first use: it needs typer
        from .main import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
