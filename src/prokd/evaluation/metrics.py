"""Per-volume segmentation metrics in millimetres, with defined values when empty.

The definitions are MONAI's, computed with numpy and scipy so that evaluation needs no torch
(``tests/evaluation/test_metrics.py`` checks them against MONAI itself):

- a mask's surface is its voxels that a 6-connected binary erosion removes (MONAI's
  ``get_mask_edges``), and a surface voxel's distance is the Euclidean distance in mm to the
  nearest surface voxel of the other mask (MONAI's ``get_surface_distance``);
- HD95 is the 95th percentile (linear interpolation) of the distances from each surface to
  the other, taken in both directions and the larger of the two kept
  (``compute_hausdorff_distance(percentile=95, directed=False)``);
- ASSD is the mean of both directions' distances together
  (``compute_average_surface_distance(symmetric=True)``).

Empty masks (defined, never NaN):
- both empty: Dice = IoU = 1, HD95 = ASSD = 0 (nothing to find, nothing found);
- exactly one empty: Dice = IoU = 0, HD95 = ASSD = the diagonal of the volume in mm (the
  largest distance possible in the volume, a penalty that keeps means finite).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from prokd.data.masks import gland_ml

METRIC_NAMES = ("dice", "iou", "hd95", "assd")


@dataclass(frozen=True)
class VolumeMetrics:
    """Metrics of one predicted mask against the truth, on the truth's grid."""

    dice: float
    iou: float
    hd95: float
    assd: float
    pred_ml: float
    true_ml: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict of every field."""
        return asdict(self)


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """The voxels of a boolean mask that a 6-connected erosion removes (outside the volume
    counts as background), as a boolean mask."""
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of ``pred`` to ``truth``'s surface, and back.

    Both masks are cropped to their joint bounding box first (the surface does not change).
    Each distance is read from the exact Euclidean distance transform of the other surface
    (the nearest surface voxel's distance, as a k-d tree finds it, in time linear in the
    box: a noisy mask of many surface voxels costs no more than a clean one).
    """
    both = np.argwhere(pred | truth)
    box = tuple(slice(a, b + 1) for a, b in zip(both.min(0), both.max(0), strict=True))
    surface_pred, surface_truth = surface_voxels(pred[box]), surface_voxels(truth[box])
    return _distances_to(surface_truth, surface_pred, spacing_zyx), _distances_to(
        surface_pred, surface_truth, spacing_zyx
    )


def _distances_to(
    surface: np.ndarray, points: np.ndarray, spacing_zyx: tuple[float, ...]
) -> np.ndarray:
    """Distance in mm from each voxel of ``points`` to the nearest voxel of ``surface``
    (both boolean masks of one box)."""
    to_surface = ndimage.distance_transform_edt(~surface, sampling=spacing_zyx)
    return to_surface[points]


def volume_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, ...]
) -> VolumeMetrics:
    """Dice, IoU, HD95 and ASSD (mm) and both gland volumes (ml) of 3D boolean masks.

    Args:
        pred: predicted mask (z, y, x).
        truth: reference mask, same shape.
        spacing_zyx: voxel size in mm in array order.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    pred_ml, true_ml = gland_ml(pred, spacing_zyx), gland_ml(truth, spacing_zyx)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return VolumeMetrics(1.0, 1.0, 0.0, 0.0, pred_ml, true_ml)
    if has_pred != has_truth:
        diagonal = float(np.linalg.norm(np.array(pred.shape) * np.array(spacing_zyx)))
        return VolumeMetrics(0.0, 0.0, diagonal, diagonal, pred_ml, true_ml)
    pred, truth = pred.astype(bool), truth.astype(bool)
    distances = surface_distances(pred, truth, spacing_zyx)
    hd95 = max(float(np.quantile(d, 0.95)) for d in distances)
    assd = float(np.concatenate(distances).mean())
    overlap = int(np.logical_and(pred, truth).sum())
    union = int(np.logical_or(pred, truth).sum())
    return VolumeMetrics(dice_score(pred, truth), overlap / union, hd95, assd, pred_ml, true_ml)
