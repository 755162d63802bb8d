"""Volume models' probabilities on a student's slice grid, cached per volume.

A volume model (:mod:`prokd.inference.volume_models`: TAPS, a 3D ONNX model, a callable, an
exported slice model) maps a T2 volume to gland probabilities on that volume's own grid.
:func:`slice_grid_probabilities` resamples them onto the slice grid a student trains on, and
caches them per volume, keyed by the model's fingerprint, the contents of the volume's files
and the slice grid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.io import image_from_array, read_volume, volume_sha256
from prokd.data.layouts import Case
from prokd.data.preprocess import PreprocessSettings, resample_to_grid, target_grid
from prokd.inference.volume_models import VolumeModel
from prokd.io_atomic import atomic_path


def to_slice_grid(
    probabilities: np.ndarray, image: sitk.Image, settings: PreprocessSettings
) -> np.ndarray:
    """Probabilities (z, y, x) on ``image``'s grid resampled (linearly, in physical space)
    onto the slice grid prokd's preprocessing gives that image: (z, size, size) float32, 0
    outside the volume."""
    source = image_from_array(probabilities.astype(np.float32), image)
    resampled = resample_to_grid(source, target_grid(image, settings), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(resampled)


def slice_grid_probabilities(
    teacher: VolumeModel, case: Case, settings: PreprocessSettings, cache_dir: str | Path
) -> np.ndarray:
    """A teacher's probabilities for one case on the student's slice grid, computed once and
    cached under ``cache_dir`` (float16), keyed by the teacher's fingerprint (its model
    file's contents), the contents of every data file of the volume and the slice grid (the
    settings' size, field of view and crop centre: the intensity settings do not change the
    maps, so they share an entry)."""
    key = hashlib.sha256(
        "\n".join(
            [
                teacher.fingerprint(),
                volume_sha256(case.image),
                str(case.image_channel),
                settings.grid_only().fingerprint(),
            ]
        ).encode()
    ).hexdigest()
    path = Path(cache_dir) / "volume-teachers" / f"{key}.npy"
    if path.exists():
        return np.load(path).astype(np.float32)
    image = read_volume(case.image, case.image_channel)
    on_grid = to_slice_grid(teacher.probabilities(image), image, settings)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, on_grid.astype(np.float16))
    return on_grid
