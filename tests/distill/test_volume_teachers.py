"""Volume models' probabilities on a student's slice grid: the resampling against a direct
computation, and the per-volume cache's key."""

import numpy as np
import pytest

from prokd.data.io import read_volume
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
    grid = target_grid(image, settings)
    on_grid = to_slice_grid(native, image, grid)
    reference = make_volume(
        np.zeros(tuple(reversed(grid.size)), np.float32), grid.spacing, grid.origin, grid.direction
    )
    assert on_grid.shape == (6, 16, 16)
    for z, y, x in [(0, 0, 0), (2, 7, 9), (5, 15, 15), (3, 8, 1)]:
        point = reference.TransformIndexToPhysicalPoint((x, y, z))
        assert on_grid[z, y, x] == pytest.approx(field(point), abs=1e-4)


def test_cache_is_keyed_by_the_model_file_and_the_volume_not_the_grid(tmp_path):
    settings = PreprocessSettings(size=16, fov_mm=8.0)
    volume = write(tmp_path / "a" / "t2.nii.gz", intensities(), spacing=(0.5, 0.5, 3.0))
    case = Case("a", "site", volume, ())
    spec = str(volume_model_file(tmp_path))
    cache = tmp_path / "cache"
    image = read_volume(volume)
    grid = target_grid(image, settings)
    first = slice_grid_probabilities(load_volume_model(spec), case, grid, cache)
    assert first.shape == (5, 16, 16) and len(list(cache.rglob("*.npy"))) == 1
    again = slice_grid_probabilities(load_volume_model(spec), case, grid, cache)
    np.testing.assert_allclose(again, first, atol=1e-3)  # read back (float16)
    assert len(list(cache.rglob("*.npy"))) == 1
    body = target_grid(image, PreprocessSettings(size=8, fov_mm=8.0, crop_centre="body"))
    other = slice_grid_probabilities(load_volume_model(spec), case, body, cache)
    assert other.shape == (5, 8, 8) and len(list(cache.rglob("*.npy"))) == 1  # any grid
    native = load_volume_model(spec).probabilities(image)
    np.testing.assert_allclose(other, to_slice_grid(native, image, body), atol=1e-3)
    export_scaling_model(tmp_path / "scale.onnx", 0.05, -2.0)  # same path, new weights
    changed = slice_grid_probabilities(load_volume_model(spec), case, grid, cache)
    assert len(list(cache.rglob("*.npy"))) == 2
    assert np.abs(changed - first).max() > 0.05
    write(volume, intensities(seed=3), spacing=(0.5, 0.5, 3.0))  # same path, new volume
    slice_grid_probabilities(load_volume_model(spec), case, grid, cache)
    assert len(list(cache.rglob("*.npy"))) == 3
