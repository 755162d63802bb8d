"""The helpers every stage reads a mask with, against direct computations."""

import numpy as np
import pytest
from scipy import ndimage

from prokd.data.masks import (
    component_count,
    components,
    fill_holes,
    gland_ml,
    largest_component,
    occupied_slices,
)
from prokd.data.planes import slice_profile_sigma


def test_gland_volume_and_occupied_slices():
    mask = np.zeros((6, 10, 10), np.uint8)
    mask[1, 2:4, 2:4] = 1
    mask[4, 0:10, 0:5] = 2  # any non-zero label counts
    assert gland_ml(mask, (3.0, 0.5, 0.5)) == (4 + 50) * 0.75 / 1000
    assert gland_ml(mask > 0, [2.0, 2.0, 2.0]) == 54 * 8 / 1000
    np.testing.assert_array_equal(occupied_slices(mask), [1, 4])
    assert len(occupied_slices(np.zeros((3, 2, 2)))) == 0


def test_the_slice_profile_sigma_gives_the_asked_thickness():
    """A Gaussian of that sigma has a full width at half maximum of sqrt(t^2 - s^2): the
    blur that, added in quadrature to slices s thick, makes them t thick."""
    sigma = slice_profile_sigma(3.0, 0.6)
    x = np.linspace(-10, 10, 200001)
    profile = np.exp(-(x**2) / (2 * sigma**2))
    above = x[profile >= 0.5]
    assert abs((above.max() - above.min()) - np.sqrt(3.0**2 - 0.6**2)) < 1e-3
    assert slice_profile_sigma(3.0) == slice_profile_sigma(3.0, 0.0) > 0
    assert slice_profile_sigma(2.0, 3.6) == 0.0  # already thicker: no blur


def _blobs(seed: int, shape=(9, 24, 20), fraction=0.45) -> np.ndarray:
    """Smoothed noise cut at a level: masks with many components and holes of every shape."""
    noise = np.random.default_rng(seed).random(shape)
    smooth = ndimage.uniform_filter(noise, 3)
    return smooth > np.quantile(smooth, 1 - fraction)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.85])
def test_components_and_holes_match_scipy(seed, fraction):
    """scipy.ndimage is the reference: the same components (6- and 26-connected), the same
    largest one, the same holes in 3D and slice by slice."""
    mask = _blobs(seed, fraction=fraction)
    full = np.ones((3, 3, 3), dtype=bool)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    for fully, structure in ((False, None), (True, full)):
        reference, count = ndimage.label(mask, structure=structure)
        labels, found = components(mask, fully_connected=fully)
        assert found == count == component_count(mask, fully_connected=fully)
        sizes = np.bincount(reference.ravel())[1:]
        np.testing.assert_array_equal(np.bincount(labels.ravel())[1:], np.sort(sizes)[::-1])
        np.testing.assert_array_equal(
            largest_component(mask, fully), reference == 1 + int(np.argmax(sizes))
        )
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(
        fill_holes(mask, in_plane=True), ndimage.binary_fill_holes(mask, structure=in_plane)
    )


def test_holes_of_the_end_slices_are_filled_slice_by_slice():
    """A ring on the first and last slices: a hole in plane (filled), not in 3D (its
    background reaches the volume's end)."""
    mask = np.zeros((3, 7, 7), dtype=bool)
    mask[[0, 2], 1:6, 1:6] = True
    mask[[0, 2], 3, 3] = False
    assert fill_holes(mask, in_plane=True)[[0, 2], 3, 3].all()
    assert not fill_holes(mask)[[0, 2], 3, 3].any()
    assert components(np.zeros((2, 3, 3)))[1] == 0 == component_count(np.zeros((2, 3, 3)))
    assert not largest_component(np.zeros((2, 3, 3))).any()
