"""Facts of a (z, y, x) mask that several stages read (its volume and the slices it holds)
and the connected-component operations that prediction runs on masks.

The components and hole filling are SimpleITK's connected components rather than
scipy.ndimage's, which give the same masks (tested against them) but whose import costs a
prediction's cold start about 0.3 s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk


def gland_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume (ml) of the mask's non-zero voxels, each ``prod(spacing_mm)`` cubic mm."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_mm)) / 1000.0


def occupied_slices(mask: np.ndarray) -> np.ndarray:
    """Indices, along the first axis, of the slices with a non-zero voxel (sorted)."""
    return np.flatnonzero(np.asarray(mask).reshape(len(mask), -1).any(axis=1))


def _labels(mask: np.ndarray, fully_connected: bool, by_size: bool) -> np.ndarray:
    image = sitk.GetImageFromArray((np.asarray(mask) != 0).astype(np.uint8))
    labelled = sitk.ConnectedComponent(image, fully_connected)
    if by_size:
        labelled = sitk.RelabelComponent(labelled, 0, True)
    return sitk.GetArrayFromImage(labelled)


def components(mask: np.ndarray, fully_connected: bool = False) -> tuple[np.ndarray, int]:
    """The connected components of a mask's non-zero voxels, numbered 1, 2, ... from the
    largest, and how many there are; ``fully_connected``: voxels that share an edge or a
    corner touch too (26-connectivity in 3D), else only those that share a face."""
    labels = _labels(mask, fully_connected, by_size=True)
    return labels, int(labels.max(initial=0))


def component_count(mask: np.ndarray, fully_connected: bool = False) -> int:
    """How many connected components the mask's non-zero voxels form (as :func:`components`
    counts them, without numbering them by size)."""
    return int(_labels(mask, fully_connected, by_size=False).max(initial=0))


def largest_component(mask: np.ndarray, fully_connected: bool = False) -> np.ndarray:
    """The largest connected component of a mask's non-zero voxels (boolean; all false for
    an empty mask)."""
    labels, count = components(mask, fully_connected)
    return labels == 1 if count else np.zeros(labels.shape, dtype=bool)


def fill_holes(mask: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """The mask (boolean) with every background region that does not reach the array's
    border (face-connected) filled, as ``scipy.ndimage.binary_fill_holes`` fills it;
    ``in_plane``: each slice along the first axis on its own."""
    inside = np.asarray(mask) != 0
    border_axes = range(inside.ndim)
    stacked = inside
    if in_plane:
        # A layer of foreground before, between and after the slices: no background path
        # runs from one slice to another, and no slice's hole reaches the first axis's ends.
        stacked = np.ones((2 * len(inside) + 1, *inside.shape[1:]), dtype=bool)
        stacked[1::2] = inside
        border_axes = range(1, inside.ndim)
    labels = _labels(~stacked, fully_connected=False, by_size=False)
    reaches_border = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    reaches_border[0] = True  # label 0: the mask itself
    for axis in border_axes:
        for end in (0, -1):
            reaches_border[labels.take(end, axis=axis)] = True
    holes = ~reaches_border[labels]
    return inside | (holes[1::2] if in_plane else holes)
