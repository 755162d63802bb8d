"""Facts of a (z, y, x) mask that several stages read: its volume and the slices it holds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gland_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume (ml) of the mask's non-zero voxels, each ``prod(spacing_mm)`` cubic mm."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_mm)) / 1000.0


def occupied_slices(mask: np.ndarray) -> np.ndarray:
    """Indices, along the first axis, of the slices with a non-zero voxel (sorted)."""
    return np.flatnonzero(np.asarray(mask).reshape(len(mask), -1).any(axis=1))
