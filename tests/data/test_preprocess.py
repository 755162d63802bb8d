import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.preprocess import (
    PreprocessSettings,
    body_centre_index,
    normalise_intensity,
    preprocess_volume,
    target_grid,
    to_original_grid,
)
from prokd.errors import ConfigError
from tests.conftest import make_volume

# Anisotropic, oblique and with flipped axes: the hard case for an inverse mapping.
DIRECTION = (-1, 0, 0, 0, -0.8, 0.6, 0, 0.6, 0.8)


def _ellipsoid(shape=(10, 60, 50), spacing=(0.8, 0.6, 3.5), shift=(0.0, 0.0, 0.0), seed=0):
    z, y, x = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    pz, py, px = (
        (z - c[0]) * spacing[2] - shift[2],
        (y - c[1]) * spacing[1] - shift[1],
        (x - c[2]) * spacing[0] - shift[0],
    )
    mask = ((px / 10) ** 2 + (py / 8) ** 2 + (pz / 12) ** 2 < 1).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = (200 + 100 * mask + rng.normal(0, 10, shape)).astype(np.float32)
    return image, mask


def test_output_shapes_and_normalisation():
    image, mask = _ellipsoid()
    settings = PreprocessSettings(size=32, fov_mm=40.0)
    out, out_mask, grid = preprocess_volume(
        make_volume(image, (0.8, 0.6, 3.5)), make_volume(mask, (0.8, 0.6, 3.5)), settings
    )
    assert out.shape == out_mask.shape == (10, 32, 32)
    assert grid.spacing == pytest.approx((1.25, 1.25, 3.5))
    assert out_mask.sum() > 0
    assert float(out.min()) == pytest.approx(float(normalise_intensity(image, settings).min()))


def test_normalise_intensity_clips_then_z_scores():
    rng = np.random.default_rng(0)
    array = rng.normal(50, 10, (4, 30, 30)).astype(np.float32)
    array[0, 0, 0] = 1e6  # a hot voxel must not dominate the statistics
    out = normalise_intensity(array, PreprocessSettings(clip_percentiles=(1, 99)))
    assert float(out.mean()) == pytest.approx(0, abs=1e-4)
    assert float(out.std()) == pytest.approx(1, abs=1e-4)
    assert out[0, 0, 0] == pytest.approx(out.max())
    assert float(out.max()) < 4


def test_robust_normalisation_scales_by_median_and_interquartile_range():
    rng = np.random.default_rng(0)
    array = rng.normal(50, 10, (4, 40, 40)).astype(np.float32)
    robust = PreprocessSettings(clip_percentiles=(0, 100), normalise="robust")
    out = normalise_intensity(array, robust)
    q1, median, q3 = np.percentile(array.astype(np.float64), (25, 50, 75))
    np.testing.assert_allclose(out, (array - median) / ((q3 - q1) / 1.349), atol=1e-5)
    zscore = normalise_intensity(array, PreprocessSettings(clip_percentiles=(0, 100)))
    assert np.abs(out - zscore).max() < 0.1  # a normal distribution: both scales agree
    sparse = np.zeros((2, 10, 10), np.float32)
    sparse[0, :2] = 1.0  # equal quartiles: the standard deviation scales it
    assert np.isclose(normalise_intensity(sparse, robust).std(), 1.0)


def test_robust_normalisation_ignores_coil_flare_outside_the_slice_grid():
    """A bright flare far outside the slice grid shifts z-scored slices but not robust ones,
    whose statistics come from the region the grid covers."""
    rng = np.random.default_rng(1)
    array = rng.normal(100, 20, (3, 160, 160)).astype(np.float32)
    flared = array.copy()
    flared[:, :40, :40] = 5000.0  # 6% of the voxels, a corner 60 mm from the grid
    for normalise, changes in (("zscore", True), ("robust", False)):
        settings = PreprocessSettings(size=16, fov_mm=32.0, normalise=normalise)
        plain = preprocess_volume(make_volume(array, (1.0, 1.0, 3.0)), None, settings)[0]
        bright = preprocess_volume(make_volume(flared, (1.0, 1.0, 3.0)), None, settings)[0]
        assert (np.abs(plain - bright).max() > 0.1) == changes, normalise


def test_fingerprint_names_the_normalisation_only_when_it_is_not_the_default():
    assert "normalise" not in PreprocessSettings().fingerprint()
    robust = PreprocessSettings(normalise="robust")
    assert "robust" in robust.fingerprint()
    assert PreprocessSettings.from_dict(dataclasses.asdict(robust)) == robust


