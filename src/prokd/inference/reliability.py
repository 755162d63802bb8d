"""Whether a predicted mask can be trusted, from the image and the prediction alone.

Each signal is a fact of the prediction that a wrong mask tends to break:

- the localiser found a gland, the fine mask sits where it put it, and the two glands
  are of a like size;
- the mask of the left-right mirrored slices agrees with the mask (a test-time check);
- the mask is confident: few voxels near the threshold for its size;
- the mask lies near the body's left-right midline, where the prostate is, over the
  slices it occupies (a blob in a thigh or a hip is far from it);
- the gland volume is in a plausible range.

A volume is unreliable when any signal crosses its threshold; the reasons name each one.
The thresholds (:class:`ReliabilityThresholds`) are set beforehand from what a gland can
be; calibrating them on validation folds, with the catch and false-alarm rates that gives,
is the job of the study that measures them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from prokd.data.preprocess import body_centre_index
from prokd.inference.localise import GlandLocation
from prokd.inference.postprocess import GLAND_ML_RANGE

UNCERTAIN = (0.2, 0.8)  # probabilities counted as uncertain


@dataclass(frozen=True)
class ReliabilityThresholds:
    """Where each signal turns a volume unreliable."""

    mirror_dice: float = 0.8  # below: the mirrored pass disagrees
    localiser_distance_mm: float = 30.0  # above: the mask is not where the localiser put it
    localiser_volume_ratio: float = 5.0  # fine / coarse gland volume beyond this either way
    uncertain_fraction: float = 0.6  # above: uncertain voxels / mask voxels
    midline_offset_mm: float = 30.0  # above: the mask is off the body's midline
    gland_ml: tuple[float, float] = GLAND_ML_RANGE


@dataclass
class Reliability:
    """The verdict, its reasons and the signal values behind them (for the QC sidecar)."""

    reliable: bool
    reasons: list[str]
    signals: dict[str, float | bool | None]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def _centroid_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    z, y, x = np.argwhere(mask).mean(axis=0)
    return np.array(image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z))))


def midline_offset_mm(mask: np.ndarray, axial: sitk.Image) -> float | None:
    """Left-right distance (mm) from the mask's centroid to the body's centroid over the
    slices the mask occupies, in the axial view ``axial``; ``None`` without a body."""
    occupied = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    first, last = int(occupied[0]), int(occupied[-1])
    slab = axial[:, :, first : last + 1]
    body = body_centre_index(slab)
    if body is None:
        return None
    body_point = np.array(slab.TransformContinuousIndexToPhysicalPoint((*body, 0.0)))
    return float(abs(_centroid_mm(mask, axial)[0] - body_point[0]))


def assess(
    mask: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None,
    location: GlandLocation | None,
    axial: sitk.Image,
    thresholds: ReliabilityThresholds | None = None,
) -> Reliability:
    """Judge a mask (z, y, x, on the axial view ``axial``) from its probabilities, the
    mirrored pass's probabilities and the localiser's finding (either may be ``None``: not
    run)."""
    limits = thresholds or ReliabilityThresholds()
    reasons: list[str] = []
    spacing = tuple(reversed(axial.GetSpacing()))
    gland_ml = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
    signals: dict[str, float | bool | None] = {"localiser_found": None}
    if location is not None:
        signals["localiser_found"] = location.found
        if not location.found:
            reasons.append("the localiser found no gland in the volume")
    if not mask.any():
        reasons.append("the mask is empty")
        return Reliability(False, reasons, signals)
    low, high = limits.gland_ml
    if not low <= gland_ml <= high:
        reasons.append(f"gland volume {gland_ml:.1f} ml outside {low:g}-{high:g} ml")
    if mirrored is not None:
        agreement = _overlap(mask > 0, mirrored >= 0.5)
        signals["mirror_dice"] = round(agreement, 4)
        if agreement < limits.mirror_dice:
            reasons.append(f"the mirrored image gives another mask (Dice {agreement:.2f})")
    uncertain = (probabilities > UNCERTAIN[0]) & (probabilities < UNCERTAIN[1])
    fraction = float(uncertain.sum()) / float(mask.sum())
    signals["uncertain_fraction"] = round(fraction, 4)
    if fraction > limits.uncertain_fraction:
        reasons.append(f"uncertain voxels are {fraction:.0%} of the mask")
    if location is not None and location.found:
        distance = float(np.linalg.norm(_centroid_mm(mask, axial) - np.array(location.centre)))
        signals["localiser_distance_mm"] = round(distance, 2)
        if distance > limits.localiser_distance_mm:
            reasons.append(f"the mask is {distance:.0f} mm from where the localiser put the gland")
        ratio = gland_ml / max(location.coarse_ml, 1e-3)
        signals["localiser_volume_ratio"] = round(ratio, 3)
        if not 1 / limits.localiser_volume_ratio <= ratio <= limits.localiser_volume_ratio:
            reasons.append(
                f"the mask ({gland_ml:.0f} ml) and the localiser's gland "
                f"({location.coarse_ml:.0f} ml) differ in size"
            )
    offset = midline_offset_mm(mask, axial)
    signals["midline_offset_mm"] = None if offset is None else round(offset, 2)
    if offset is not None and offset > limits.midline_offset_mm:
        reasons.append(f"the mask is {offset:.0f} mm off the body's midline")
    return Reliability(not reasons, reasons, signals)
