"""Stop signals: Ctrl-C (SIGINT), SIGTERM (what `timeout`, job schedulers and `docker stop` send)
and SIGHUP (a closed terminal) all end a command the same way.

The command line turns each into `Interrupted`, which unwinds like Ctrl-C does: every output
being written is dropped (the old file stays, no temporary file is left), a training run keeps
its last complete epoch, and the process exits with 128 + the signal's number (130, 143, 129)
after one line on stderr. `deferred_interrupt` holds them while a group of files is written.

Owns: which signals stop dvae, their exception and exit codes. Must not: print (the CLI does).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException (as KeyboardInterrupt is), so `except Exception`
    does not swallow it; not a KeyboardInterrupt, so it keeps its signal up to the exit code."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(interrupt: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended (Ctrl-C: 130)."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def signal_name(interrupt: BaseException) -> str:
    return signal.Signals(getattr(interrupt, "signum", signal.SIGINT)).name


_stopping = False


def _stop(signum: int, frame: object) -> None:
    """Raise Interrupted once; signals arriving while it unwinds are ignored, so the cleanup
    (removing temporary files, closing a run) finishes. SIGKILL still ends everything."""
    global _stopping
    if not _stopping:
        _stopping = True
        raise Interrupted(signum)


def handle_stop_signals() -> None:
    """Make every stop signal raise Interrupted in the main thread, except those the process was
    started with ignored (`nohup` ignores SIGHUP, a background job SIGINT): they stay ignored."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold the stop signals until the block ends, so a group of writes is all or nothing; then
    deliver the first one held to the handler that was in place (Ctrl-C: KeyboardInterrupt in
    plain Python, Interrupted under the command line)."""
    if threading.current_thread() is not threading.main_thread():  # only it receives signals
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN and handler is not None:  # None: set outside Python, leave it
            previous[signum] = signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        signal.raise_signal(held[0])
