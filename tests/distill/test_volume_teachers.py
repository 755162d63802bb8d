"""Volume models' probabilities on a student's slice grid: the resampling against a direct
computation, and the per-volume cache's key."""

import numpy as np
import pytest

from prokd.data.layouts import Case
from prokd.data.preprocess import PreprocessSettings, target_grid
from prokd.distill.volume_teachers import slice_grid_probabilities, to_slice_grid
from prokd.inference.volume_models import load_volume_model
from tests.conftest import (
    FLIPPED,
    export_scaling_model,
    intensities,
    make_volume,
    volume_model_file,
    write,
)


def test_resampling_onto_the_slice_grid_matches_a_direct_computation():
    """Linear interpolation reproduces a field linear in physical space exactly: the
    resampled probabilities equal the field evaluated at the slice grid's voxel centres."""
    shape = (6, 40, 36)
    image = make_volume(
        np.zeros(shape, np.float32), spacing=(0.7, 0.6, 3.0), origin=(5, -3, 2), direction=FLIPPED
    )

    def field(point):
        return 0.5 + 0.004 * point[0] - 0.003 * point[1] + 0.01 * point[2]

    index = np.indices(shape).reshape(3, -1).T  # (z, y, x)
    native = np.array(
        [field(image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))) for z, y, x in index]
    ).reshape(shape)
    settings = PreprocessSettings(size=16, fov_mm=16.0)
    on_grid = to_slice_grid(native, image, settings)
    grid = target_grid(image, settings)
    reference = make_volume(
        np.zeros(tuple(reversed(grid.size)), np.float32), grid.spacing, grid.origin, grid.direction
    )
    assert on_grid.shape == (6, 16, 16)
    for z, y, x in [(0, 0, 0), (2, 7, 9), (5, 15, 15), (3, 8, 1)]:
        point = reference.TransformIndexToPhysicalPoint((x, y, z))
        assert on_grid[z, y, x] == pytest.approx(field(point), abs=1e-4)


def test_cache_is_keyed_by_the_model_file_the_volume_and_the_grid(tmp_path):
    settings = PreprocessSettings(size=16, fov_mm=8.0)
    volume = write(tmp_path / "a" / "t2.nii.gz", intensities(), spacing=(0.5, 0.5, 3.0))
    case = Case("a", "site", volume, ())
    spec = str(volume_model_file(tmp_path))
    cache = tmp_path / "cache"
    first = slice_grid_probabilities(load_volume_model(spec), case, settings, cache)
    assert first.shape == (5, 16, 16) and len(list(cache.rglob("*.npy"))) == 1
    again = slice_grid_probabilities(load_volume_model(spec), case, settings, cache)
    np.testing.assert_allclose(again, first, atol=1e-3)  # read back (float16)
    assert len(list(cache.rglob("*.npy"))) == 1
    robust = PreprocessSettings(size=16, fov_mm=8.0, clip_percentiles=(1, 99), normalise="robust")
    slice_grid_probabilities(load_volume_model(spec), case, robust, cache)
    assert len(list(cache.rglob("*.npy"))) == 1  # same grid, other intensity settings
    export_scaling_model(tmp_path / "scale.onnx", 0.05, -2.0)  # same path, new weights
    changed = slice_grid_probabilities(load_volume_model(spec), case, settings, cache)
    assert len(list(cache.rglob("*.npy"))) == 2
    assert np.abs(changed - first).max() > 0.05
    write(volume, intensities(seed=3), spacing=(0.5, 0.5, 3.0))  # same path, new volume
    slice_grid_probabilities(load_volume_model(spec), case, settings, cache)
    assert len(list(cache.rglob("*.npy"))) == 3
    slice_grid_probabilities(load_volume_model(spec), case, PreprocessSettings(8, 8.0), cache)
    assert len(list(cache.rglob("*.npy"))) == 4  # another grid
    body = PreprocessSettings(size=16, fov_mm=8.0, crop_centre="body")
    slice_grid_probabilities(load_volume_model(spec), case, body, cache)
    assert len(list(cache.rglob("*.npy"))) == 5  # another grid placement
