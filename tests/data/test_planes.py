"""Acquisition planes and axial reslicing of sagittal and coronal series."""

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.planes import acquisition_plane, axial_reslice, check_segmentable
from prokd.errors import DataError
from tests.conftest import make_volume

SAGITTAL = (0, 0, 1, 1, 0, 0, 0, -1, 0)  # voxel x -> P, y -> -S (rows down), z -> L
CORONAL = (1, 0, 0, 0, 0, 1, 0, -1, 0)  # voxel x -> L, y -> -S, z -> P


@pytest.mark.parametrize(
    "direction, spacing, plane",
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), (0.5, 0.5, 3.0), "axial"),
        (SAGITTAL, (0.56, 0.56, 3.6), "sagittal"),
        (CORONAL, (0.56, 0.56, 3.6), "coronal"),
        # an axial scan stored with its slice axis first is still axial
        ((0, 0, 1, 0, 1, 0, 1, 0, 0), (3.0, 0.5, 0.5), "axial"),
    ],
)
def test_the_acquisition_plane_follows_the_thick_axis(direction, spacing, plane):
    image = make_volume(np.zeros((8, 10, 12), np.float32), spacing=spacing, direction=direction)
    assert acquisition_plane(image) == plane


@pytest.mark.parametrize("spacing", [(0.9, 0.9, 0.8), (0.8, 0.8, 0.8), (0.56, 0.56, 3.6)])
def test_a_series_and_its_volume_have_one_plane(spacing, tmp_path):
    """A sagittal 3D T2 with slices a little thinner than its pixels is sagittal as a DICOM
    series and as the volume read from it (the two rules once disagreed)."""
    from prokd.data.dicom import read_series, series_at
    from prokd.data.dicom_write import StudyIdentity, write_series

    image = make_volume(np.zeros((8, 10, 12), np.int16), spacing=spacing, direction=SAGITTAL)
    write_series(image, tmp_path / "s", StudyIdentity.named("P"), description="t2_spc_sag")
    series = series_at(tmp_path / "s")
    assert series.plane == acquisition_plane(read_series(series)) == "sagittal"


def test_a_sagittal_series_is_resliced_onto_an_axial_grid_over_its_extent():
    def field(point):  # smooth in L and P, linear in S: a thick-slice low-pass keeps it
        return 100.0 + 2.0 * point[0] - 1.0 * point[1] + 0.5 * point[2]

    shape = (9, 40, 50)  # (z = L, y = S, x = P)
    image = make_volume(np.zeros(shape, np.float32), (0.6, 0.6, 3.5), (10, -20, 30), SAGITTAL)
    index = np.indices(shape).reshape(3, -1).T
    values = [
        field(image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))) for z, y, x in index
    ]
    image = make_volume(
        np.array(values, np.float32).reshape(shape), (0.6, 0.6, 3.5), (10, -20, 30), SAGITTAL
    )
    axial = axial_reslice(image)
    assert acquisition_plane(axial) == "axial"
    np.testing.assert_allclose(axial.GetDirection(), np.eye(3).ravel())
    assert axial.GetSpacing() == pytest.approx((0.6, 0.6, 3.0))
    # It spans the series: 8 x 3.5 mm in L, 49 x 0.6 mm in P, 39 x 0.6 mm in S.
    extent = np.array(axial.GetSpacing()) * (np.array(axial.GetSize()) - 1)
    np.testing.assert_allclose(extent, (28.0, 29.4, 21.0), atol=3.0)
    array = sitk.GetArrayFromImage(axial)
    for z, y, x in [(2, 10, 10), (4, 25, 20), (5, 40, 30)]:
        point = axial.TransformIndexToPhysicalPoint((x, y, z))
        assert array[z, y, x] == pytest.approx(field(point), abs=0.5)


def test_a_single_slice_localiser_is_refused_naming_it():
    image = make_volume(np.zeros((1, 64, 64), np.float32))
    with pytest.raises(DataError, match="scout.nii.gz.*fewer than 3 slices"):
        check_segmentable(image, "scout.nii.gz")
    check_segmentable(make_volume(np.zeros((3, 8, 8), np.float32)), "ok.nii.gz")
