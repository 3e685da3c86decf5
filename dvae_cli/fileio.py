"""The output policy: how every file dvae writes reaches its target, in one place.

- "-" is stdout.
- A regular file (or a new one) is replaced atomically: the bytes go to a hidden temporary
  file beside it (`.NAME.XXXX.tmp`), which is fsynced and renamed onto the name only once
  complete. An error, Ctrl-C, SIGTERM or SIGHUP removes the temporary file and leaves the old
  file as it was. A write killed outright (SIGKILL, a crash) can leave its temporary file; the
  next write into that folder removes it (its writer's lock is gone). The new file keeps the old one's permissions (and owner, where allowed); a
  new file gets the umask's. Missing folders are created.
- A symbolic link is followed: the file it points to is replaced, the link stays a link.
- Anything else (a device such as /dev/null, a FIFO, a terminal, /dev/stdout or /dev/fd/N) is
  opened and streamed into, never renamed over.
- An output that is the same file as an input (same device and inode, after links, including
  stdin and stdout when they are files) is refused by `check_output`, before any work.
- An OSError while writing (a full disk, no permission) is a one-line DVAEError naming the
  output. A closed pipe (EPIPE) stays a BrokenPipeError: the reader stopped on purpose (`| head`),
  and the command line ends quietly.

Owns: how bytes reach their target. Must not: know what the bytes mean, or spell CLI flags.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import DVAEError
from .interrupts import deferred_interrupt

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so leftovers are not recognised
    fcntl = None

LEFTOVER = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's names: .NAME.XXXXXXXX.tmp
LEFTOVER_AGE = 10  # seconds: a younger temporary file may be one just made, not yet locked
FD_FOLDER = re.compile(r"/proc/(self|thread-self|\d+)(/task/\d+)?/fd")  # /dev/fd and /dev/std* lead here


def check_output(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                 protected: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, an output that cannot be written or that is one of `inputs`
    (files, folders read whole, "-" for stdin) or of the `protected` files (a data set's, whether
    this command reads them or not). Same file means same device and inode, through symbolic and
    hard links. "-" is stdout."""
    name = str(target)
    output = _stdio_file(sys.stdout) if name == "-" else _check_location(Path(target))
    if output is None:
        return
    for source in inputs:
        for read, file in _input_files(source):
            if (file.st_dev, file.st_ino) == (output.st_dev, output.st_ino):
                where = "stdout is" if name == "-" else f"{name} is"
                also = "stdin" if str(source) == "-" else read
                raise DVAEError(f"{where} the same file as the input {also}: writing it would destroy "
                                f"the input; write elsewhere")
    for file in protected:
        try:
            found = os.stat(file)
        except OSError:  # gone or unreadable: nothing of it to destroy through this name
            continue
        if (found.st_dev, found.st_ino) == (output.st_dev, output.st_ino):
            where = "stdout is" if name == "-" else f"{name} is"
            raise DVAEError(f"{where} the same file as the data set's {file}: writing it would destroy "
                            f"the data set; write elsewhere")


def stdin(what: str = "'-'") -> BinaryIO:
    """The process's standard input as a binary stream, for an argument `what` given as '-': a
    one-line error when stdin is closed (started with <&-) or a terminal (nothing piped in)."""
    stream = sys.stdin
    if stream is None or getattr(stream, "closed", False):
        raise DVAEError(f"{what} reads stdin, but stdin is closed: pipe data in or give a file")
    try:
        terminal = stream.isatty()
    except (OSError, ValueError):
        raise DVAEError(f"{what} reads stdin, but stdin is closed: pipe data in or give a file") from None
    if terminal:
        raise DVAEError(f"{what} reads stdin, but stdin is a terminal: pipe data in or give a file")
    return stream.buffer


