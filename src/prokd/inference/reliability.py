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
:func:`measure` computes the signals, :func:`judge` turns them into a verdict, so that a
study can re-judge stored signals at other thresholds. The thresholds come in strictness
levels (:data:`LEVELS`, lenient to strict); ``benchmarks/loso_protocols.py`` picks the
level on validation folds (:data:`CALIBRATED_LEVEL`), the gland volume range stays what
a gland can be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from prokd.data.preprocess import body_region
from prokd.inference.localise import GlandLocation
from prokd.inference.postprocess import GLAND_ML_RANGE

UNCERTAIN = (0.2, 0.8)  # probabilities counted as uncertain
NARROW_VIEW_MM = 100.0  # a view this narrow (left-right) that cuts the body shows no midline


@dataclass(frozen=True)
class ReliabilityThresholds:
    """Where each signal turns a volume unreliable."""

    mirror_dice: float  # below: the mirrored pass disagrees
    localiser_distance_mm: float  # above: the mask is not where the localiser put it
    localiser_volume_ratio: float  # fine / coarse gland volume beyond this either way
    uncertain_fraction: float  # above: uncertain voxels / mask voxels
    midline_offset_mm: float  # above: the mask is off the body's midline
    gland_ml: tuple[float, float] = GLAND_ML_RANGE


# Strictness levels, lenient to strict; level 2 is what was set beforehand from what a
# gland can be (issue 18).
LEVELS = (
    ReliabilityThresholds(0.6, 50.0, 8.0, 1.0, 45.0),
    ReliabilityThresholds(0.7, 40.0, 6.5, 0.8, 37.5),
    ReliabilityThresholds(0.8, 30.0, 5.0, 0.6, 30.0),
    ReliabilityThresholds(0.85, 25.0, 4.0, 0.5, 25.0),
    ReliabilityThresholds(0.9, 20.0, 3.0, 0.4, 20.0),
)
CALIBRATED_LEVEL = 2  # chosen on the validation folds of benchmarks/loso_protocols.py (nested run)


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


def midline_offset_mm(mask: np.ndarray, centroid: np.ndarray, axial: sitk.Image) -> float | None:
    """Left-right distance (mm) from the mask's ``centroid`` (physical point) to the body's
    centroid over the slices the mask occupies, in the axial view ``axial``; ``None``
    without a body, or when the body runs off both the left and the right edge of a view
    narrower than a pelvis (a sagittal slab resliced to axial): its centre is then the
    slab's, not the body's midline."""
    occupied = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    first, last = int(occupied[0]), int(occupied[-1])
    slab = axial[:, :, first : last + 1]
    body = body_region(slab)
    if body is None:
        return None
    width_mm = slab.GetSize()[0] * slab.GetSpacing()[0]
    if body.cut_left_and_right and width_mm < NARROW_VIEW_MM:
        return None
    body_point = np.array(slab.TransformContinuousIndexToPhysicalPoint((*body.centre_index, 0.0)))
    return float(abs(centroid[0] - body_point[0]))


def measure(
    mask: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None,
    location: GlandLocation | None,
    axial: sitk.Image,
) -> dict[str, float | bool | None]:
    """The signals of a mask (z, y, x, on the axial view ``axial``) from its probabilities,
    the mirrored pass's mask (made from its probabilities as the mask was, post-processing
    included) and the localiser's finding (either may be ``None``: not run); a signal that
    cannot be measured is absent or ``None``."""
    spacing = tuple(reversed(axial.GetSpacing()))
    gland_ml = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
    signals: dict[str, float | bool | None] = {
        "localiser_found": None if location is None else location.found,
        "gland_ml": round(gland_ml, 3),
    }
    if location is not None and location.found:
        signals["localiser_ml"] = round(location.coarse_ml, 3)
    if not mask.any():
        return signals
    if mirrored is not None:
        signals["mirror_dice"] = round(_overlap(mask > 0, mirrored > 0), 4)
    uncertain = (probabilities > UNCERTAIN[0]) & (probabilities < UNCERTAIN[1])
    signals["uncertain_fraction"] = round(float(uncertain.sum()) / float(mask.sum()), 4)
    centroid = _centroid_mm(mask, axial)
    if location is not None and location.found:
        distance = float(np.linalg.norm(centroid - np.array(location.centre)))
        signals["localiser_distance_mm"] = round(distance, 2)
        ratio = gland_ml / max(location.coarse_ml, 1e-3)
        signals["localiser_volume_ratio"] = round(ratio, 3)
    offset = midline_offset_mm(mask, centroid, axial)
    signals["midline_offset_mm"] = None if offset is None else round(offset, 2)
    return signals


def judge(
    signals: dict[str, float | bool | None], thresholds: ReliabilityThresholds | None = None
) -> Reliability:
    """The verdict on signals from :func:`measure` at ``thresholds`` (the calibrated level
    by default)."""
    limits = thresholds or LEVELS[CALIBRATED_LEVEL]
    reasons: list[str] = []
    if signals.get("localiser_found") is False:
        reasons.append("the localiser found no gland in the volume")
    gland_ml = float(signals["gland_ml"])
    if gland_ml == 0:
        reasons.append("the mask is empty")
        return Reliability(False, reasons, signals)
    low, high = limits.gland_ml
    if not low <= gland_ml <= high:
        reasons.append(f"gland volume {gland_ml:.1f} ml outside {low:g}-{high:g} ml")
    agreement = signals.get("mirror_dice")
    if agreement is not None and agreement < limits.mirror_dice:
        reasons.append(f"the mirrored image gives another mask (Dice {agreement:.2f})")
    fraction = float(signals["uncertain_fraction"])
    if fraction > limits.uncertain_fraction:
        reasons.append(f"uncertain voxels are {fraction:.0%} of the mask")
    distance = signals.get("localiser_distance_mm")
    if distance is not None and distance > limits.localiser_distance_mm:
        reasons.append(f"the mask is {distance:.0f} mm from where the localiser put the gland")
    ratio = signals.get("localiser_volume_ratio")
    if ratio is not None and not (
        1 / limits.localiser_volume_ratio <= ratio <= limits.localiser_volume_ratio
    ):
        reasons.append(
            f"the mask ({gland_ml:.0f} ml) and the localiser's gland "
            f"({float(signals['localiser_ml']):.0f} ml) differ in size"
        )
    offset = signals.get("midline_offset_mm")
    if offset is not None and offset > limits.midline_offset_mm:
        reasons.append(f"the mask is {offset:.0f} mm off the body's midline")
    return Reliability(not reasons, reasons, signals)


def assess(
    mask: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None,
    location: GlandLocation | None,
    axial: sitk.Image,
    thresholds: ReliabilityThresholds | None = None,
) -> Reliability:
    """:func:`judge` of :func:`measure`: the verdict on one mask."""
    return judge(measure(mask, probabilities, mirrored, location, axial), thresholds)
