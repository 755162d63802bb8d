"""Find the gland in any field of view before segmenting it.

A coarse localiser (a slice model on 5 mm pixels over a 480 mm field of view: the bundled
``prostate-localiser``, trained on real scans and on large-field-of-view pelvis images
synthesised from label maps, or the model file that ``preprocess.localiser`` names)
segments the gland roughly in the whole volume; its largest
3D component gives the gland's centre, on which the fine model's slice grid is centred
(``crop_centre: gland``), and its slice range, outside which (with a margin) the fine
prediction is zero. No label is read. When the localiser finds nothing, the grid falls back
to the image centre and the location says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry, file_sha256
from prokd.data.masks import gland_ml, occupied_slices
from prokd.data.preprocess import (
    DEFAULT_LOCALISER,
    axial_slab,
    axial_view,
    preprocess_volume,
)
from prokd.errors import ConfigError, DataError
from prokd.inference.model_files import LoadedModel, load_model_file
from prokd.inference.postprocess import probability_mask
from prokd.inference.predict import predict_slices

COARSE_INPUT_MM = 2.0  # in-plane pixels the localiser's input is averaged down to first
SLICE_MARGIN_MM = 30.0  # slices kept beyond the localiser's first and last gland slice


@dataclass(frozen=True)
class GlandLocation:
    """Where the localiser put the gland in a volume's axial view.

    Attributes:
        centre: physical point (LPS, mm) of the coarse gland's centroid; ``None`` when the
            localiser found no gland.
        slices: first and last axial slice index to segment (the coarse gland's slices and
            :data:`SLICE_MARGIN_MM` beyond); every slice when nothing was found.
        coarse_ml: volume of the coarse gland (ml).
        coarse_mask: the coarse gland on the localiser's grid, (z, size, size) uint8.
        grid: the localiser's grid.
    """

    centre: tuple[float, float, float] | None
    slices: tuple[int, int]
    coarse_ml: float
    coarse_mask: np.ndarray
    grid: Geometry

    @property
    def found(self) -> bool:
        """Whether the localiser found a gland."""
        return self.centre is not None


@lru_cache(maxsize=4)
def load_localiser(spec: str = DEFAULT_LOCALISER) -> LoadedModel:
    """A localiser by bundled name or model file, loaded once per process.

    Raises:
        ConfigError: naming ``preprocess.localiser``, when no model is there.
    """
    try:
        return load_model_file(spec)
    except DataError as error:
        raise ConfigError(f"preprocess.localiser: {error}") from error


class ModelLocator:
    """A localiser as the preprocessing cache's :class:`~prokd.data.cache.GlandLocator`:
    training volumes are placed as ``prokd predict`` places a new scan, from the image
    alone. Its fingerprint is the localiser file's contents.

    Raises:
        ConfigError: naming ``preprocess.localiser``, when no model file is there.
    """

    def __init__(self, spec: str = DEFAULT_LOCALISER) -> None:
        self.spec = spec
        self.fingerprint = file_sha256(load_localiser(spec).path)  # a run folder's best.pt

    def locate(
        self, image: sitk.Image
    ) -> tuple[tuple[float, float, float] | None, tuple[int, int] | None]:
        """The gland's centre the localiser finds and the axial-view slices it keeps
        (``None``, ``None``: none found)."""
        location = locate_gland(image, load_localiser(self.spec))
        return (location.centre, location.slices) if location.found else (None, None)


def locate_gland(
    image: sitk.Image, localiser: LoadedModel | None = None, batch_size: int = 32
) -> GlandLocation:
    """Run the localiser (default: the bundled one) over the whole of ``image``."""
    localiser = localiser or load_localiser()
    axial = axial_view(image)
    # Averaged down to about COARSE_INPUT_MM pixels first: the low-pass to the localiser's
    # 5 mm pixels then costs little, whatever the scan's resolution.
    factor = max(1, int(COARSE_INPUT_MM // min(axial.GetSpacing()[:2])))
    coarse = sitk.BinShrink(sitk.Cast(axial, sitk.sitkFloat32), [factor, factor, 1])
    slices, _, grid = preprocess_volume(coarse, None, localiser.settings)
    probabilities = predict_slices(
        localiser.slice_model, slices, batch_size, localiser.settings.context_slices
    )
    mask = probability_mask(probabilities, localiser.threshold)
    count = len(mask)
    coarse_ml = gland_ml(mask, grid.spacing)
    if not mask.any():
        return GlandLocation(None, (0, count - 1), 0.0, mask, grid)
    z, y, x = np.argwhere(mask).mean(axis=0)
    reference = grid.apply_to(sitk.Image(grid.size, sitk.sitkUInt8))
    centre = reference.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
    occupied = occupied_slices(mask)
    margin = int(np.ceil(SLICE_MARGIN_MM / grid.spacing[2]))
    first, last = max(0, occupied[0] - margin), min(count - 1, occupied[-1] + margin)
    return GlandLocation(tuple(centre), (int(first), int(last)), coarse_ml, mask, grid)


def gland_slab(image: sitk.Image, location: GlandLocation | None) -> sitk.Image:
    """The axial view of ``image`` cut to the slices the location keeps (all of them
    without a gland): what the fine model segments and takes its statistics from, so that
    the rest of a long field of view neither costs time nor shifts the normalisation."""
    return axial_slab(image, location.slices if location is not None and location.found else None)
