"""``prokd serve`` against a real Orthanc: a study sent by the PACS comes back as a SEG and an
RT Structure Set in the same study, the SEG equal to ``prokd predict``'s mask; a burst
survives a SIGKILL with exactly one SEG per study; unusable studies and non-image objects
are logged and skipped; AE titles not allowed are rejected; a destination that is down at
first gets its results once it is up; a study sent again unchanged is not processed again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from prokd.cli import main
from prokd.data.dicom import series_at
from prokd.serve.config import Destination
from prokd.serve.send import send_files
from tests.conftest import SHARED_DATA, dicom_study
from tests.serve.conftest import NODE_AET, needs_orthanc, write_studies
from tests.serve.orthanc import ORTHANC_AET, Orthanc

WAIT_SECONDS = 60


def _orthanc_destination(orthanc: Orthanc) -> str:
    return f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}"


def _wait_for_instances(orthanc: Orthanc, study: str, modality: str, count: int = 1) -> list:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = orthanc.instances_of_modality(study, modality)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} {modality} not in Orthanc's study {study} in time")


def _status(node) -> dict:
    return json.loads((node.folder / "work" / "status.json").read_text())


def _uid(files: list[Path]) -> str:
    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


@pytest.fixture(scope="module", params=["phantom", "prostatex"])
def study_files(request) -> tuple[Path, list[Path]]:
    """The folder and files of the study sent end to end: a phantom study, or the real
    ProstateX one (four series: the node chooses the axial T2 as predict does)."""
    folder = dicom_study(request, request.param)
    return folder, sorted(folder.rglob("*.dcm"))


def test_a_study_from_orthanc_comes_back_as_seg_and_rtstruct(
    study_files, orthanc, node_factory, tmp_path
):
    folder, study_files = study_files
    node = node_factory([_orthanc_destination(orthanc)], "--outputs", "seg,rtstruct")
    study = orthanc.upload(study_files)
    orthanc.send_to_node(study)
    (seg_id,) = _wait_for_instances(orthanc, study, "SEG")
    _wait_for_instances(orthanc, study, "RTSTRUCT")
    node.wait_for("sent 2 object(s)")
    # the SEG fetched from Orthanc is prokd predict's mask, voxel for voxel
    assert main(["predict", "prostate-t2", str(folder), str(tmp_path / "mask.nii.gz")]) == 0
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nii.gz")))
    (tmp_path / "seg.dcm").write_bytes(orthanc.get_bytes(f"/instances/{seg_id}/file"))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    series = series_at(folder)
    sop_uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = seg.get_pixels_by_source_instance(sop_uids, segment_numbers=[1])[..., 0]
    assert mask.sum() > 1000
    np.testing.assert_array_equal(frames, mask)
    log = node.log()
    uid = _uid(study_files)
    for event in ("received", "processed study", "sent 2 object(s) of study"):
        assert any(event in line and uid in line for line in log.splitlines()), log
    assert _status(node)["studies"][uid]["state"] == "done"
    # sent again unchanged: not processed again, nothing new in Orthanc
    orthanc.send_to_node(study)
    node.wait_for("unchanged since it was delivered")
    assert len(orthanc.instances_of_modality(study, "SEG")) == 1


def test_a_burst_with_a_sigkill_gets_exactly_one_seg_per_study(
    phantom_study, orthanc, node_factory, tmp_path
):
    names = [f"BURST-{i}" for i in range(5)]
    studies = [orthanc.upload(f) for f in write_studies(phantom_study.image, tmp_path, names)]
    node = node_factory([_orthanc_destination(orthanc)])
    for study in studies:
        orthanc.send_to_node(study)
    node.wait_for("sent 1 object(s)")  # one study delivered, the others queued or in hand
    node.kill()
    restarted = node_factory([_orthanc_destination(orthanc)], folder=node.folder)
    assert "queued from before" in restarted.log()
    for study in studies:
        _wait_for_instances(orthanc, study, "SEG")
    restarted.wait_for("sent 1 object(s)", count=len(studies))
    time.sleep(1.5)  # anything sent twice would show by now
    assert [len(orthanc.instances_of_modality(s, "SEG")) for s in studies] == [1] * len(studies)
    assert _status(restarted)["counts"]["done"] == len(studies)


def test_unusable_studies_and_non_image_objects_are_logged_and_skipped(
    phantom_study, orthanc, node_factory, tmp_path
):
    node = node_factory([_orthanc_destination(orthanc)])
    (gap,) = write_studies(phantom_study.image, tmp_path / "gap", ["GAP"], omit=[7])
    orthanc.send_to_node(orthanc.upload(gap))
    node.wait_for(f"study {_uid(gap)}: failed: series 1 't2_tse_tra': uneven slice spacing")
    assert _status(node)["studies"][_uid(gap)]["state"] == "failed"
    if SHARED_DATA.is_dir():  # the real broken series, sent on its own by a scanner
        files = sorted((SHARED_DATA / "dicom/ProstateX-missing-slice").rglob("*.dcm"))
        send_files(files, Destination(NODE_AET, "127.0.0.1", node.port), "SCANNER")
        node.wait_for(f"study {_uid(files)}: failed")
        assert "a missing slice?" in node.log().splitlines()[-1]
    # a non-image object (a SEG) is acknowledged, skipped and logged once
    assert main(["predict", "prostate-t2", str(phantom_study.folder), str(tmp_path / "s.dcm")]) == 0
    seg = pydicom.dcmread(tmp_path / "s.dcm")
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(seg.SOPClassUID, seg.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET)
    assert assoc.is_established
    assert assoc.send_c_store(seg).Status == 0x0000
    assoc.release()
    node.wait_for("skipped 1 object(s) from ORTHANC (Segmentation Storage: not an MR image)")
    assert not (node.folder / "work" / "studies" / seg.StudyInstanceUID / "instances").exists()
    # and the node still serves
    (good,) = write_studies(phantom_study.image, tmp_path / "good", ["AFTER-BROKEN"])
    study = orthanc.upload(good)
    orthanc.send_to_node(study)
    _wait_for_instances(orthanc, study, "SEG")


def test_a_calling_ae_title_not_allowed_is_rejected(orthanc, node_factory):
    node = node_factory([_orthanc_destination(orthanc)], "--allow", ORTHANC_AET)
    for calling, allowed in (("STRANGER", False), (ORTHANC_AET, True)):
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET)
        assert assoc.is_established == allowed and assoc.is_rejected == (not allowed)
        if allowed:
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()


def test_a_destination_down_at_first_gets_its_results_once_up(
    phantom_study, node_factory, node_port, tmp_path
):
    needs_orthanc()
    late = Orthanc(tmp_path / "late-orthanc", node_port, NODE_AET)  # ports chosen, not started
    node = node_factory(
        [_orthanc_destination(late)], "--retry-seconds", "0.5", "--retry-max-seconds", "1"
    )
    (files,) = write_studies(phantom_study.image, tmp_path / "s", ["LATE"])
    send_files(files, Destination(NODE_AET, "127.0.0.1", node_port), "SCANNER")
    node.wait_for("not delivered")
    assert _status(node)["studies"][_uid(files)]["state"] == "delivering"
    late.start()
    try:
        node.wait_for("sent 1 object(s)")
        study = late.study_id_of(_uid(files))
        assert len(late.instances_of_modality(study, "SEG")) == 1
    finally:
        late.stop()
