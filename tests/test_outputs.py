"""The output policy (fileio.py) and the stop signals (interrupts.py): whatever an output names
survives (devices, FIFOs, links, modes), an input is never its own output, and a full disk, a
closed pipe or a signal leaves the old file, no temporary file and one line, never a traceback."""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import fake_digits
from dvae_cli import fileio
from dvae_cli.cli import app
from dvae_cli.codes import write_codes
from dvae_cli.errors import DVAEError
from dvae_cli.fileio import atomic_write_bytes, check_output, open_output
from dvae_cli.interrupts import Interrupted, deferred_interrupt
from dvae_cli.pretrained import pretrained_path

DVAE = str(Path(sys.executable).with_name("dvae"))
CKPT = "pretrained:best"
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(pattern, result.stderr), result.stderr


def temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*.tmp")]


@pytest.fixture
def no_rename(monkeypatch, tmp_path):
    """os.replace fails loudly but for regular files in tmp_path: a test that writes into a
    device or a FIFO can never replace it, whatever the code under test does."""
    replace = os.replace

    def checked(source, target):
        if stat.S_ISFIFO(os.lstat(target).st_mode) if os.path.lexists(target) else False:
            raise AssertionError(f"renamed over the FIFO {target}")
        if not Path(target).is_relative_to(tmp_path):
            raise AssertionError(f"renamed over {target}")
        replace(source, target)

    monkeypatch.setattr(os, "replace", checked)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@pytest.fixture
def stop_on():
    """Handle signals in this process as the command line does (raise Interrupted)."""
    installed = {}

    def install(*signums):
        for signum in signums:
            installed.setdefault(signum, signal.signal(signum, _raise_interrupted))

    yield install
    for signum, previous in installed.items():
        signal.signal(signum, previous)


# ---- the policy, one target kind at a time ------------------------------------------------------


@pytest.mark.parametrize("mode", [0o444, 0o600, 0o755], ids=oct)
def test_a_replaced_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    path.chmod(mode)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == mode
    assert temporary_files(tmp_path) == []


def test_a_new_file_gets_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new" / "folder" / "out.bin", b"new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new" / "folder" / "out.bin").stat().st_mode) == 0o640


def test_a_link_is_followed_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "codes.bin").write_bytes(b"old")
    (tmp_path / "real" / "codes.bin").chmod(0o444)
    (tmp_path / "link.bin").symlink_to("real/codes.bin")
    (tmp_path / "chain.bin").symlink_to("link.bin")
    atomic_write_bytes(tmp_path / "chain.bin", b"new")
    assert (tmp_path / "chain.bin").is_symlink() and (tmp_path / "link.bin").is_symlink()
    assert (tmp_path / "real" / "codes.bin").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "real" / "codes.bin").stat().st_mode) == 0o444
    (tmp_path / "dangling.bin").symlink_to("made.bin")  # as a shell's `>` does: the file is made
    atomic_write_bytes(tmp_path / "dangling.bin", b"made")
    assert (tmp_path / "dangling.bin").is_symlink() and (tmp_path / "made.bin").read_bytes() == b"made"
    assert temporary_files(tmp_path) == []


def test_a_fifo_is_streamed_into(tmp_path, no_rename):
    fifo = tmp_path / "codes.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"x" * 200_000)
    reader.join(timeout=30)
    assert received == [b"x" * 200_000] and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert temporary_files(tmp_path) == []


