"""The helpers every stage reads a mask with, against direct computations."""

import numpy as np

from prokd.data.masks import gland_ml, occupied_slices
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
