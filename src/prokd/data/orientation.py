"""Which plane a volume was acquired in: one rule for DICOM series and volume files alike.

The slice axis is the third voxel axis (the slice normal of a DICOM series, the slice axis
of files converted from one), unless another axis is clearly thicker (a file that stores
its axes in another order); the plane is the one whose normal that axis points most along.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLANES = ("sagittal", "coronal", "axial")  # by the patient axis (L, P, S) of the slice normal
THICKER = 1.5  # another axis is the slice axis only when this much thicker than the third


def slice_axis(spacing: Sequence[float]) -> int:
    """The voxel axis (0, 1 or 2, in x, y, z order) the slices are stacked along."""
    spacing = np.asarray(spacing, float)
    thickest = int(np.argmax(spacing))
    return thickest if spacing[thickest] > THICKER * spacing[2] else 2


def plane(direction: Sequence[float], spacing: Sequence[float]) -> str:
    """``axial``, ``sagittal`` or ``coronal`` for a volume of this direction (3x3, row-major,
    as SimpleITK gives it) and voxel spacing."""
    normal = np.asarray(direction, float).reshape(3, 3)[:, slice_axis(spacing)]
    return PLANES[int(np.argmax(np.abs(normal)))]
