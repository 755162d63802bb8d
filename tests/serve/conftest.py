"""The DICOM node as its users run it (``prokd serve`` in its own process), a real Orthanc
beside it, and phantom studies to send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prokd.data.dicom_write import StudyIdentity, write_series
from tests.serve.orthanc import Orthanc, free_port, orthanc_binary

PROKD = str(Path(sys.executable).with_name("prokd"))
NODE_AET = "PROKD"


class NodeProcess:
    """``prokd serve`` on a loopback port, its log in a file."""

    def __init__(self, folder: Path, port: int, destinations: list[str], *options: str) -> None:
        self.folder, self.port = folder, port
        self.argv = [PROKD, "serve", "--port", str(port), "--bind", "127.0.0.1"]
        self.argv += ["--ae-title", NODE_AET, "--work-dir", str(folder / "work")]
        self.argv += ["--quiet-seconds", "1", *options]
        for destination in destinations:
            self.argv += ["--destination", destination]
        self.log_path = folder / "node.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        self.process = subprocess.Popen(self.argv, stderr=log, stdout=log)
        self.wait_for("listening as", after=offset)
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 60, after: int = 0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the log (past byte ``after``).

        Raises:
            AssertionError: with the log, when the node exits or time runs out first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()[after:]
            if log.count(text) >= count:
                return log
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} x{count} in the node's log:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def needs_orthanc() -> None:
    """Skip (fail in CI, where ``make test`` installs it) when Orthanc is not installed."""
    if orthanc_binary() is None:
        message = (
            "Orthanc is not installed (make test installs it as root: apt-get install orthanc)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def node_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, node_port):
    """A running Orthanc that knows the node as modality ``prokd``."""
    needs_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), node_port, NODE_AET).start()
    yield server
    server.stop()


@pytest.fixture
def node_factory(tmp_path, node_port):
    """Start ``prokd serve`` processes (sending to the given destinations); all are stopped
    after the test."""
    started: list[NodeProcess] = []

    def start(destinations: list[str], *options: str, folder: Path | None = None) -> NodeProcess:
        node = NodeProcess(folder or tmp_path / "node", node_port, destinations, *options)
        started.append(node.start())
        return node

    yield start
    for node in started:
        node.stop()


def write_studies(image, folder: Path, names: list[str], **series) -> list[list[Path]]:
    """One study per name (its patient id) holding ``image`` as an axial T2 series."""
    return [
        write_series(image, folder / name, StudyIdentity.named(name), **series) for name in names
    ]
