"""DICOM series: grouping, choice, geometry checks and reading, on the real ProstateX-0000
study as TCIA delivers it (where ../shared/data is present) and on series the tests write
(an axial T2 and an ADC map, and broken copies of them)."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate

from prokd.data.dicom import by_study, choose_series, find_series, read_series, series_at
from prokd.data.dicom_write import StudyIdentity, write_series
from prokd.data.inputs import find_inputs
from prokd.data.io import read_volume
from prokd.errors import DataError
from tests.conftest import make_volume

STUDY = "dicom/ProstateX/ProstateX-0000"
AXIAL = f"{STUDY}/07-07-2011/4.000000-t2tsetra-00702"
MISSING_SLICE = "dicom/ProstateX-missing-slice"


def test_series_are_grouped_and_the_axial_t2_is_chosen(shared_data):
    series = find_series(shared_data / STUDY)
    assert [(s.number, s.plane, s.is_t2) for s in series] == [
        (3, "sagittal", True),
        (4, "axial", True),
        (5, "coronal", True),
        (7, "axial", False),  # the ADC map
    ]
    assert [len(s.files) for s in series] == [19, 19, 15, 19]
    assert all(s.problem is None for s in series)
    assert len(by_study(series)) == 1
    chosen = choose_series(series)
    assert chosen.number == 4 and chosen.description == "t2_tse_tra"
    assert chosen.size == (384, 384, 19)
    np.testing.assert_allclose(chosen.spacing, (0.5, 0.5, 3.0), atol=1e-6)
    assert choose_series(series, "3").plane == "sagittal"
    assert choose_series(series, series[2].uid).number == 5
    with pytest.raises(DataError, match="no series '9'"):
        choose_series(series, "9")


def test_the_axial_series_reads_as_the_converted_volume(shared_data):
    """The series read from DICOM equals the NIfTI conversion in ../shared/data (same
    voxels, same physical grid)."""
    image = read_series(series_at(shared_data / STUDY))
    reference = read_volume(shared_data / "unlabeled/prostatex/ProstateX-0000/t2.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5)
    # a file of the series stands for its series; read_volume takes folders and files
    one_file = sorted((shared_data / AXIAL).glob("*.dcm"))[5]
    assert series_at(one_file).uid == series_at(shared_data / STUDY).uid
    assert read_volume(one_file).GetSize() == image.GetSize()


def test_the_missing_slice_series_is_refused_naming_it(shared_data):
    (series,) = find_series(shared_data / MISSING_SLICE)
    assert "missing slice" in series.problem
    with pytest.raises(DataError, match=r"series 8 .*gap of 6.00 mm.*missing slice"):
        read_series(series)


def _volume(slices: int = 6) -> sitk.Image:
    values = np.random.default_rng(0).integers(0, 2000, (slices, 24, 20)).astype(np.int16)
    return make_volume(values, (0.5, 0.5, 3.0))


def _write_study(folder: Path, patient: str = "PX") -> None:
    """A study of two series: an axial T2 (number 4, in ``folder/t2``) and an ADC map
    (number 7, in ``folder/adc``)."""
    study = StudyIdentity.named(patient)
    write_series(_volume(), folder / "t2", study, number=4, description="t2_tse_tra")
    write_series(_volume(), folder / "adc", study, number=7, description="ep2d_diff_tra_ADC")


def _copy_series(folder: Path) -> list[Path]:
    """An axial T2 series (number 4, 't2_tse_tra') written into ``folder``."""
    write_series(_volume(), folder, StudyIdentity.named("PX"), 4, "t2_tse_tra")
    return sorted(folder.glob("*.dcm"))


def _edit(path: Path, **values) -> None:
    dataset = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda files: _edit(files[3], ImageOrientationPatient=[0, 1, 0, 0, 0, -1]),
            "mixed slice orientations",
        ),
        (lambda files: _edit(files[3], PixelData=None), "no pixel data"),
        (lambda files: [f.unlink() for f in files[1:]], "a single slice"),
        (
            lambda files: _edit(files[2], ImagePositionPatient=[0.0, 0.0, 4.0]),
            "uneven slice spacing",
        ),
    ],
    ids=["mixed orientations", "no pixel data", "single slice", "displaced slice"],
)
def test_broken_series_get_one_line_errors_naming_them(tmp_path, edit, message):
    edit(_copy_series(tmp_path / "series"))
    with pytest.raises(DataError, match=f"series 4 't2_tse_tra': {message}") as caught:
        read_volume(tmp_path / "series")
    assert "\n" not in str(caught.value)


def test_an_unsupported_transfer_syntax_is_named(tmp_path):
    files = _copy_series(tmp_path / "series")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K Lossless
        dataset.PixelData = encapsulate([dataset.PixelData])  # bytes as such a file has
        dataset["PixelData"].is_undefined_length = True
        dataset.save_as(path)
    with pytest.raises(DataError, match=r"unsupported transfer syntax 1\.2\.840\.10008"):
        read_volume(tmp_path / "series")


def test_a_folder_of_two_studies_gives_one_input_per_study(tmp_path):
    """Two patients' folders, each with a T2 and its ADC map: the T2 of each is chosen."""
    for patient in ("A", "B"):
        _write_study(tmp_path / patient, patient)
    inputs = find_inputs(tmp_path)
    assert [(v.series.patient_id, v.series.number) for v in inputs] == [("A", 4), ("B", 4)]
    assert all("chosen of 2 series" in v.note for v in inputs)
    with pytest.raises(DataError, match="2 studies in one folder"):
        series_at(tmp_path)