def test_fingerprint_names_the_crop_centre_only_when_it_is_not_the_default():
    assert "crop_centre" not in PreprocessSettings().fingerprint()
    body = PreprocessSettings(crop_centre="body", normalise="robust")
    assert '"crop_centre": "body"' in body.fingerprint()
    assert PreprocessSettings.from_dict(dataclasses.asdict(body)) == body
    assert body.grid_only() == PreprocessSettings(crop_centre="body")


def _pelvis(body_shift_mm: float, spacing=(2.0, 2.0, 4.0), shape=(6, 200, 200)):
    """A 400 mm field of view in air: an elliptic body shifted right (+x) by
    ``body_shift_mm`` and down (+y) by half that, with the gland at the body's centre."""
    z, y, x = np.indices(shape).astype(float)
    px = (x - (shape[2] - 1) / 2) * spacing[0] - body_shift_mm
    py = (y - (shape[1] - 1) / 2) * spacing[1] - body_shift_mm / 2
    body = (px / 100) ** 2 + (py / 80) ** 2 < 1
    gland = (px / 20) ** 2 + (py / 15) ** 2 < 1
    rng = np.random.default_rng(0)
    image = np.where(body, 300.0, 5.0) + 200.0 * gland + rng.normal(0, 5, shape)
    # A brighter band of subcutaneous fat, so the body is not one flat intensity.
    image += 300.0 * (body & ((px / 90) ** 2 + (py / 70) ** 2 > 1))
    return image.astype(np.float32), gland.astype(np.uint8)


def test_body_centre_places_the_grid_on_an_off_centre_body():
    """A large field of view with the body (and gland) 90 mm off the image centre: the
    image-centred 128 mm grid loses most of the gland; the body-centred one holds all of it,
    centred within a few mm, found without the mask, and maps back exactly."""
    image, gland = _pelvis(90.0)
    volume = make_volume(image, (2.0, 2.0, 4.0), origin=(-40, 25, 3), direction=DIRECTION)
    mask = make_volume(gland, (2.0, 2.0, 4.0), origin=(-40, 25, 3), direction=DIRECTION)
    kept = {}
    for centre in ("image", "body"):
        settings = PreprocessSettings(size=64, fov_mm=128.0, crop_centre=centre)
        _, on_grid, grid = preprocess_volume(volume, mask, settings)
        kept[centre] = on_grid.sum() * settings.spacing_mm**2 / (gland.sum() * 4.0)
        if centre == "body":
            _, yy, xx = np.nonzero(on_grid)
            offset = np.hypot(xx.mean() - 31.5, yy.mean() - 31.5) * settings.spacing_mm
            assert offset < 4.0
            back = to_original_grid(on_grid.astype(np.float32), grid, volume) >= 0.5
            dice = 2 * (back & (gland > 0)).sum() / (back.sum() + gland.sum())
            assert dice > 0.95
    assert kept["image"] < 0.5 and kept["body"] == pytest.approx(1.0, abs=0.05)


def test_body_centre_is_the_image_centre_for_a_centred_body_and_a_constant_image():
    image, _ = _pelvis(0.0)
    settings = PreprocessSettings(size=32, fov_mm=128.0)
    volume = make_volume(image, (2.0, 2.0, 4.0))
    body_grid = target_grid(volume, dataclasses.replace(settings, crop_centre="body"))
    assert np.allclose(body_grid.origin, target_grid(volume, settings).origin, atol=2.0)
    constant = make_volume(np.full((3, 40, 40), 7.0, np.float32))
    assert body_centre_index(constant) is None
    assert target_grid(constant, dataclasses.replace(settings, crop_centre="body")) == (
        target_grid(constant, settings)
    )


@pytest.mark.parametrize("size,fov", [(32, 48.0), (64, 48.0)])
def test_inverse_mapping_recovers_mask_on_anisotropic_oblique_volume(size, fov):
    spacing = (0.8, 0.6, 3.5)
    image, mask = _ellipsoid(spacing=spacing, shift=(3.0, -4.0, 0.0))
    reference = make_volume(image, spacing, origin=(12, -30, 7), direction=DIRECTION)
    out_image, out_mask, grid = preprocess_volume(
        reference,
        make_volume(mask, spacing, origin=(12, -30, 7), direction=DIRECTION),
        PreprocessSettings(size=size, fov_mm=fov),
    )
    back = to_original_grid(out_mask.astype(np.float32), grid, reference) >= 0.5
    assert back.shape == mask.shape
    dice = 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum())
    assert dice > (0.9 if size == 32 else 0.95)
    # The physical centre of mass is preserved (no flips or shifts on the way back).
    assert np.allclose(np.argwhere(back).mean(0), np.argwhere(mask).mean(0), atol=0.5)