def _check_location(path: Path) -> os.stat_result | None:
    """A folder, or a place where no file can be made, is refused with a clear line; the stat
    of what is there is returned (None when new)."""
    kind, found, _ = _kind(path)
    if kind == "folder":
        raise DVAEError(f"{path}: is a folder; give a file name")
    if kind == "stream":
        if not os.access(path, os.W_OK):
            raise DVAEError(f"{path}: cannot write it (permission denied)")
        return found
    real = Path(os.path.realpath(path))
    folder = next(p for p in real.parents if p.exists())
    if not folder.is_dir():
        raise DVAEError(f"{path}: cannot make it, {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DVAEError(f"{path}: cannot write in {folder} (a file is replaced through a temporary "
                        f"file beside it); write elsewhere")
    return found


def _input_files(source: str | os.PathLike) -> Iterator[tuple[str, os.stat_result]]:
    """(name, stat) of each file an input reads: itself, a folder's files, or stdin's file."""
    if str(source) == "-":
        found = _stdio_file(sys.stdin)
        if found is not None:
            yield "stdin", found
        return
    path = Path(source)
    found = _stat(path)
    if found is not None and stat.S_ISDIR(found.st_mode):
        for entry in sorted(path.iterdir()):
            inner = _stat(entry)
            if inner is not None and stat.S_ISREG(inner.st_mode):
                yield str(entry), inner
    elif found is not None:
        yield str(path), found


def _stdio_file(stream) -> os.stat_result | None:
    """The stat of a standard stream when it is a regular file (a shell redirection), else None."""
    try:
        found = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def _stat(path: Path) -> os.stat_result | None:
    """The stat of what `path` names, links followed; None when nothing is there."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _failure(path, e) from None


def _descriptor(path: Path) -> int | None:
    """N when `path` names this process's open file descriptor N (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N), which is written through as it is (its offset and append mode kept)."""
    current = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on links followed
        match = FD_FOLDER.fullmatch(os.path.realpath(current.parent))
        if match and current.name.isdigit():
            return int(current.name) if match[1] in ("self", "thread-self", str(os.getpid())) else None
        if not current.is_symlink():
            return None
        current = Path(os.path.abspath(current.parent / os.readlink(current)))
    return None


def _failure(path: str | os.PathLike, error: OSError) -> DVAEError:
    """An OSError while writing `path` as one line."""
    return DVAEError(f"{path}: cannot write it ({error.strerror or error})")


class _Output:
    """A binary file whose write errors are one-line DVAEErrors naming the output; a closed pipe
    stays a BrokenPipeError. Everything else is the file's own."""

    def __init__(self, file: BinaryIO, name: str):
        self._file, self._name = file, name

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _failure(self._name, e) from None

    def flush(self) -> None:
        try:
            self._file.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _failure(self._name, e) from None

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def is_stream(target: str | os.PathLike) -> bool:
    """Whether an output is streamed into (stdout, a device, a FIFO, an open descriptor), not a file."""
    return str(target) == "-" or _kind(Path(target))[0] == "stream"


def _kind(path: Path) -> tuple[str, os.stat_result | None, int | None]:
    """What an output path names: "folder", "stream" (a device, FIFO, terminal or open descriptor)
    or "file" (a regular or a new one); with its stat (None when new) and descriptor number."""
    found = _stat(path)
    if found is None:
        return "file", None, None
    if stat.S_ISDIR(found.st_mode):
        return "folder", found, None
    descriptor = _descriptor(path)
    if descriptor is not None or not stat.S_ISREG(found.st_mode):
        return "stream", found, descriptor
    return "file", found, None


@contextlib.contextmanager
def open_output(target: str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    """A binary output under the policy above: "-" is stdout, a path is replaced atomically or
    streamed into, a file object is used as it is."""
    if not isinstance(target, (str, os.PathLike)):
        yield target
        return
    if str(target) == "-":
        out = _Output(sys.stdout.buffer, "stdout")
        yield out
        out.flush()
        return
    path = Path(target)
    kind, found, descriptor = _kind(path)
    if kind == "folder":
        raise DVAEError(f"{path}: is a folder; give a file name")
    with _streamed(path, descriptor) if kind == "stream" else _replaced(path, found) as f:
        yield f


@contextlib.contextmanager
def _streamed(path: Path, descriptor: int | None) -> Iterator[BinaryIO]:
    """Write into a device, FIFO, terminal or open descriptor as it is: nothing to rename."""
    try:
        fd = os.dup(descriptor) if descriptor is not None else os.open(path, os.O_WRONLY | os.O_NOCTTY)
    except OSError as e:
        raise _failure(path, e) from None
    with _closing(os.fdopen(fd, "wb")) as f:
        out = _Output(f, str(path))
        yield out
        out.flush()


@contextlib.contextmanager
def _replaced(path: Path, old: os.stat_result | None) -> Iterator[BinaryIO]:
    """Write a temporary file beside the file `path` leads to and rename it onto that file once
    complete, with the old file's permissions; on any exception it is removed."""
    real = Path(os.path.realpath(path))  # a link stays; the file it points to is replaced
    with contextlib.ExitStack() as cleanup:
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(real.parent)
            with deferred_interrupt():  # the temporary file never exists without its removal registered
                fd, tmp = tempfile.mkstemp(prefix=f".{real.name[:200]}.", suffix=".tmp", dir=real.parent)
                cleanup.callback(_remove, tmp)
                _lock(fd)  # held while it is written: a lock nobody holds marks a leftover of a killed write
            file = os.fdopen(fd, "wb")
            _copy_permissions(fd, old)
        except OSError as e:
            raise _failure(path, e) from None
        with _closing(file):
            out = _Output(file, str(path))
            yield out
            out.flush()
            try:
                os.fsync(fd)
            except OSError as e:
                raise _failure(path, e) from None
        try:
            os.replace(tmp, real)
        except OSError as e:
            raise _failure(path, e) from None


@contextlib.contextmanager
def _closing(file: BinaryIO) -> Iterator[BinaryIO]:
    """Close `file` however the block ends: after a failed write its buffer cannot be written
    either, and that second error must not hide the first (the block flushes on success)."""
    try:
        yield file
    finally:
        with contextlib.suppress(OSError):
            file.close()


def _copy_permissions(fd: int, old: os.stat_result | None) -> None:
    """The old file's mode and owner (the owner only where allowed, i.e. as root), else what a
    plain open() would give a new file."""
    if old is None:
        os.fchmod(fd, 0o666 & ~_umask())
        return
    if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, old.st_uid, old.st_gid)
    os.fchmod(fd, stat.S_IMODE(old.st_mode))


def _lock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a file system without locks: leftovers then stay
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_leftovers(folder: Path) -> None:
    """Remove the temporary files (`.NAME.XXXXXXXX.tmp`) that writes killed with SIGKILL (or a crash)
    left in `folder`: those at least LEFTOVER_AGE seconds old whose writer's lock is gone (the kernel
    drops a lock with its process). A live writer's file, or any other file, is left alone."""
    if fcntl is None:
        return
    try:
        entries = [e for e in os.scandir(folder) if LEFTOVER.fullmatch(e.name)]
    except OSError:
        return
    now = time.time()
    for entry in entries:
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False) or now - entry.stat().st_mtime < LEFTOVER_AGE:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer holds it
                os.unlink(entry.path)
            finally:
                os.close(fd)


def _remove(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # renamed onto the target already
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` under the output policy (atomically for a regular file)."""
    with open_output(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` under the output policy."""
    atomic_write_bytes(path, text.encode("utf-8"))
