"""Whether a predicted mask can be trusted, from the image and the prediction alone.

Each signal is a fact of the prediction that a wrong mask tends to break:

- the localiser found a gland, the fine mask sits where it put it, and the two glands
  are of a like size;
- the mask of the left-right mirrored slices agrees with the mask (a test-time check);
- the mask is confident: few voxels near the threshold for its size;
- the mask lies near the body's left-right midline, where the prostate is, over the
  slices it occupies (a blob in a thigh or a hip is far from it);
- the gland volume is in a plausible range.

A volume is unreliable when any signal crosses its limit; the reasons name each one.
:func:`measure` computes the signals, :func:`judge` turns them into a verdict, so that a
study can re-judge stored signals at other limits. Each signal is a class of
:data:`SIGNALS` (what it measures, its limit at each strictness level, its reason);
:data:`LEVELS` gathers the limits per level (lenient to strict);
``benchmarks/loso_protocols.py`` picks the level on validation folds
(:data:`CALIBRATED_LEVEL`), the gland volume range stays what a gland can be.
:func:`thresholds_table` writes the README's and the model card's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import SimpleITK as sitk

from prokd.data.masks import gland_ml, occupied_slices
from prokd.data.preprocess import body_region
from prokd.inference.localise import GlandLocation
from prokd.inference.postprocess import GLAND_ML_RANGE

UNCERTAIN = (0.2, 0.8)  # probabilities counted as uncertain
NARROW_VIEW_MM = 100.0  # a view this narrow (left-right) that cuts the body shows no midline


class Signal:
    """One fact of a prediction that a wrong mask tends to break: the key :func:`measure`
    stores it under, what it measures, its limit at each strictness level (lenient to
    strict), and the reason a mask beyond the limit is given."""

    key: ClassVar[str]
    measures: ClassVar[str]
    limits: ClassVar[tuple[float, ...]]

    def fails(self, value: float, limit: float) -> bool:
        """Whether ``value`` is beyond ``limit``."""
        raise NotImplementedError

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        """Why a mask with this value is not reliable."""
        raise NotImplementedError

    def rule(self, limit: float) -> str:
        """What a reliable mask's value is, at ``limit`` (for the documentation)."""
        raise NotImplementedError


class LocaliserDistance(Signal):
    key = "localiser_distance_mm"
    measures = "distance from the mask's centroid to the gland the localiser found"
    limits = (50.0, 40.0, 30.0, 25.0, 20.0)

    def fails(self, value: float, limit: float) -> bool:
        return value > limit

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        return f"the mask is {value:.0f} mm from where the localiser put the gland"

    def rule(self, limit: float) -> str:
        return f"at most {limit:g} mm"


class LocaliserVolumeRatio(Signal):
    key = "localiser_volume_ratio"
    measures = "the mask's volume over the localiser's gland volume"
    limits = (8.0, 6.5, 5.0, 4.0, 3.0)

    def fails(self, value: float, limit: float) -> bool:
        return not 1 / limit <= value <= limit

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        return (
            f"the mask ({float(signals['gland_ml']):.0f} ml) and the localiser's gland "
            f"({float(signals['localiser_ml']):.0f} ml) differ in size"
        )

    def rule(self, limit: float) -> str:
        return f"between 1/{limit:g} and {limit:g}"


class MirrorAgreement(Signal):
    key = "mirror_dice"
    measures = "Dice of the mask and the mask of the left-right mirrored slices, mirrored back"
    limits = (0.6, 0.7, 0.8, 0.85, 0.9)

    def fails(self, value: float, limit: float) -> bool:
        return value < limit

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        return f"the mirrored image gives another mask (Dice {value:.2f})"

    def rule(self, limit: float) -> str:
        return f"at least {limit:g}"


class UncertainFraction(Signal):
    key = "uncertain_fraction"
    measures = f"voxels of probability {UNCERTAIN[0]:g}-{UNCERTAIN[1]:g}, as a share of the mask's"
    limits = (1.0, 0.8, 0.6, 0.5, 0.4)

    def fails(self, value: float, limit: float) -> bool:
        return value > limit

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        return f"uncertain voxels are {value:.0%} of the mask"

    def rule(self, limit: float) -> str:
        return f"at most {limit:.0%}"


