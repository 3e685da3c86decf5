"""The lock that gives a run folder one writer: `dvae train` and `--resume` hold it while they run.

A lock file `.lock` in the folder holds the owner's pid, host and start time. It is created with
O_EXCL, so of two processes that race for it exactly one wins. A lock whose owner is a process of
this host that no longer exists (killed with -9, a crashed machine) is stale: it is taken over,
and the caller is told. A lock held by a live process, or by one on another host (whose liveness
cannot be checked from here), is refused with a message that says what to do. The owner also holds
an flock on the file while it runs (the kernel drops it with the process), so a lock left empty or
unreadable (killed while writing it) is taken over once no process holds it; one that cannot be
written completely is removed at once.

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

from .errors import DVAEError, Setting, SettingError

try:
    import fcntl
except ImportError:  # not POSIX: only the record's pid tells a stale lock
    fcntl = None

LOCK = ".lock"
GRACE = 2.0  # seconds an empty lock may be one being written; older and held by nobody, it is stale


class FolderInUse(SettingError):
    """The run folder's lock is held by a live process (or one on another host): another writer."""


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


def _create(path: Path) -> int | None:
    """Create the lock, locked (flock) and with its record; its descriptor, or None when one exists.
    A lock that cannot be written completely (a full disk) is removed again: none is left half made."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: the record alone says who
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        data = (json.dumps(record) + "\n").encode()
        if os.write(fd, data) != len(data):
            raise OSError(28, "the lock file could not be written completely")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return fd


def _unheld(path: Path) -> bool:
    """Whether no process holds the lock file's flock (its owner, holding it while it runs, is gone)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def in_use(folder: str | os.PathLike) -> bool:
    """Whether a live process (of this host, or any of another host) holds the folder's lock now: a
    cheap look before starting a writer that `run_lock` would refuse."""
    owner = _owner(Path(folder) / LOCK)
    if not owner or not isinstance(owner.get("pid"), int):
        return False
    return owner.get("host") != socket.gethostname() or _alive(owner["pid"])


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, on_takeover: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the run folder's lock for the block (the folder is created if needed).

    `on_takeover(message)` is called when a stale lock (of a dead process, or an empty or unreadable
    one that nobody holds) is taken over.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SettingError(f"{folder}: exists and is not a folder; choose another ", Setting("out")) from None
    except OSError as e:
        raise DVAEError(f"{folder}: cannot create the run folder ({e.strerror})") from None
    path = folder / LOCK
    fd = None
    deadline = time.monotonic() + GRACE + 1
    for attempt in range(100):  # a stale lock is removed and the create retried; a live winner ends the loop
        try:
            fd = _create(path)
        except OSError as e:
            raise DVAEError(f"{folder}: cannot write the lock {path} in the run folder ({e.strerror or e})") from None
        if fd is not None:
            break
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
        if not (isinstance(pid, int) and isinstance(host, str)):  # empty or unreadable: being written, or left so
            if _unheld(path) and _age(path) >= GRACE:  # its owner, which holds it while it runs, is gone
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                on_takeover(f"{folder}: took over an empty or unreadable lock that no process holds ({path})")
                continue
            if time.monotonic() < deadline:  # a lock a moment old may still be getting its record
                time.sleep(0.1)
                continue
            raise DVAEError(f"{path}: the run folder's lock is empty or unreadable and a process still holds it: "
                            f"wait for it, or if no dvae is running on {folder}, delete {path}")
        who = f"process {pid} on {host}"
        hint = "" if here else f"; if that process is gone, delete {path}"
        raise FolderInUse(f"{folder} is in use by {who} (since {owner.get('since', '?')}): "
                           "wait for it or choose another ", Setting("out"), hint)
    else:
        raise DVAEError(f"{folder}: could not take the run folder's lock ({path}); try again")
    try:
        yield
    finally:
        try:
            if (_owner(path) or {}).get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            os.close(fd)
