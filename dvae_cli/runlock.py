"""The lock that gives a run folder one writer: `dvae train` and `--resume` hold it while they run.

A lock file `.lock` in the folder holds the owner's pid, host and start time. It is created with
O_EXCL, so of two processes that race for it exactly one wins. A lock whose owner is a process of
this host that no longer exists (killed with -9, a crashed machine) is stale: it is taken over,
and the caller is told. A lock held by a live process, or by one on another host (whose liveness
cannot be checked from here), is refused with a message that says what to do.

Owns: the lock file. Must not: know what a run folder holds (runfolder.py does); it only guards it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import DVAEError

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _owner(path: Path) -> dict | None:
    """The lock's record, {} when unreadable (a lock being written, or damaged), None when gone."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record) + "\n")
    return True


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, on_takeover: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the run folder's lock for the block (the folder is created if needed).

    `on_takeover(message)` is called when a stale lock of a dead process is taken over.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DVAEError(f"{folder}: exists and is not a folder; choose another --out") from None
    except OSError as e:
        raise DVAEError(f"{folder}: cannot create the run folder ({e.strerror})") from None
    path = folder / LOCK
    for _ in range(3):  # a stale lock is removed and the create retried; a live winner ends the loop
        try:
            if _create(path):
                break
        except OSError as e:
            raise DVAEError(f"{folder}: cannot write in the run folder ({e.strerror})") from None
        owner = _owner(path)
        if owner is None:
            continue
        pid, host = owner.get("pid"), owner.get("host")
        here = host == socket.gethostname()
        if here and isinstance(pid, int) and not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            on_takeover(f"{folder}: took over the lock of process {pid} (no longer running, since {owner.get('since')})")
            continue
        who = f"process {pid} on {host}" if owner else "another process"
        hint = "" if here or not owner else f"; if that process is gone, delete {path}"
        raise DVAEError(f"{folder} is in use by {who} (since {owner.get('since', '?')}): "
                        f"wait for it or choose another --out{hint}")
    else:
        raise DVAEError(f"{folder}: could not take the run folder's lock ({path}); try again")
    try:
        yield
    finally:
        if (_owner(path) or {}).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
