"""Volume models' probabilities on a student's slice grid, cached per volume.

A volume model (:mod:`prokd.inference.volume_models`: TAPS, a 3D ONNX model, a callable, an
exported slice model) maps a T2 volume to gland probabilities on that volume's own grid.
:func:`slice_grid_probabilities` resamples them onto the slice grid a student trains on; the
model's output is cached per volume on the volume's own grid, keyed by the model's
fingerprint and the contents of the volume's files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry, image_from_array, read_volume, volume_sha256
from prokd.data.layouts import Case
from prokd.data.preprocess import resample_to_grid
from prokd.inference.volume_models import VolumeModel
from prokd.io_atomic import atomic_path


def to_slice_grid(probabilities: np.ndarray, image: sitk.Image, grid: Geometry) -> np.ndarray:
    """Probabilities (z, y, x) on ``image``'s grid resampled (linearly, in physical space)
    onto a slice grid: (z, size, size) float32, 0 outside the volume."""
    source = image_from_array(probabilities.astype(np.float32), image)
    return sitk.GetArrayFromImage(resample_to_grid(source, grid, sitk.sitkLinear, 0.0))


def native_probabilities(
    teacher: VolumeModel, case: Case, cache_dir: str | Path
) -> tuple[np.ndarray, sitk.Image]:
    """A teacher's probabilities for one case on the volume's own grid, with the image.

    The teacher runs once per volume: its output is cached under ``cache_dir`` (float16),
    keyed by the teacher's fingerprint (its model file's contents) and the contents of the
    volume's image file and channel.
    """
    key = hashlib.sha256(
        "\n".join(
            [teacher.fingerprint(), volume_sha256(case.image), str(case.image_channel)]
        ).encode()
    ).hexdigest()
    path = Path(cache_dir) / "volume-teachers" / f"native-{key}.npy"
    image = read_volume(case.image, case.image_channel)
    if path.exists():
        return np.load(path).astype(np.float32), image
    native = teacher.probabilities(image)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, native.astype(np.float16))
    return native, image


def slice_grid_probabilities(
    teacher: VolumeModel, case: Case, grid: Geometry, cache_dir: str | Path
) -> np.ndarray:
    """A teacher's probabilities for one case on a slice grid (the grid a student's volume
    was preprocessed onto), from :func:`native_probabilities`: any slice grid, placed
    anywhere, reads the same cache entry."""
    native, image = native_probabilities(teacher, case, cache_dir)
    return to_slice_grid(native, image, grid)
