"""DICOM series written from a volume read back as that volume: voxels, geometry and plane;
and the series the reader must refuse (two echoes, a missing slice)."""

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.dicom import find_series, read_series, series_at
from prokd.data.dicom_write import StudyIdentity, write_series
from prokd.errors import DataError
from tests.conftest import make_volume

SAGITTAL = (0, 0, -1, 1, 0, 0, 0, -1, 0)  # columns: rows along P, columns along F, slices -L
CORONAL = (1, 0, 0, 0, 0, 1, 0, -1, 0)  # rows along L, columns along F, slices P
OBLIQUE = tuple(
    np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]]).ravel()
)


def _volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    values = np.random.default_rng(0).integers(0, 3000, (6, 20, 24)).astype(np.int16)
    return make_volume(values, (0.7, 0.6, 3.0), (-40.0, 12.5, 7.0), direction)


def _as_written(direction, tmp_path):
    image = _volume(direction)
    write_series(image, tmp_path / "s", StudyIdentity.named("P1"))
    series = series_at(tmp_path / "s")
    return image, series, read_series(series)


@pytest.mark.parametrize(
    ("direction", "plane"),
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), "axial"),
        (OBLIQUE, "axial"),
        (SAGITTAL, "sagittal"),
        (CORONAL, "coronal"),
    ],
)
def test_a_written_series_reads_back_as_its_volume(direction, plane, tmp_path):
    image, series, read = _as_written(direction, tmp_path)
    assert series.plane == plane and series.problem is None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)


def test_two_echoes_and_a_missing_slice_are_refused_with_their_reason(tmp_path):
    study = StudyIdentity.named("P2")
    write_series(_volume(), tmp_path / "echo", study, number=2, echoes=2)
    write_series(_volume(), tmp_path / "gap", study, number=3, omit=[3])
    problems = {s.number: s.problem for s in find_series(tmp_path)}
    assert "share a slice position" in problems[2]
    assert "uneven slice spacing" in problems[3] and "missing slice" in problems[3]


def test_the_same_call_writes_the_same_uids(tmp_path):
    for name in ("a", "b"):
        write_series(_volume(), tmp_path / name, StudyIdentity.named("P3"))
    a, b = (series_at(tmp_path / name) for name in ("a", "b"))
    assert a.uid == b.uid and a.study_uid == b.study_uid


def test_values_that_do_not_fit_16_bits_are_refused(tmp_path):
    image = make_volume(np.full((2, 4, 4), -5, np.int16))
    with pytest.raises(ValueError, match="do not fit"):
        write_series(image, tmp_path / "s", StudyIdentity.named("P4"))


def test_a_missing_series_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        series_at(tmp_path / "nothing")


def test_a_readable_t2_is_chosen_over_a_refused_one_with_more_files(tmp_path):
    study = StudyIdentity.named("P5")
    write_series(_volume(), tmp_path / "echoes", study, number=3, echoes=2)
    write_series(_volume(), tmp_path / "single", study, number=4)
    chosen = series_at(tmp_path)
    assert chosen.number == 4 and chosen.problem is None


def test_per_slice_rescale_slopes_are_applied_without_truncation(tmp_path):
    values = np.random.default_rng(1).uniform(0, 300, (6, 20, 24))
    image = make_volume(values.astype(np.float32), (0.7, 0.6, 3.0))
    slopes = [1.0, 0.25, 0.5, 1.0, 0.125, 2.0]
    write_series(image, tmp_path / "s", StudyIdentity.named("P6"), slopes=slopes)
    read = sitk.GetArrayFromImage(read_series(series_at(tmp_path / "s")))
    written = sitk.GetArrayFromImage(image).astype(np.float64)
    expected = np.stack([np.round(v / s) * s for v, s in zip(written, slopes, strict=True)])
    np.testing.assert_allclose(read, expected, atol=1e-4)
