"""The node's work folder, which is its queue: what was received, made and delivered.

```
WORK_DIR/studies/<StudyInstanceUID>/instances/<SOPInstanceUID>.dcm   received, as sent
WORK_DIR/studies/<StudyInstanceUID>/results/<digest>/*.dcm           made for those instances
WORK_DIR/studies/<StudyInstanceUID>/state.json                       what happened to them
WORK_DIR/status.json                                                 every study, for monitors
```

Every file is written atomically (a temporary name, then a rename), so a kill at any
moment leaves each file whole or absent. A study's *digest* is a hash of its instances'
bytes: it names the results made from exactly those instances, so results are made once per
digest and a study sent again unchanged is not processed again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prokd.io_atomic import TEMP_PREFIX, atomic_path, remove_stale_temporaries

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATES = ("queued", "processing", "delivering", "done", "failed")


def is_uid(text: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a folder name."""
    return len(text) <= 64 and bool(UID.match(text))


@dataclass
class StudyState:
    """What the node knows of one study (``state.json``); times are Unix seconds.

    ``state``: ``queued`` (received, waiting to be quiet), ``processing``, ``delivering``
    (results made, some destination still to receive them), ``done`` or ``failed`` (with
    ``reason``; ``failed_digest`` the instances that failed). ``delivered`` maps a
    destination to the digest it received the results of.
    """

    study_uid: str
    state: str = "queued"
    patient_id: str = ""
    instances: int = 0
    received: float = 0.0
    digest: str = ""
    processed: float | None = None
    results: list[str] = field(default_factory=list)
    delivered: dict[str, str] = field(default_factory=dict)
    delivered_at: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    failed_digest: str = ""
    attempts: int = 0


class WorkFolder:
    """The node's folder of studies (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.studies = self.root / "studies"
        self.studies.mkdir(parents=True, exist_ok=True)

    def sweep(self) -> int:
        """Delete the temporaries a killed node left; call before serving."""
        return remove_stale_temporaries(self.root)

    def study_dir(self, study_uid: str) -> Path:
        return self.studies / study_uid

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.study_dir(study_uid) / "instances" / f"{sop_uid}.dcm"

    def store_instance(self, study_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one received instance (a DICOM file's bytes), atomically."""
        path = self.instance_path(study_uid, sop_uid)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def instances(self, study_uid: str) -> list[Path]:
        folder = self.study_dir(study_uid) / "instances"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if not p.name.startswith(TEMP_PREFIX))

    def study_uids(self) -> list[str]:
        """Every study with a folder, in name order."""
        return sorted(p.name for p in self.studies.iterdir() if p.is_dir() and is_uid(p.name))

    def last_received(self, study_uid: str) -> float:
        """When the study's newest instance was written (Unix seconds; 0 if none)."""
        return max((p.stat().st_mtime for p in self.instances(study_uid)), default=0.0)

    def digest(self, files: list[Path]) -> str:
        """A hash of the instances' names and bytes (16 hex digits)."""
        sha = hashlib.sha256()
        for path in sorted(files):
            sha.update(path.name.encode())
            sha.update(hashlib.sha256(path.read_bytes()).digest())
        return sha.hexdigest()[:16]

    def results_dir(self, study_uid: str, digest: str) -> Path:
        return self.study_dir(study_uid) / "results" / digest

    def load_state(self, study_uid: str) -> StudyState:
        path = self.study_dir(study_uid) / "state.json"
        if not path.is_file():
            return StudyState(study_uid)
        return StudyState(**json.loads(path.read_text()))

    def save_state(self, state: StudyState) -> None:
        with atomic_path(self.study_dir(state.study_uid) / "state.json") as tmp:
            tmp.write_text(json.dumps(asdict(state), indent=1))

    def write_status(self, states: list[StudyState]) -> Path:
        """``status.json``: every study's state, counts per state, and when it was written."""
        status = {
            "updated": time.time(),
            "counts": {name: sum(s.state == name for s in states) for name in STATES},
            "studies": {s.study_uid: asdict(s) for s in states},
        }
        path = self.root / "status.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(status, indent=1))
        return path
