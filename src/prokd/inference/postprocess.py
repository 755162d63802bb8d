"""Post-processing of predicted masks and output quality control.

The connected components and hole filling are :mod:`prokd.data.masks`'s (MONAI's transforms
for this need scikit-image, which prokd does not otherwise need).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from prokd.data.masks import (
    component_count,
    fill_holes,
    gland_ml,
    largest_component,
    occupied_slices,
)

GLAND_ML_RANGE = (10.0, 150.0)


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (26-connectivity), then fill its holes.

    Works inside the foreground's bounding box grown by one voxel (a large field of view
    costs no more than its gland): background outside that box reaches the volume's border,
    so no hole lies there and the result is the same as on the whole volume.
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    foreground = np.argwhere(mask > 0)
    if len(foreground) == 0:
        return out
    low = np.maximum(foreground.min(axis=0) - 1, 0)
    high = np.minimum(foreground.max(axis=0) + 2, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    out[box] = fill_holes(largest_component(mask[box], fully_connected=True))
    return out


GLAND_THRESHOLD = 0.5  # the gland probability a voxel is in the mask from (a model's default)


def probability_mask(
    probabilities: np.ndarray, threshold: float, postprocess: bool = True
) -> np.ndarray:
    """The voxels whose probability is at or above ``threshold`` as a uint8 mask,
    post-processed by :func:`postprocess_mask` unless ``postprocess`` is false: how every
    model's probabilities become its mask (prokd's students and volume models alike)."""
    mask = (probabilities >= threshold).astype(np.uint8)
    return postprocess_mask(mask) if postprocess else mask


NOT_ASSESSED = "the mask's reliability was not assessed"


@dataclass
class MaskQC:
    """Quality-control facts of an output mask and the warnings they raise; ``reliable``,
    its ``reasons`` and the ``signals`` behind them come from
    :func:`prokd.inference.reliability.assess` (until then a mask is not reliable, for the
    reason :data:`NOT_ASSESSED`), ``plane`` is the series' acquisition plane."""

    gland_ml: float
    components: int
    touches_border: bool
    slice_gaps: int
    warnings: list[str] = field(default_factory=list)
    reliable: bool = False  # until assessed: never trusted by default
    reasons: list[str] = field(default_factory=lambda: [NOT_ASSESSED])
    signals: dict[str, float | bool | None] = field(default_factory=dict)
    plane: str = "axial"

    def as_dict(self) -> dict[str, object]:
        """Plain dict for the JSON sidecar."""
        return asdict(self)


def quality_control(mask: np.ndarray, spacing_zyx: tuple[float, ...]) -> MaskQC:
    """Check a (z, y, x) mask: gland volume in range, border contact, slice gaps, components."""
    volume_ml = gland_ml(mask, spacing_zyx)
    count = component_count(mask, fully_connected=True)
    border = mask.copy()
    border[1:-1, 1:-1, 1:-1] = 0
    touches = bool(border.any())
    occupied = occupied_slices(mask)
    gaps = int(np.sum(np.diff(occupied) > 1)) if len(occupied) > 1 else 0
    qc = MaskQC(volume_ml, count, touches, gaps)
    low, high = GLAND_ML_RANGE
    if not low <= volume_ml <= high:
        qc.warnings.append(f"gland volume {volume_ml:.1f} ml outside {low:g}-{high:g} ml")
    if touches:
        qc.warnings.append("mask touches the volume border")
    if gaps:
        qc.warnings.append(f"{gaps} gap(s) between mask slices")
    if count > 1:
        qc.warnings.append(f"{count} separate components")
    return qc
