"""The work folder as the node's queue: atomic instances, digests of their bytes, states and
the status file."""

import json

from prokd.io_atomic import TEMP_PREFIX
from prokd.serve.store import StudyState, WorkFolder, is_uid

STUDY = "1.2.3.4"


def test_only_uids_name_folders():
    assert is_uid("1.2.840.10008.5.1.4.1.1.4")
    assert not any(is_uid(text) for text in ("../etc", "1..2", "", "1.2.a", "1" * 65))


def test_instances_digest_and_temporaries(tmp_path):
    work = WorkFolder(tmp_path)
    work.store_instance(STUDY, "1.1", b"first")
    work.store_instance(STUDY, "1.2", b"second")
    (work.study_dir(STUDY) / "instances" / f"{TEMP_PREFIX}x.dcm").write_bytes(b"half")
    files = work.instances(STUDY)
    assert [p.name for p in files] == ["1.1.dcm", "1.2.dcm"]  # a temporary is not an instance
    digest = work.digest(files)
    work.store_instance(STUDY, "1.2", b"second")  # sent again, the same bytes
    assert work.digest(work.instances(STUDY)) == digest
    work.store_instance(STUDY, "1.2", b"changed")
    assert work.digest(work.instances(STUDY)) != digest
    assert work.sweep() == 1 and work.study_uids() == [STUDY]
    assert work.last_received(STUDY) > 0 and work.last_received("9.9") == 0.0


def test_states_round_trip_and_the_status_counts_them(tmp_path):
    work = WorkFolder(tmp_path)
    assert work.load_state(STUDY) == StudyState(STUDY)
    done = StudyState(STUDY, state="done", digest="ab", delivered={"P@h:1": "ab"})
    work.save_state(done)
    assert work.load_state(STUDY) == done
    failed = StudyState("5.6", state="failed", reason="no T2 series")
    status = json.loads(work.write_status([done, failed]).read_text())
    assert status["counts"] == {
        "queued": 0,
        "processing": 0,
        "delivering": 0,
        "done": 1,
        "failed": 1,
    }
    assert status["studies"]["5.6"]["reason"] == "no T2 series"
