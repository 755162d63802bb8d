"""DICOM series: grouping, choice, geometry checks and reading, on the real ProstateX-0000
study as TCIA delivers it and on broken copies of its series."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate

from prokd.data.dicom import by_study, choose_series, find_series, read_series, series_at
from prokd.data.inputs import find_inputs
from prokd.data.io import read_volume
from prokd.errors import DataError

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


def _copy_series(shared_data: Path, folder: Path) -> list[Path]:
    shutil.copytree(shared_data / AXIAL, folder)
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
            lambda files: _edit(files[2], ImagePositionPatient=[0.0, 0.0, 0.0]),
            "uneven slice spacing",
        ),
    ],
    ids=["mixed orientations", "no pixel data", "single slice", "displaced slice"],
)
def test_broken_series_get_one_line_errors_naming_them(shared_data, tmp_path, edit, message):
    edit(_copy_series(shared_data, tmp_path / "series"))
    with pytest.raises(DataError, match=f"series 4 't2_tse_tra': {message}") as caught:
        read_volume(tmp_path / "series")
    assert "\n" not in str(caught.value)


def test_an_unsupported_transfer_syntax_is_named(shared_data, tmp_path):
    files = _copy_series(shared_data, tmp_path / "series")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K Lossless
        dataset.PixelData = encapsulate([dataset.PixelData])  # bytes as such a file has
        dataset["PixelData"].is_undefined_length = True
        dataset.save_as(path)
    with pytest.raises(DataError, match=r"unsupported transfer syntax 1\.2\.840\.10008"):
        read_volume(tmp_path / "series")


def test_a_folder_of_two_studies_gives_one_input_per_study(shared_data, tmp_path):
    """Two patients' folders, each with a T2 and its ADC map: the T2 of each is chosen."""
    for patient in ("A", "B"):
        for series in ("4.000000-t2tsetra-00702", "7.000000-ep2ddifftraDYNDISTADC-48780"):
            folder = tmp_path / patient / series
            shutil.copytree(shared_data / STUDY / "07-07-2011" / series, folder)
            if patient == "B":
                uid = f"1.2.3.4.{series[0]}"
                for path in folder.glob("*.dcm"):
                    _edit(path, PatientID="B", StudyInstanceUID="1.2.3.4", SeriesInstanceUID=uid)
    inputs = find_inputs(tmp_path)
    assert [(v.series.patient_id, v.series.number) for v in inputs] == [
        ("B", 4),
        ("ProstateX-0000", 4),
    ]
    assert all("chosen of 2 series" in v.note for v in inputs)
    with pytest.raises(DataError, match="2 studies in one folder"):
        series_at(tmp_path)


def test_without_a_t2_description_the_choice_is_refused(shared_data, tmp_path):
    for series in ("4.000000-t2tsetra-00702", "7.000000-ep2ddifftraDYNDISTADC-48780"):
        shutil.copytree(shared_data / STUDY / "07-07-2011" / series, tmp_path / series)
    for path in (tmp_path / "4.000000-t2tsetra-00702").glob("*.dcm"):
        _edit(path, SeriesDescription="anon", ProtocolName="anon")
    with pytest.raises(DataError, match="cannot tell which series is the T2.*--series"):
        find_inputs(tmp_path)
    assert find_inputs(tmp_path, "4")[0].series.description == "anon"


def test_non_dicom_files_beside_a_series_are_ignored(shared_data, tmp_path):
    _copy_series(shared_data, tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not an image")
    (tmp_path / "series" / "DICOMDIR.bak").write_bytes(b"\0" * 200)
    (series,) = find_series(tmp_path)
    assert len(series.files) == 19
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
    row = (out / "metrics.csv").read_text().splitlines()[1].split(",")
    assert row[1] == "SITEX/Case01" and float(row[3]) > 0.8  # Dice


def test_a_dicom_folder_is_a_source_of_unlabelled_volumes(shared_data, tmp_path):
    """``data.unlabelled: [DICOM folder]``: each study's chosen series is one unlabelled
    case, read as the axial T2, and cached by the contents of its files."""
    from prokd.data.cache import case_fingerprint
    from prokd.data.layouts import unlabelled_cases
    from prokd.data.preprocess import PreprocessSettings

    (case,) = unlabelled_cases(shared_data / "dicom/ProstateX")
    assert case.case_id == "ProstateX/ProstateX-0000/07-07-2011/4.000000-t2tsetra-00702"
    assert case.site == "ProstateX" and case.patient == "ProstateX/ProstateX-0000"
    assert not case.labelled and read_volume(case.image).GetSize() == (384, 384, 19)
    copy = tmp_path / "ProstateX"
    shutil.copytree(shared_data / AXIAL, copy / "series")
    (copied,) = unlabelled_cases(copy)
    settings = PreprocessSettings()
    before = case_fingerprint(copied, settings)
    _edit(sorted((copy / "series").glob("*.dcm"))[0], SeriesDescription="t2 edited")
    assert case_fingerprint(copied, settings) != before
