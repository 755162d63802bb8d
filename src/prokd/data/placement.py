"""The stages that place a volume on a model's slice grid, shared by prediction and by the
training cache, so that the two cannot place a volume differently.

:func:`axial_stage` computes, once, what every later stage reads: the volume's acquisition
plane (from its own axes), its axial view (the same voxels in LPS order, where masks and
QC live) and the source slices are cut from (that view, or an axial reslice of a sagittal
or coronal series). :func:`grid_stage` cuts the source to the slab a localiser keeps and
resamples it onto the slice grid, centred where the localiser put the gland. Between the
two, the localiser runs on ``source`` (:mod:`prokd.inference.localise` for prediction, the
cache's :class:`~prokd.data.cache.GlandLocator` for training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry
from prokd.data.planes import acquisition_plane, axial_reslice, check_segmentable
from prokd.data.preprocess import PreprocessSettings, axial_slab, axial_view, preprocess_volume


@dataclass(frozen=True)
class AxialVolume:
    """A volume as every stage after the first sees it.

    Attributes:
        image: the volume as read, on its own grid.
        axial: its axial view: the same voxels, permuted and flipped to LPS order.
        plane: the plane it was acquired in (``axial``, ``sagittal``, ``coronal``).
        source: what the slices are cut from: ``axial``, or an axial volume resliced from
            a sagittal or coronal series.
        source_mask: a reference mask on ``source``'s grid (training), or ``None``.
    """

    image: sitk.Image
    axial: sitk.Image
    plane: str
    source: sitk.Image
    source_mask: sitk.Image | None = None


@dataclass(frozen=True)
class SliceStack:
    """A volume on its slice grid: normalised slices (z, size, size) float32, the mask on
    them (uint8, or ``None`` without one) and the grid."""

    slices: np.ndarray
    mask: np.ndarray | None
    grid: Geometry


def axial_stage(
    image: sitk.Image, name: object = "image", mask: sitk.Image | None = None
) -> AxialVolume:
    """The first stage after reading: plane, axial view and source, computed once.

    Raises:
        DataError: naming ``name``, for an image no plane can serve (a single slice).
    """
    check_segmentable(image, name)
    plane = acquisition_plane(image)  # from the file's own axes, which carry the acquisition
    axial = axial_view(image)
    if plane == "axial":
        return AxialVolume(image, axial, plane, axial, None if mask is None else axial_view(mask))
    source = axial_reslice(axial)
    source_mask = None
    if mask is not None:
        source_mask = sitk.Resample(
            mask, source, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID()
        )
    return AxialVolume(image, axial, plane, source, source_mask)


def grid_stage(
    volume: AxialVolume,
    settings: PreprocessSettings,
    centre: tuple[float, float, float] | None = None,
    kept: tuple[int, int] | None = None,
) -> SliceStack:
    """The source cut to the axial slices ``kept`` (all for ``None``) and resampled onto
    the slice grid ``settings`` place, centred on ``centre`` (a physical point; ``None``:
    as ``settings.crop_centre`` says)."""
    slab = axial_slab(volume.source, kept)
    mask = None if volume.source_mask is None else axial_slab(volume.source_mask, kept)
    slices, slice_mask, grid = preprocess_volume(slab, mask, settings, centre)
    return SliceStack(slices, slice_mask, grid)