def test_devices_are_streamed_into_and_a_full_one_is_one_line(no_rename):
    atomic_write_bytes("/dev/null", b"x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(DVAEError, match=r"^/dev/full: cannot write it \(No space left on device\)$"):
        atomic_write_bytes("/dev/full", b"x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_descriptor_names_write_through_the_open_descriptor(tmp_path, capfd, no_rename):
    """/dev/stdout and /dev/fd/N are the open descriptor, with its offset and append mode."""
    atomic_write_bytes("/dev/stdout", b"to stdout")
    assert capfd.readouterr().out == "to stdout"
    read_end, write_end = os.pipe()
    atomic_write_bytes(f"/dev/fd/{write_end}", b"into a pipe")
    os.close(write_end)
    assert os.read(read_end, 100) == b"into a pipe"
    os.close(read_end)
    with open(tmp_path / "log.txt", "ab") as log:  # `>> log.txt`
        log.write(b"kept ")
        log.flush()
        atomic_write_bytes(f"/proc/self/fd/{log.fileno()}", b"appended")
    assert (tmp_path / "log.txt").read_bytes() == b"kept appended"


def test_places_that_cannot_hold_the_output_are_one_line(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DVAEError, match="is a folder"):
        check_output(tmp_path, [])
    with pytest.raises(DVAEError, match="is a folder"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(DVAEError, match="file is not a folder"):
        check_output(tmp_path / "file" / "out.bin", [])
    with pytest.raises(DVAEError, match="cannot write it"):
        atomic_write_bytes(tmp_path / "file" / "out.bin", b"x")
    check_output(tmp_path / "missing" / "out.bin", [])  # missing folders are made
    atomic_write_bytes(tmp_path / "missing" / "out.bin", b"x")


@pytest.mark.skipif(ROOT, reason="root writes in read-only folders")
def test_a_read_only_file_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "out.bin").write_bytes(b"old")
    (folder / "out.bin").chmod(0o444)
    folder.chmod(0o555)
    try:
        with pytest.raises(DVAEError, match="cannot write in"):
            check_output(folder / "out.bin", [])
        with pytest.raises(DVAEError, match=r"cannot write it \(Permission denied\)"):
            atomic_write_bytes(folder / "out.bin", b"new")
        assert (folder / "out.bin").read_bytes() == b"old"
    finally:
        folder.chmod(0o755)


class FailingFile:
    """A file whose writes fail as a full disk's do."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize("stage, code", [("write", errno.ENOSPC), ("fsync", errno.ENOSPC),
                                         ("fsync", errno.EIO), ("replace", errno.EACCES),
                                         ("mkstemp", errno.EACCES), ("mkstemp", errno.EROFS)])
def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, stage, code):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    failure = OSError(code, os.strerror(code))

    def fail(*args, **kwargs):
        raise failure

    if stage == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FailingFile(real_fdopen(*args, **kwargs)))
    elif stage == "mkstemp":
        monkeypatch.setattr(fileio.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(os, stage, fail)
    with pytest.raises(DVAEError) as error:
        atomic_write_bytes(path, b"new" * 10_000)
    assert str(error.value) == f"{path}: cannot write it ({os.strerror(code)})"
    assert path.read_bytes() == b"old" and temporary_files(tmp_path) == []


def test_the_same_file_as_an_input_is_refused(tmp_path, monkeypatch):
    data = tmp_path / "imgs.npy"
    data.write_bytes(b"images")
    (tmp_path / "link.npy").symlink_to("imgs.npy")
    os.link(data, tmp_path / "hard.npy")
    for output in (data, tmp_path / "link.npy", tmp_path / "hard.npy", tmp_path / "." / "imgs.npy"):
        with pytest.raises(DVAEError, match="same file as the input"):
            check_output(output, [data])
    with pytest.raises(DVAEError, match="same file as the input"):
        check_output(data, [tmp_path])  # a folder read whole
    check_output(tmp_path / "other.npy", [data, tmp_path / "missing.npy"])
    # stdin and stdout redirected to files: `dvae encode - -o - < imgs.npy >> imgs.npy`
    monkeypatch.setattr(sys, "stdin", open(data, "rb"))
    monkeypatch.setattr(sys, "stdout", open(data, "ab"))
    with pytest.raises(DVAEError, match="stdout is the same file as the input stdin"):
        check_output("-", ["-"])
    with pytest.raises(DVAEError, match="stdout is the same file as the input"):
        check_output("-", [tmp_path / "link.npy"])
    with pytest.raises(DVAEError, match="same file as the input stdin"):
        check_output(tmp_path / "hard.npy", ["-"])
    assert data.read_bytes() == b"images"


# ---- stop signals -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_deferred_interrupt_holds_every_stop_signal(stop_on, signum):
    stop_on(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    finished = []
    with pytest.raises(Interrupted) as stopped:
        with deferred_interrupt():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            finished.append(True)
    assert finished and stopped.value.signum == signum


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_write_keeps_the_old_file(tmp_path, stop_on, signum):
    stop_on(signum)
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(Interrupted):
        with open_output(path) as f:
            f.write(b"half")
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            f.write(b"never")
    assert path.read_bytes() == b"old" and temporary_files(tmp_path) == []


# ---- the commands -------------------------------------------------------------------------------


def test_commands_refuse_an_output_that_is_an_input(tmp_path):
    imgs = tmp_path / "imgs.npy"
    np.save(imgs, fake_digits(5, seed=0))
    before = imgs.read_bytes()
    (tmp_path / "same.npy").symlink_to("imgs.npy")
    write_codes(tmp_path / "codes.npy", np.zeros((3, 30), np.int64), 10, format="indices")
    codes = (tmp_path / "codes.npy").read_bytes()
    Image.fromarray(fake_digits(1, seed=1)[0]).save(tmp_path / "digit.png")
    digit = (tmp_path / "digit.png").read_bytes()
    ckpt = ("--ckpt", CKPT)
    for args in (("encode", imgs, "-o", imgs, *ckpt), ("encode", imgs, "-o", tmp_path / "same.npy", *ckpt),
                 ("encode", tmp_path, "-o", tmp_path / "digit.png", *ckpt),
                 ("encode", imgs, "-o", pretrained_path(CKPT), *ckpt),
                 ("decode", tmp_path / "codes.npy", "-o", tmp_path / "codes.npy", *ckpt),
                 ("cat", tmp_path / "codes.npy", "-o", tmp_path / "codes.npy"),
                 ("recon", "--input", tmp_path / "digit.png", "-o", tmp_path / "digit.png", *ckpt),
                 ("traverse", "--input", tmp_path / "digit.png", "-o", tmp_path / "digit.png", *ckpt),
                 ("heatmap", "--input", tmp_path / "digit.png", "-o", tmp_path / "digit.png", *ckpt)):
        one_line_error(cli(*args), "same file as the input")
    assert imgs.read_bytes() == before and (tmp_path / "codes.npy").read_bytes() == codes
    assert (tmp_path / "digit.png").read_bytes() == digit and temporary_files(tmp_path) == []


def test_commands_on_a_full_disk_say_so_in_one_line(tmp_path, no_rename):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    imgs = tmp_path / "imgs.npy"
    np.save(imgs, fake_digits(300, seed=0))
    one_line_error(cli("encode", imgs, "-o", "/dev/full", "--ckpt", CKPT), "/dev/full: .*No space left on device")
    write_codes(tmp_path / "codes.bin", np.zeros((300, 30), np.int64), 10)
    one_line_error(cli("decode", tmp_path / "codes.bin", "-o", "/dev/full", "--ckpt", CKPT, "--force"),
                   "No space left on device")


def test_commands_stream_into_a_fifo_and_follow_links(tmp_path, no_rename):
    imgs = tmp_path / "imgs.npy"
    np.save(imgs, fake_digits(30, seed=0))
    fifo = tmp_path / "codes.txt"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert cli("encode", imgs, "-o", fifo, "--ckpt", CKPT, "-q").exit_code == 0
    reader.join(timeout=60)
    assert len(received[0].splitlines()) == 30 and stat.S_ISFIFO(fifo.lstat().st_mode)


def _child(*args: str, **kwargs) -> subprocess.Popen:
    """A dvae process that gets stop signals as from a terminal (a background job or nohup
    starts with SIGINT or SIGHUP ignored)."""
    def default_signals():
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)

    return subprocess.Popen([DVAE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_signals, **kwargs)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed a handler for SIGTERM (Linux's /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_signals_end_commands_cleanly(tmp_path):
    """SIGTERM and SIGHUP mid-write (a decode), SIGTERM while torch loads, and a reader that stops
    early (`| head`), side by side: exit 128+signal (1 for the pipe), one line, no traceback,
    the old output intact and no temporary file."""
    write_codes(tmp_path / "codes.bin", np.random.default_rng(0).integers(0, 10, (200_000, 30)), 10)
    runs = {}
    for name in ("SIGTERM", "SIGHUP", "startup"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "out.npy").write_bytes(b"old")
        runs[name] = _child("decode", str(tmp_path / "codes.bin"), "-o", str(tmp_path / name / "out.npy"),
                            "--ckpt", CKPT, "--force")
    pipe = subprocess.Popen(["bash", "-c", f'{DVAE} decode codes.bin -o - --ckpt {CKPT} --force | head -c 10 '
                             '> /dev/null; exit "${PIPESTATUS[0]}"'], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not _catches_sigterm(runs["startup"].pid) and time.time() < deadline:
        time.sleep(0.01)
    runs["startup"].send_signal(signal.SIGTERM)  # while it imports torch and reads its checkpoint
    for name in ("SIGTERM", "SIGHUP"):
        folder = tmp_path / name
        while not any(p.stat().st_size for p in folder.glob(".*.tmp")) and time.time() < deadline:
            time.sleep(0.01)  # until it is writing
        runs[name].send_signal(getattr(signal, name))
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        signum = signal.SIGHUP if name == "SIGHUP" else signal.SIGTERM
        assert proc.returncode == 128 + signum, (name, proc.returncode, err)
        assert err.decode().strip().splitlines() == [f"interrupted ({signal.Signals(signum).name})"], (name, err)
        assert (tmp_path / name / "out.npy").read_bytes() == b"old"
        assert temporary_files(tmp_path / name) == []
    _, err = pipe.communicate(timeout=240)
    assert pipe.returncode == 1 and b"Traceback" not in err and len(err.splitlines()) <= 1, err


def test_a_generator_left_early_leaves_no_inference_mode(tmp_path):
    """encode/decode chunks run in inference mode chunk by chunk: a caller that stops reading
    (a failed write) is not left in it, so the next model load in the process still works."""
    import torch

    from dvae_cli.checkpoint import load_checkpoint
    from dvae_cli.codes.model_side import decode_chunks, encode_block
    from dvae_cli.inputs import in_memory

    model = load_checkpoint(CKPT).model
    encoding = encode_block(model, in_memory(fake_digits(20, seed=0)), 0, 20, batch_size=5)
    first = next(encoding)
    assert not torch.is_inference_mode_enabled()
    decoding = decode_chunks(model, iter([first, first]))
    next(decoding)
    assert not torch.is_inference_mode_enabled()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_stdout_is_one_line(tmp_path):
    """Tables, JSON and help on a full stdout (`> /dev/full`): one line, exit 1, no traceback."""
    with open("/dev/full", "wb") as full:
        for args in (["--help"], ["pretrained", "--json"]):
            result = subprocess.run([DVAE, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
            assert result.returncode == 1, result.stderr
            assert result.stderr.splitlines() == ["error: No space left on device"], result.stderr