def test_orientation_is_normalised():
    """The same anatomy stored with flipped axes gives the same slices."""
    image, mask = _ellipsoid(shift=(4.0, -3.0, 0.0))
    spacing = (0.8, 0.6, 3.5)
    lps = make_volume(image, spacing)
    flipped = make_volume(
        np.ascontiguousarray(image[:, ::-1, ::-1]),
        spacing,
        origin=((image.shape[2] - 1) * 0.8, (image.shape[1] - 1) * 0.6, 0),
        direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1),
    )
    settings = PreprocessSettings(size=32, fov_mm=40.0)
    a, _, grid_a = preprocess_volume(lps, None, settings)
    b, _, grid_b = preprocess_volume(flipped, None, settings)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert grid_a.mismatch(grid_b) is None


def test_crop_ignores_the_mask():
    image, mask = _ellipsoid()
    settings = PreprocessSettings(size=24, fov_mm=30.0)
    vol = make_volume(image, (0.8, 0.6, 3.5))
    a, _, grid_a = preprocess_volume(vol, make_volume(mask, (0.8, 0.6, 3.5)), settings)
    moved = np.roll(mask, 15, axis=2)
    b, _, grid_b = preprocess_volume(vol, make_volume(moved, (0.8, 0.6, 3.5)), settings)
    np.testing.assert_array_equal(a, b)
    assert grid_a == grid_b


def test_padding_when_fov_exceeds_image():
    image, _ = _ellipsoid(shape=(4, 20, 20))
    out, _, _ = preprocess_volume(
        make_volume(image, (0.8, 0.6, 3.5)), None, PreprocessSettings(size=64, fov_mm=64.0)
    )
    assert np.allclose(out[:, 0, :], out.min())  # padded rows hold the background value
    # the image (12 x 16 mm) lies in the grid's centre (64 mm): the middle row holds it
    assert not np.allclose(out[:, 32, :], out.min())


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"size": 4}, "size"),
        ({"fov_mm": 0}, "fov_mm"),
        ({"clip_percentiles": (50, 10)}, "clip_percentiles"),
        ({"normalise": "minmax"}, "normalise"),
        ({"crop_centre": "mask"}, "crop_centre"),
    ],
)
def test_invalid_settings(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        PreprocessSettings(**kwargs)


@pytest.mark.parametrize(
    "direction",
    [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 0, 0, 0, 0, 1, 0, -1, 0)],
)
def test_large_field_of_view_is_cropped_to_the_grid_without_changing_the_slices(direction):
    """Preprocessing crops the volume around the slice grid before the low-pass: the slices
    equal those computed on the whole (axially reoriented) volume (float32 rounding aside)."""
    from prokd.data.io import Geometry
    from prokd.data.preprocess import (
        _antialias,
        _around_grid,
        axial_view,
        normalise_intensity,
        resample_to_grid,
        target_grid,
    )

    rng = np.random.default_rng(0)
    image = make_volume(
        rng.normal(100, 20, (4, 200, 180)).astype(np.float32),
        spacing=(0.9, 0.9, 3.0),
        origin=(3, -7, 11),
        direction=direction,
    )
    settings = PreprocessSettings(size=32, fov_mm=64.0)
    slices, _, grid = preprocess_volume(image, None, settings)
    axial = axial_view(image)
    normalised = normalise_intensity(sitk.GetArrayViewFromImage(axial), settings)
    whole = Geometry.of(axial).apply_to(sitk.GetImageFromArray(normalised))
    assert np.prod(_around_grid(whole, grid).GetSize()) < 0.7 * np.prod(whole.GetSize())
    reference = resample_to_grid(
        _antialias(whole, settings.spacing_mm),
        target_grid(image, settings),
        sitk.sitkLinear,
        float(normalised.min()),
    )
    np.testing.assert_allclose(slices, sitk.GetArrayFromImage(reference), atol=1e-6)
