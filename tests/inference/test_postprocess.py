import numpy as np
import pytest

from prokd.inference.postprocess import (
    NOT_ASSESSED,
    postprocess_mask,
    probability_mask,
    quality_control,
)

SPACING = (3.0, 0.5, 0.5)  # 0.75 ul voxels


def _mask_with_hole_and_island():
    mask = np.zeros((10, 60, 60), np.uint8)
    mask[2:8, 10:50, 10:50] = 1
    mask[4, 25:30, 25:30] = 0  # enclosed hole
    mask[5, 55:58, 55:58] = 1  # separate island
    return mask


def test_postprocess_keeps_largest_component_and_fills_holes():
    out = postprocess_mask(_mask_with_hole_and_island())
    assert out.dtype == np.uint8
    assert out[5, 55:58, 55:58].sum() == 0
    assert out[4, 25:30, 25:30].all()
    assert out.sum() == 6 * 40 * 40
    assert postprocess_mask(np.zeros((3, 4, 4))).sum() == 0


def test_probability_mask_keeps_voxels_at_the_threshold_and_post_processes_unless_told():
    probabilities = _mask_with_hole_and_island().astype(np.float32) * 0.55
    probabilities[0, 0, 0] = 0.5499  # just below: out
    raw = probability_mask(probabilities, 0.55, postprocess=False)
    assert raw.dtype == np.uint8
    assert raw[0, 0, 0] == 0 and raw[5, 55:58, 55:58].all()  # at the threshold: in
    assert (probability_mask(probabilities, 0.55) == postprocess_mask(raw)).all()
    assert probability_mask(probabilities, 0.56).sum() == 0


def _centred(size_ml):
    mask = np.zeros((20, 200, 200), np.uint8)
    voxels = int(size_ml * 1000 / np.prod(SPACING))
    side = int(round((voxels / 6) ** 0.5))
    mask[7:13, 100 - side // 2 : 100 - side // 2 + side, 90 : 90 + side] = 1
    return mask


def test_plausible_mask_has_no_warning():
    qc = quality_control(_centred(40), SPACING)
    assert qc.warnings == [] and qc.components == 1 and 35 < qc.gland_ml < 45


@pytest.mark.parametrize("ml", [2, 300])
def test_volume_out_of_range(ml):
    mask = np.zeros((30, 300, 300), np.uint8)
    n = int(ml * 1000 / np.prod(SPACING))
    mask.reshape(-1)[np.arange(n) + 300 * 300 * 10 + 30000] = 1
    qc = quality_control(mask, SPACING)
    assert any("outside 10-150 ml" in w for w in qc.warnings)


def test_border_gap_and_components_warnings():
    mask = _centred(40)
    mask[7, 0, 95] = 1
    assert "mask touches the volume border" in quality_control(mask, SPACING).warnings
    gapped = _centred(40)
    gapped[10] = 0
    qc = quality_control(gapped, SPACING)
    assert qc.slice_gaps == 1 and "1 gap(s) between mask slices" in qc.warnings
    assert qc.components == 2 and "2 separate components" in qc.warnings


@pytest.mark.parametrize("seed", range(6))
def test_postprocess_in_the_bounding_box_equals_the_whole_volume(seed):
    """Random blobs with holes, some touching the border: working in the foreground's box
    gives exactly what labelling and filling the whole volume gives."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((8, 40, 40)) > 0.55).astype(np.uint8)
    mask[:, : rng.integers(0, 12)] = 0
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    expected = ndimage.binary_fill_holes(labels == sizes.argmax()).astype(np.uint8)
    np.testing.assert_array_equal(postprocess_mask(mask), expected)


def test_a_mask_is_not_reliable_until_assessed():
    qc = quality_control(_mask_with_hole_and_island(), SPACING)
    assert qc.reliable is False and qc.reasons == [NOT_ASSESSED]


def test_the_mirrored_mask_is_made_like_the_mask():
    from prokd.inference.pipeline import prediction_masks

    gland = np.zeros((10, 60, 60), np.float32)
    gland[2:8, 20:40, 20:40] = 0.9
    mirrored = gland.copy()
    mirrored[5, 50:55, 50:55] = 0.9  # a speck post-processing removes
    mask, mirror = prediction_masks((gland, mirrored), postprocess=True)
    np.testing.assert_array_equal(mask, mirror)
    _, raw = prediction_masks((gland, mirrored), postprocess=False)
    assert raw[5, 50:55, 50:55].all()
    assert prediction_masks((gland, None), True)[1] is None
