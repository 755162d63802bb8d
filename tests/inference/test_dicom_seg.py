"""DICOM in, DICOM SEG out: the SEG read back with highdicom equals the NIfTI mask voxel for
voxel, references its series, and passes dciodvfy where it is installed."""

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from prokd import __version__
from prokd.cli import main
from prokd.data.dicom import read_series, series_at
from tests.conftest import assert_same_grid

STUDY = "dicom/ProstateX/ProstateX-0000"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """The study predicted once as NIfTI and once as DICOM SEG."""
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    out = tmp_path_factory.mktemp("seg")
    study = SHARED_DATA / STUDY
    assert main(["predict", "prostate-t2", str(study), str(out / "mask.nii.gz")]) == 0
    assert main(["predict", "prostate-t2", str(study), str(out / "seg.dcm")]) == 0
    return out


def test_the_seg_equals_the_nifti_mask_on_the_source_slices(shared_data, predicted):
    series = series_at(shared_data / STUDY)
    seg = hd.seg.segread(predicted / "seg.dcm")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
        segment_numbers=[1],
    )[..., 0]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted / "mask.nii.gz")))
    assert mask.sum() > 1000  # a real gland, not an empty mask compared with an empty one
    np.testing.assert_array_equal(frames, mask)


def test_the_seg_references_its_series_and_names_prokd(shared_data, predicted):
    series = series_at(shared_data / STUDY)
    seg = hd.seg.segread(predicted / "seg.dcm")
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files
    }
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Prostate"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "41216001"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("prokd", __version__)
    assert "prostate-t2" in algorithm.AlgorithmParameters
    assert seg.SegmentationType == "BINARY"


def test_the_nifti_mask_has_the_series_grid(shared_data, predicted):
    mask = sitk.ReadImage(str(predicted / "mask.nii.gz"))
    assert_same_grid(mask, read_series(series_at(shared_data / STUDY)))


def _dciodvfy() -> str | None:
    beside = Path(sys.executable).with_name("dciodvfy")
    return str(beside) if beside.is_file() else shutil.which("dciodvfy")


@pytest.mark.skipif(_dciodvfy() is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_error_in_the_seg(predicted):
    run = subprocess.run([_dciodvfy(), str(predicted / "seg.dcm")], capture_output=True, text=True)
    report = (run.stdout + run.stderr).splitlines()
    assert any("Segmentation" in line for line in report), report  # it checked the SEG IOD
    errors = [line for line in report if line.startswith("Error")]
    assert not errors, errors


def test_a_seg_needs_a_dicom_input(shared_data, tmp_path, capsys):
    source = shared_data / "real/prostate158/002/t2.nii.gz"
    assert main(["predict", "prostate-t2", str(source), str(tmp_path / "seg.dcm")]) == 2
    assert "a DICOM SEG output needs a DICOM series as input" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_output_folder_gets_one_seg_per_study(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", "prostate-t2", str(shared_data / "dicom/ProstateX"), str(out)]
    assert main([*argv, "--output-format", "dicom-seg"]) == 0
    printed = capsys.readouterr().out
    assert "series 4 't2_tse_tra'" in printed and "chosen of 4 series" in printed
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    stem = "ProstateX-0000/07-07-2011/4.000000-t2tsetra-00702"
    assert written == [f"{stem}.dcm", f"{stem}.qc.json"]