class MidlineOffset(Signal):
    key = "midline_offset_mm"
    measures = (
        "left-right distance from the mask's centroid to the body's over its slices "
        f"(not measured on a view under {NARROW_VIEW_MM:g} mm wide that cuts the body on "
        "both sides)"
    )
    limits = (45.0, 37.5, 30.0, 25.0, 20.0)

    def fails(self, value: float, limit: float) -> bool:
        return value > limit

    def reason(self, value: float, signals: dict[str, float | bool | None]) -> str:
        return f"the mask is {value:.0f} mm off the body's midline"

    def rule(self, limit: float) -> str:
        return f"at most {limit:g} mm"


# The signals a verdict reads, in the order its reasons are given.
SIGNALS: tuple[Signal, ...] = (
    MirrorAgreement(),
    UncertainFraction(),
    LocaliserDistance(),
    LocaliserVolumeRatio(),
    MidlineOffset(),
)
# Strictness levels, lenient to strict: each signal's limit. Level 2 is what was set
# beforehand from what a gland can be (issue 18).
LEVELS: tuple[dict[str, float], ...] = tuple(
    {signal.key: signal.limits[level] for signal in SIGNALS} for level in range(5)
)
CALIBRATED_LEVEL = 2  # chosen on the validation folds of benchmarks/loso_protocols.py (nested run)


def thresholds_table(level: int = CALIBRATED_LEVEL) -> str:
    """The markdown table of what a reliable mask satisfies at ``level``: the README and
    the model card hold it (a test checks that they do)."""
    low, high = GLAND_ML_RANGE
    rows = [
        "| signal | what it measures | a reliable mask |",
        "|---|---|---|",
        "| `localiser_found` | whether the localiser found a gland in the whole volume | found |",
        f"| `gland_ml` | the mask's volume | {low:g}-{high:g} ml, not empty |",
    ]
    rows += [f"| `{s.key}` | {s.measures} | {s.rule(LEVELS[level][s.key])} |" for s in SIGNALS]
    return "\n".join(rows)


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
    occupied = occupied_slices(mask)
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
    volume_ml = gland_ml(mask, spacing)
    signals: dict[str, float | bool | None] = {
        "localiser_found": None if location is None else location.found,
        "gland_ml": round(volume_ml, 3),
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
        ratio = volume_ml / max(location.coarse_ml, 1e-3)
        signals["localiser_volume_ratio"] = round(ratio, 3)
    offset = midline_offset_mm(mask, centroid, axial)
    signals["midline_offset_mm"] = None if offset is None else round(offset, 2)
    return signals


def judge(
    signals: dict[str, float | bool | None], limits: dict[str, float] | None = None
) -> Reliability:
    """The verdict on signals from :func:`measure` at a level's ``limits`` (one of
    :data:`LEVELS`; the calibrated level by default)."""
    limits = limits or LEVELS[CALIBRATED_LEVEL]
    reasons: list[str] = []
    if signals.get("localiser_found") is False:
        reasons.append("the localiser found no gland in the volume")
    volume_ml = float(signals["gland_ml"])
    if volume_ml == 0:
        reasons.append("the mask is empty")
        return Reliability(False, reasons, signals)
    low, high = GLAND_ML_RANGE
    if not low <= volume_ml <= high:
        reasons.append(f"gland volume {volume_ml:.1f} ml outside {low:g}-{high:g} ml")
    for signal in SIGNALS:
        value = signals.get(signal.key)
        if value is not None and signal.fails(float(value), limits[signal.key]):
            reasons.append(signal.reason(float(value), signals))
    return Reliability(not reasons, reasons, signals)


def assess(
    mask: np.ndarray,
    probabilities: np.ndarray,
    mirrored: np.ndarray | None,
    location: GlandLocation | None,
    axial: sitk.Image,
    limits: dict[str, float] | None = None,
) -> Reliability:
    """:func:`judge` of :func:`measure`: the verdict on one mask."""
    return judge(measure(mask, probabilities, mirrored, location, axial), limits)
