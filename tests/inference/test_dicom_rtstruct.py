"""RT Structure Set out: read back by an independent reader (rt-utils parses it and fills
each contour with OpenCV), it gives the predicted mask back (Dice >= 0.95); it references the
series and its images; dciodvfy finds no error."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as Polygon

from prokd.cli import main
from prokd.data.dicom import DicomSeries, series_at
from prokd.evaluation.metrics import dice_score
from prokd.inference.dicom_rtstruct import ROI_NAME, build_rtstruct, slice_contours
from tests.conftest import dicom_study
from tests.inference.test_dicom_seg import dciodvfy, dciodvfy_report


def rasterise(rtstruct: Path, series: DicomSeries) -> np.ndarray:
    """The ROI of an RT Structure Set as a (z, y, x) mask on the series' grid, by rt-utils
    (its own parser and OpenCV's polygon filling; it sorts the slices as prokd does)."""
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils (make test installs it)")
    structure_set = rt_utils.RTStructBuilder.create_from(str(series.folder), str(rtstruct))
    mask = structure_set.get_roi_mask_by_name(ROI_NAME)  # (rows, columns, slices)
    return np.transpose(mask, (2, 0, 1)).astype(np.uint8)


def test_contours_of_a_square_with_a_hole_give_the_square_back():
    square = np.zeros((12, 14), np.uint8)
    square[2:10, 3:12] = 1
    square[5:7, 6:8] = 0  # a hole
    loops = slice_contours(square)
    assert len(loops) == 2
    rows, columns = np.indices(square.shape)
    centres = np.stack([columns.ravel(), rows.ravel()], axis=1)
    inside = np.zeros(square.size, bool)
    for loop in loops:  # even-odd: the hole's loop takes its voxels out again
        inside ^= Polygon(loop).contains_points(centres)
    np.testing.assert_array_equal(inside.reshape(square.shape), square.astype(bool))
    assert slice_contours(np.zeros((5, 5))) == []


@pytest.fixture(scope="module", params=["phantom", "prostatex"])
def predicted(request, tmp_path_factory) -> tuple[Path, Path]:
    """A study predicted once as NIfTI and once as an RT Structure Set."""
    study = dicom_study(request, request.param)
    out = tmp_path_factory.mktemp("rtstruct")
    assert main(["predict", "prostate-t2", str(study), str(out / "mask.nii.gz")]) == 0
    argv = ["predict", "prostate-t2", str(study), str(out / "rt.dcm")]
    assert main([*argv, "--output-format", "rtstruct"]) == 0
    return study, out


def test_the_rtstruct_read_back_is_the_mask(predicted):
    study, out = predicted
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mask.nii.gz")))
    assert mask.sum() > 1000
    assert dice_score(rasterise(out / "rt.dcm", series_at(study)) > 0, mask > 0) >= 0.95


def test_the_rtstruct_references_its_series_and_images(predicted):
    study, out = predicted
    series = series_at(study)
    rt = pydicom.dcmread(out / "rt.dcm")
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == source.StudyInstanceUID
    assert rt.PatientID == source.PatientID
    (frame,) = rt.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == source.FrameOfReferenceUID
    (referenced,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series.uid
    sop_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files}
    assert {i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence} == sop_uids
    (roi,) = rt.StructureSetROISequence
    assert roi.ROIName == ROI_NAME and roi.ROIGenerationAlgorithm == "AUTOMATIC"
    contours = rt.ROIContourSequence[0].ContourSequence
    assert all(c.ContourGeometricType == "CLOSED_PLANAR" for c in contours)
    assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours} <= sop_uids


@pytest.mark.skipif(dciodvfy() is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_error_in_the_rtstruct(predicted):
    _, out = predicted
    report = dciodvfy_report(out / "rt.dcm")
    assert any("RTStructureSet" in line for line in report), report
    assert not [line for line in report if line.startswith("Error")]


def test_an_empty_mask_gives_a_structure_set_without_contours(phantom_study):
    series = series_at(phantom_study.folder)
    empty = np.zeros((len(series.files), series.rows, series.columns), np.uint8)
    rt = build_rtstruct(empty, series, "prostate-t2")
    assert "ContourSequence" not in rt.ROIContourSequence[0]
    assert rt.StructureSetROISequence[0].ROIName == ROI_NAME


def test_a_mask_off_the_series_grid_is_refused(phantom_study):
    series = series_at(phantom_study.folder)
    with pytest.raises(ValueError, match="series shape"):
        build_rtstruct(np.zeros((2, 3, 4), np.uint8), series, "prostate-t2")
