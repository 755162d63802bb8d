import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.layouts import Case
from prokd.data.validate import load_case
from prokd.errors import DataError
from tests.conftest import ball_case, write


def _case(tmp_path, image, mask, labels=frozenset({0, 1}), image_geo=None, mask_geo=None):
    img = write(tmp_path / "img.nii.gz", image, **(image_geo or {}))
    msk = write(tmp_path / "img_segmentation.nii.gz", mask, **(mask_geo or {}))
    return Case("c", "s", img, (msk,), allowed_labels=labels)


def test_valid_case_loads_whole_gland_and_volume(tmp_path):
    image, mask = ball_case()
    mask = mask * 2  # zonal label 2 still counts as gland
    loaded = load_case(_case(tmp_path, image, mask, frozenset({0, 1, 2})))
    assert loaded.warnings == []
    gland = sitk.GetArrayFromImage(loaded.mask)
    assert set(np.unique(gland).tolist()) == {0, 1}
    np.testing.assert_array_equal(gland, mask > 0)
    voxels = int((mask > 0).sum())
    assert loaded.gland_volume_ml() == pytest.approx(voxels * 0.5 * 0.5 * 3.0 / 1000)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_image(tmp_path, bad):
    image, mask = ball_case()
    image[0, 0, 0] = bad
    with pytest.raises(DataError, match=r"img.nii.gz: contains 1 NaN/Inf voxels"):
        load_case(_case(tmp_path, image, mask))


def test_shape_mismatch(tmp_path):
    image, mask = ball_case()
    with pytest.raises(
        DataError, match=r"img_segmentation.nii.gz: mask does not match image .*shape"
    ):
        load_case(_case(tmp_path, image, mask[:, :, :-1]))


@pytest.mark.parametrize(
    "geometry,word",
    [
        ({"spacing": (0.5, 0.5, 4.0)}, "spacing"),
        ({"origin": (0.0, 5.0, 0.0)}, "origin"),
        ({"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}, "direction"),
    ],
)
def test_geometry_mismatch(tmp_path, geometry, word):
    image, mask = ball_case()
    with pytest.raises(DataError, match=rf"img_segmentation.nii.gz: mask does not match .*{word}"):
        load_case(_case(tmp_path, image, mask, mask_geo=geometry))


def test_labels_outside_expected_set(tmp_path):
    image, mask = ball_case()
    mask[mask > 0] = 3
    with pytest.raises(DataError, match=r"img_segmentation.nii.gz: mask labels \[3\] outside"):
        load_case(_case(tmp_path, image, mask))


def test_non_integer_labels(tmp_path):
    image, mask = ball_case()
    with pytest.raises(DataError, match="img_segmentation.nii.gz: mask has non-integer values"):
        load_case(_case(tmp_path, image, mask.astype(np.float32) * 0.5))


def test_missing_mask_file(tmp_path):
    image, _ = ball_case()
    img = write(tmp_path / "img.nii.gz", image)
    case = Case("c", "s", img, (tmp_path / "gone.nii.gz",))
    with pytest.raises(DataError, match="gone.nii.gz: file not found"):
        load_case(case)


def test_empty_mask_is_a_warning(tmp_path):
    image, mask = ball_case()
    loaded = load_case(_case(tmp_path, image, np.zeros_like(mask)))
    assert len(loaded.warnings) == 1 and "empty mask" in loaded.warnings[0]
    assert "img_segmentation.nii.gz" in loaded.warnings[0]
