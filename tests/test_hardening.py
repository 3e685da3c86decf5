"""Nothing read can hurt (issue 21): endless streams, long lines, closed stdout, huge seeds, control
characters in names, leftover temporary files and locks that cannot wedge dvae."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dvae_cli import fileio, runlock
from dvae_cli.codes import files, read_codes, write_codes
from dvae_cli.errors import DVAEError
from dvae_cli.terminal import escape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}


def dvae(*args, stdin=None, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvae_cli", *args], stdin=stdin, capture_output=True, text=True,
                          timeout=timeout, env=ENV, **kwargs)


class Endless(io.RawIOBase):
    """A stream that never ends (`yes 0123456789 |`), counting what was read."""

    def __init__(self, line: bytes):
        self.line, self.read_bytes = line, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = (self.line * (len(buffer) // len(self.line) + 1))[:len(buffer)]
        buffer[:len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


def test_endless_stream_of_codes_stops_at_the_ceiling(monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 4 << 20)
    stream = Endless(b"0123456789\n")
    with pytest.raises(DVAEError, match="ceiling"):
        read_codes(io.BufferedReader(stream))
    assert stream.read_bytes <= (4 << 20) + 2 * files.READ_BLOCK


def test_endless_stream_that_is_not_codes_stops_at_once():
    stream = Endless(b"\0")
    with pytest.raises(DVAEError, match="not a codes file"):
        read_codes(io.BufferedReader(stream))
    assert stream.read_bytes <= 2 * files.READ_BLOCK


def test_endless_stdin_ends_in_one_line_and_exit_1(tmp_path):
    """`yes | dvae decode -`: the stream is read in blocks up to the ceiling (lowered here), then one line."""
    script = ("import sys; import dvae_cli.codes.files as f; f.MAX_FILE_BYTES = 1 << 22; "
              "sys.argv = ['dvae', 'decode', '-', '-o', sys.argv[1]]; from dvae_cli.cli import run; run()")
    writer = subprocess.Popen([sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('0' * 30 + '\\n')"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.npy")], stdin=writer.stdout,
                              capture_output=True, text=True, timeout=60, env=ENV)
    finally:
        writer.kill()
        writer.wait()
    assert done.returncode == 1 and "ceiling" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "codes.txt"
    path.write_bytes(b"0123456789\n" * 200)
    with pytest.raises(DVAEError, match="over dvae's ceiling"):
        read_codes(path)


def test_a_line_of_200000_digits_is_refused_quickly(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("1" * 200_000 + "\n")
    start = time.monotonic()
    with pytest.raises(DVAEError, match="at most D="):
        read_codes(path)
    path.write_text(" ".join(["1"] * 200_000) + "\n")
    with pytest.raises(DVAEError, match="at most D="):
        read_codes(path)
    path.write_text("1" * 5000 + " 2\n")  # a number of 5000 digits (Python's int() refuses over 4300)
    with pytest.raises(DVAEError, match="far too large"):
        read_codes(path)
    assert time.monotonic() - start < 5


def test_bad_text_lines_are_shown_without_bytes_reprs(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"0123\n01\x1b]\n")
    with pytest.raises(DVAEError) as caught:
        read_codes(path, latent_vars=4)
    assert "b'" not in str(caught.value) and "\x1b" not in str(caught.value) and "\\x1b" in str(caught.value)
    path.write_bytes(b"1 2\n1 \xff\n")
    with pytest.raises(DVAEError) as caught:
        read_codes(path)
    assert "b'" not in str(caught.value) and "\\xff" in str(caught.value)


def test_npy_header_larger_than_the_file_is_refused_before_allocating():
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (2**40, 30)})
    with pytest.raises(DVAEError, match="header says"):
        read_codes(io.BytesIO(buffer.getvalue() + bytes(30)))


def test_code_file_fingerprint_must_be_hex():
    buffer = io.BytesIO()
    write_codes(buffer, np.zeros((2, 3), np.uint8), 10, fingerprint="0123456789abcdef")
    data = buffer.getvalue().replace(b"0123456789abcdef", b"\x1b[2J\x1b[31m012345")
    import struct
    import zlib

    from dvae_cli.codes.formats.records import HEADERS
    size = HEADERS[2].size
    data = data[:size] + struct.pack("<I", zlib.crc32(data[:size])) + data[size + 4:]
    with pytest.raises(DVAEError, match="not 16 lowercase hex digits"):
        read_codes(io.BytesIO(data))


def test_escape():
    assert escape("a\x1b[31mb\nc\td\x7f\x9b\u202e") == "a\\x1b[31mb\\nc\\td\\x7f\\x9b\\u202e"
    assert escape(os.fsdecode(b"x\xffy")) == "x\\xffy"
    assert escape("héllo — ok") == "héllo — ok"
    assert escape(escape("\x1b")) == escape("\x1b")


def test_control_characters_in_names_reach_the_terminal_escaped(tmp_path):
    name = tmp_path / "q\x1b[31m.txt"
    name.write_text("0" * 30 + "\n")
    done = dvae("decode", str(name), "-o", str(tmp_path / "x\x1b[2J.npy"), "--ckpt", "pretrained:best")
    assert done.returncode == 0 and "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr
    done = dvae("search", str(name), str(tmp_path / "missing\x1b[2J"))
    assert done.returncode == 1 and "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr


def test_closed_stdout_is_one_line_and_exit_1(tmp_path):
    codes = tmp_path / "q.txt"
    codes.write_text("0" * 30 + "\n")
    for extra in ((), ("--json",)):
        done = subprocess.run([sys.executable, "-c", "import os, sys; os.close(1); "
                               "os.execv(sys.executable, [sys.executable, '-m', 'dvae_cli', *sys.argv[1:]])",
                               "search", str(codes), str(codes), *extra], capture_output=True, text=True, env=ENV,
                              timeout=60)
        assert done.returncode == 1 and "stdout is closed" in done.stderr and "Traceback" not in done.stderr


def test_empty_database_is_one_line(tmp_path):
    empty, query, packed = tmp_path / "empty.txt", tmp_path / "q.txt", tmp_path / "empty.bin"
    empty.write_text("")
    query.write_text("0" * 30 + "\n")
    write_codes(packed, np.zeros((0, 30), np.uint8), 10)
    for args in (("index", str(empty), "-o", str(tmp_path / "i.dvaeidx")), ("search", str(empty), str(query))):
        done = dvae(*args)
        assert done.returncode == 1 and "no codes" in done.stderr and "Traceback" not in done.stderr
    done = dvae("search", str(packed), str(query), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["results"] == [{"query": 0, "rows": [], "scores": []}]


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(10**23)])
def test_sample_seed_is_range_checked(tmp_path, seed):
    images = tmp_path / "img.npy"
    np.save(images, np.zeros((2, 28, 28), np.uint8))
    done = dvae("encode", str(images), "-o", str(tmp_path / "c.bin"), "--sample", "--seed", seed,
                "--ckpt", "pretrained:best")
    assert done.returncode != 0 and "--seed" in done.stderr and "Traceback" not in done.stderr


def test_leftover_temporary_file_is_removed_by_the_next_write(tmp_path):
    leftover = tmp_path / ".old.npy.abcd1234.tmp"
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - 3600,) * 2)
    fresh = tmp_path / ".new.npy.efgh5678.tmp"  # a write going on now (young): kept
    fresh.write_bytes(b"x")
    held = tmp_path / ".held.npy.ijkl9012.tmp"  # old but its writer still holds it: kept
    held.write_bytes(b"x")
    os.utime(held, (time.time() - 3600,) * 2)
    other = tmp_path / ".notes.tmp"  # not a name dvae makes: kept
    other.write_bytes(b"x")
    import fcntl

    with open(held, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        fileio.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert not leftover.exists() and fresh.exists() and held.exists() and other.exists()
    assert (tmp_path / "out.bin").read_bytes() == b"data"


def test_empty_lock_nobody_holds_is_taken_over(tmp_path, monkeypatch):
    lock = tmp_path / runlock.LOCK
    lock.write_text("")
    os.utime(lock, (time.time() - 60,) * 2)
    messages = []
    with runlock.run_lock(tmp_path, messages.append):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and "empty or unreadable" in messages[0] and not lock.exists()


def test_empty_lock_held_by_a_process_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "GRACE", 0.2)
    lock = tmp_path / runlock.LOCK
    lock.write_bytes(b"\x00garbage")
    import fcntl

    with open(lock, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(DVAEError, match=f"empty or unreadable.*delete {lock}"):
            with runlock.run_lock(tmp_path):
                pass
    assert lock.exists()


def test_lock_that_cannot_be_written_is_removed(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runlock.os, "write", full)
    with pytest.raises(DVAEError, match="No space left"):
        with runlock.run_lock(tmp_path):
            pass
    monkeypatch.undo()
    assert not (tmp_path / runlock.LOCK).exists()
    with runlock.run_lock(tmp_path):
        pass


def test_an_index_files_faiss_sections_are_rebuilt_from_its_codes_not_deserialized(tmp_path, monkeypatch):
    """A section whose bytes would make FAISS allocate without bound (its inner sizes are trusted by
    FAISS) never reaches FAISS: the index is rebuilt from the checked codes, and searches the same."""
    from dvae_cli import search_file
    from dvae_cli.search import SearchIndex

    codes = np.random.default_rng(0).integers(0, 10, (50, 30)).astype(np.uint8)
    index = SearchIndex.build(codes, 10, "0123456789abcdef")
    monkeypatch.setattr(search_file, "_serialize", lambda kind, faiss_index: b"\xff" * 64)  # a crafted payload
    search_file.write_index(tmp_path / "db.idx", index)
    monkeypatch.undo()
    back = search_file.read_index(tmp_path / "db.idx")
    assert set(back.indexes) == set(index.indexes) == {"fastscan"}
    found = back.search_codes(codes[:5], 3)
    assert (found.rows[:, 0] == np.arange(5)).all() and (found.scores[:, 0] == 0).all()
