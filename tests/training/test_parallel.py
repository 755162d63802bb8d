"""The scheduler's workers end with the process that started them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prokd.training.parallel import run_dependent

REPO = Path(__file__).resolve().parents[2]


def wait_forever(pid_file: str) -> float:
    """A task that records its worker's pid, then runs far longer than any test."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)
    return 0.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody has reaped yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = (
        "from prokd.training.parallel import run_dependent\n"
        "from tests.training.test_parallel import wait_forever\n"
        f"run_dependent({{'a': ()}}, set(), 1, wait_forever, lambda n: ({str(pid_file)!r},))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)  # no clean-up of its pool: as a killed command
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its parent"
    finally:
        parent.kill()


def test_tasks_that_need_each_other_in_a_circle_are_refused():
    with pytest.raises(ValueError, match="in a circle"):
        run_dependent({"a": ("b",), "b": ("a",)}, set(), 2, wait_forever, lambda n: ("x",))
