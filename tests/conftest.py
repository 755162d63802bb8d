"""Shared test helpers: tiny volumes written to disk with chosen geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def assert_same_grid(mask: sitk.Image, image: sitk.Image) -> None:
    """A predicted mask is uint8 0/1 on exactly the image's grid."""
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}


def make_volume(
    array: np.ndarray,
    spacing=(0.5, 0.5, 3.0),
    origin=(0.0, 0.0, 0.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> sitk.Image:
    """A SimpleITK image of a (z, y, x) array with the given geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


def write(path: Path, array: np.ndarray, **geometry) -> Path:
    """Write a (z, y, x) array as a volume file with the given geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(make_volume(array, **geometry), str(path))
    return path


def ball_case(shape=(6, 16, 16), radius=5.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright ball and the ball's mask, (z, y, x)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    dist = np.sqrt(((z - centre[0]) * 3) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    mask = (dist < radius).astype(np.uint8)
    image = (100 + 50 * mask + rng.normal(0, 5, shape)).astype(np.float32)
    return image, mask


def tiny_phantom(folder: Path, sites: int, cases_per_site: int, seed: int) -> Path:
    """A small synthetic benchmark in the six-site layout under ``folder``."""
    from prokd.data.phantom import write_phantom

    root = folder / "six-site"
    write_phantom(root, sites=sites, cases_per_site=cases_per_site, seed=seed)
    return root


@pytest.fixture
def shared_data() -> Path:
    """The read-only real data folder; skips the test when it is not beside the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA
