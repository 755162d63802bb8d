"""Loading a case with validation: every problem becomes a one-line error naming the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry, non_finite_voxels, read_volume
from prokd.data.layouts import Case
from prokd.data.masks import gland_ml
from prokd.errors import DataError


@dataclass
class LoadedCase:
    """A validated case: the T2 image and whole-gland masks (uint8 0/1) on the image grid.

    An unlabelled case has no masks."""

    case: Case
    image: sitk.Image
    masks: list[sitk.Image]
    warnings: list[str] = field(default_factory=list)

    @property
    def mask(self) -> sitk.Image:
        """The reference (first reader's) whole-gland mask.

        Raises:
            DataError: the case is unlabelled.
        """
        if not self.masks:
            raise DataError(self.case.image, "no mask for this image (an unlabelled case)")
        return self.masks[0]

    def gland_volume_ml(self, reader: int = 0) -> float:
        """Whole-gland volume of a reader's mask in millilitres."""
        mask = self.masks[reader]
        return gland_ml(sitk.GetArrayViewFromImage(mask), mask.GetSpacing())


def check_finite(image: sitk.Image, path: Path, channel: int | None = None) -> None:
    """Raise ``DataError`` naming ``path`` if the volume has NaN/Inf voxels."""
    bad = non_finite_voxels(path, image, channel)
    if bad:
        raise DataError(path, f"contains {bad} NaN/Inf voxels")


def load_whole_gland_mask(case: Case, reader: int, image: sitk.Image) -> sitk.Image:
    """Read one reader's mask, check it against the image, return whole gland (label > 0) as uint8.

    Raises:
        DataError: missing/unreadable mask, geometry mismatch with the image, NaN or labels
            outside the layout's expected set.
    """
    path = case.masks[reader]
    mask = read_volume(path)
    problem = Geometry.of(image).mismatch(Geometry.of(mask))
    if problem:
        raise DataError(path, f"mask does not match image {case.image.name}: {problem}")
    check_finite(mask, path)
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    if not np.all(values == np.round(values)):
        raise DataError(path, "mask has non-integer values (expected integer labels)")
    unexpected = sorted(set(values.astype(int).tolist()) - case.allowed_labels)
    if unexpected:
        expected = sorted(case.allowed_labels)
        raise DataError(path, f"mask labels {unexpected} outside the expected set {expected}")
    gland = sitk.Cast(mask > 0, sitk.sitkUInt8)
    return Geometry.of(image).apply_to(gland)


def load_case(case: Case) -> LoadedCase:
    """Read and validate a case's image and every reader's mask (none for an unlabelled case).

    An empty mask is a warning (a volume may truly contain no gland), not an error.

    Raises:
        DataError: naming the offending file, for any unusable input.
    """
    image = read_volume(case.image, case.image_channel)
    check_finite(image, case.image, case.image_channel)
    masks = [load_whole_gland_mask(case, r, image) for r in range(len(case.masks))]
    loaded = LoadedCase(case, image, masks)
    for path, mask in zip(case.masks, masks, strict=True):
        if not sitk.GetArrayViewFromImage(mask).any():
            loaded.warnings.append(f"{path}: empty mask (no gland voxels)")
    return loaded
