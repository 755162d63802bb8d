"""Per-volume segmentation metrics in millimetres (MONAI), with defined values when empty.

HD95 is MONAI's: the 95th percentile of the distances from each surface voxel of one mask to
the other surface, taken in both directions and the larger of the two kept
(``compute_hausdorff_distance(percentile=95, directed=False)``). ASSD is MONAI's symmetric
average surface distance (``compute_average_surface_distance(symmetric=True)``): the mean of
both directions' distances together. Both come from one call to MONAI's
``get_edge_surface_distance`` (the surface distances are computed once, not twice).

Empty masks (defined, never NaN):
- both empty: Dice = IoU = 1, HD95 = ASSD = 0 (nothing to find, nothing found);
- exactly one empty: Dice = IoU = 0, HD95 = ASSD = the diagonal of the volume in mm (the
  largest distance possible in the volume, a penalty that keeps means finite).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from monai.metrics.utils import get_edge_surface_distance

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


def _onehot(mask: np.ndarray) -> torch.Tensor:
    fg = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~fg, fg])[None].float()


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
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    pred_ml, true_ml = float(pred.sum()) * voxel_ml, float(truth.sum()) * voxel_ml
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return VolumeMetrics(1.0, 1.0, 0.0, 0.0, pred_ml, true_ml)
    if has_pred != has_truth:
        diagonal = float(np.linalg.norm(np.array(pred.shape) * np.array(spacing_zyx)))
        return VolumeMetrics(0.0, 0.0, diagonal, diagonal, pred_ml, true_ml)
    p, t = _onehot(pred), _onehot(truth)
    spacing = [float(s) for s in spacing_zyx]
    _, distances, _ = get_edge_surface_distance(
        p[0, 1], t[0, 1], spacing=spacing, symmetric=True, warn_empty=False
    )
    hd95 = max(float(torch.quantile(d, 0.95)) for d in distances)
    assd = float(torch.cat(distances).mean())
    return VolumeMetrics(
        float(compute_dice(p, t, include_background=False)),
        float(compute_iou(p, t, include_background=False)),
        hd95,
        assd,
        pred_ml,
        true_ml,
    )
