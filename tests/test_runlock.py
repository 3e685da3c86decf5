"""One writer per run folder: the lock refuses a live owner, takes over a dead one, and is released."""

import json
import os
import socket
import subprocess
import sys

import pytest

from dvae_cli.errors import DVAEError
from dvae_cli.runlock import LOCK, run_lock


def test_lock_is_held_then_released(tmp_path):
    with run_lock(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / LOCK).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(DVAEError, match=f"in use by process {os.getpid()}"):
            with run_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / LOCK).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "then"}))
    messages = []
    with run_lock(tmp_path, messages.append):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and f"process {pid}" in messages[0]


def test_lock_of_another_host_is_refused_with_a_hint(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(DVAEError, match="elsewhere.*delete"):
        with run_lock(tmp_path):
            pass
    assert (tmp_path / LOCK).exists()  # not ours: left alone


def test_lock_on_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DVAEError, match="not a folder"):
        with run_lock(tmp_path / "file"):
            pass
