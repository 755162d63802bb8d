"""A real Orthanc (Debian package ``orthanc``) started on loopback ports for a test or a
benchmark, with a temporary configuration that declares the prokd node as a modality; and
the few REST calls the tests make (urllib, no client library)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ORTHANC_AET = "ORTHANC"
START_SECONDS = 30


def orthanc_binary() -> str | None:
    """The Orthanc server program, or ``None`` where it is not installed."""
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).is_file()), None
    )


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process with its own storage under ``folder``."""

    def __init__(self, folder: Path, node_port: int, node_aet: str = "PROKD") -> None:
        self.folder = Path(folder)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.node_aet = node_aet
        self.config = {
            "Name": "prokd-test",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpsVerifyPeers": False,
            "Plugins": [],
            "DicomModalities": {"prokd": [node_aet, "127.0.0.1", node_port]},
            "DicomScuTimeout": 30,
            "StableAge": 1,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        """Start the server and wait until its REST API answers.

        Raises:
            RuntimeError: it exited or did not answer in time (its log attached).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open while it runs
        self.process = subprocess.Popen(
            [orthanc_binary(), str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {(self.folder / 'orthanc.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        request = urllib.request.Request(url, data=body, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def post(self, path: str, payload) -> object:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return json.loads(self._request("POST", path, body) or b"null")

    def upload(self, files: list[Path]) -> str:
        """Store DICOM files; returns the Orthanc id of their (one) study."""
        studies = {self.post("/instances", f.read_bytes())["ParentStudy"] for f in files}
        (study,) = studies
        return study

    def send_to_node(self, study: str) -> None:
        """Have Orthanc C-STORE a study to the prokd node (synchronously)."""
        self.post("/modalities/prokd/store", {"Resources": [study], "Synchronous": True})

    def series_of_modality(self, study: str, modality: str) -> list[dict]:
        """The study's series of one modality (``SEG``, ``RTSTRUCT``, ``OT``...)."""
        return [
            s
            for s in self.get(f"/studies/{study}/series")
            if s["MainDicomTags"].get("Modality") == modality
        ]

    def instances_of_modality(self, study: str, modality: str) -> list[str]:
        """Orthanc ids of the study's instances of one modality."""
        return [i for s in self.series_of_modality(study, modality) for i in s["Instances"]]

    def study_id_of(self, study_uid: str) -> str | None:
        found = self.post("/tools/lookup", study_uid.encode())
        return next((item["ID"] for item in found if item["Type"] == "Study"), None)