def test_without_a_t2_description_the_choice_is_refused(tmp_path):
    _write_study(tmp_path)
    for path in (tmp_path / "t2").glob("*.dcm"):
        _edit(path, SeriesDescription="anon")
    with pytest.raises(DataError, match="cannot tell which series is the T2.*--series"):
        find_inputs(tmp_path)
    assert find_inputs(tmp_path, "4")[0].series.description == "anon"


def test_non_dicom_files_beside_a_series_are_ignored(tmp_path):
    _copy_series(tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not an image")
    (tmp_path / "series" / "DICOMDIR.bak").write_bytes(b"\0" * 200)
    (series,) = find_series(tmp_path)
    assert len(series.files) == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no image volumes or DICOM series"):
        find_inputs(empty)


def test_evaluate_reads_dicom_images_of_a_six_site_dataset(shared_data, tmp_path, capsys):
    """``<SITE>/CaseNN/`` as a DICOM series beside ``CaseNN_segmentation.nii.gz``: evaluate
    scores the bundled model on it (against the AI reference of ProstateX-0000)."""
    from prokd.cli import main

    site = tmp_path / "data" / "SITEX"
    shutil.copytree(shared_data / AXIAL, site / "Case01")
    reference = "ai-references/prostatex/ProstateX-0000/gland_bosma22b.nii.gz"
    shutil.copy(shared_data / reference, site / "Case01_segmentation.nii.gz")
    out = tmp_path / "out"
    assert (
        main(["evaluate", "prostate-t2", "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    )
    assert "[six-site], 1 cases" in capsys.readouterr().out
    with open(out / "metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["case"] == "SITEX/Case01" and float(row["dice"]) > 0.8


def test_a_dicom_folder_is_a_source_of_unlabelled_volumes(tmp_path):
    """``data.unlabelled: [DICOM folder]``: each study's chosen series is one unlabelled
    case, read as the axial T2, and cached by the contents of its files."""
    from prokd.data.cache import case_fingerprint
    from prokd.data.layouts import unlabelled_cases
    from prokd.data.preprocess import PreprocessSettings

    _write_study(tmp_path / "Export" / "PX" / "study", "PX")
    (case,) = unlabelled_cases(tmp_path / "Export")
    assert case.case_id == "Export/PX/study/t2"
    assert case.site == "Export" and case.patient == "Export/PX"
    assert not case.labelled and read_volume(case.image).GetSize() == (20, 24, 6)
    settings = PreprocessSettings()
    before = case_fingerprint(case, settings)
    _edit(sorted((tmp_path / "Export" / "PX" / "study" / "t2").glob("*.dcm"))[0], SeriesNumber=9)
    assert case_fingerprint(case, settings) != before
