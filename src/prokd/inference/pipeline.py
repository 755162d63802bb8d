"""Prediction as one straight line of named stages, each taking the previous one's result:

read -> axial view (once) -> locate -> place the grid -> infer slices -> back to the input
grid -> QC -> write

:func:`read_stage` reads an input; :func:`~prokd.data.placement.axial_stage` computes the
volume's plane, axial view and source once, and the :class:`~prokd.data.placement.AxialVolume`
it returns carries that geometry to the last stage; :func:`locate_stage` runs the localiser
on the source; :func:`~prokd.data.placement.grid_stage` places the slice grid (the training
cache runs these same stages); :func:`infer_stage` runs the model on the slices (and on
their left-right mirror, a test-time check); :func:`back_stage` maps the probabilities
back onto the volume; :func:`qc_stage` makes the mask and judges it on the axial view.
Writing is the caller's (:mod:`prokd.inference.segment`, :mod:`prokd.serve`).
:func:`segment_image` runs the stages after reading in order; :func:`place` and
:func:`predict_volume` are the same stages for evaluation and teachers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry
from prokd.data.placement import AxialVolume, SliceStack, axial_stage, grid_stage
from prokd.data.preprocess import PreprocessSettings, file_axes, to_original_grid
from prokd.inference.localise import GlandLocation, load_localiser, locate_gland
from prokd.inference.model_files import LoadedModel
from prokd.inference.postprocess import (
    GLAND_THRESHOLD,
    MaskQC,
    probability_mask,
    quality_control,
)
from prokd.inference.predict import SliceModel, predict_slices
from prokd.inference.reliability import assess

if TYPE_CHECKING:
    from torch import nn

    from prokd.data.inputs import VolumeInput


def read_stage(volume: VolumeInput) -> sitk.Image:
    """The input volume as a 3D image (checked for NaN/Inf), from a file or a series."""
    return volume.read()


def locate_stage(volume: AxialVolume, settings: PreprocessSettings) -> GlandLocation | None:
    """The gland the localiser ``settings`` name finds in the volume's source (``None``
    unless ``settings.crop_centre`` is ``gland``)."""
    if settings.crop_centre != "gland":
        return None
    return locate_gland(volume.source, load_localiser(settings.localiser))


def located_grid(
    volume: AxialVolume, settings: PreprocessSettings, location: GlandLocation | None
) -> SliceStack:
    """:func:`~prokd.data.placement.grid_stage` centred on the location's gland and cut to
    its slab (the whole source and the settings' centre without a gland)."""
    found = location is not None and location.found
    return grid_stage(
        volume,
        settings,
        location.centre if location is not None else None,
        location.slices if found else None,
    )


def infer_stage(
    model: nn.Module | SliceModel,
    stack: SliceStack,
    settings: PreprocessSettings,
    batch_size: int = 32,
    mirrored: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Gland probabilities on the slice grid, and (``mirrored``) those of the left-right
    mirrored slices, mirrored back."""
    probabilities = predict_slices(model, stack.slices, batch_size, settings.context_slices)
    if not mirrored:
        return probabilities, None
    flipped = np.ascontiguousarray(stack.slices[..., ::-1])
    back = predict_slices(model, flipped, batch_size, settings.context_slices)[..., ::-1]
    return probabilities, np.ascontiguousarray(back)


def back_stage(
    probabilities: tuple[np.ndarray, np.ndarray | None], grid: Geometry, reference: sitk.Image
) -> tuple[np.ndarray, np.ndarray | None]:
    """Both passes' probabilities on ``reference``'s grid (zero outside the slice grid)."""
    fine, mirrored = probabilities
    on_reference = to_original_grid(fine, grid, reference)
    return on_reference, None if mirrored is None else to_original_grid(mirrored, grid, reference)


@dataclass
class Segmentation:
    """A volume's mask (uint8 0/1) and gland probabilities (float32), both (z, y, x) on the
    input's own grid, the QC of the mask and the seconds it took."""

    mask: np.ndarray
    probabilities: np.ndarray
    qc: MaskQC
    seconds: float


def prediction_masks(
    probabilities: tuple[np.ndarray, np.ndarray | None],
    postprocess: bool,
    threshold: float = GLAND_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask and the mirrored pass's mask (``None`` without one), made alike: at or
    above ``threshold``, then post-processed if asked, so that QC compares like with
    like."""
    fine, mirrored = probabilities
    mask = probability_mask(fine, threshold, postprocess)
    return mask, None if mirrored is None else probability_mask(mirrored, threshold, postprocess)


def qc_stage(
    probabilities: tuple[np.ndarray, np.ndarray | None],
    volume: AxialVolume,
    location: GlandLocation | None,
    model: LoadedModel,
    postprocess: bool,
) -> tuple[np.ndarray, MaskQC]:
    """The mask (on the axial view) and its QC: facts, then the reliability verdict at the
    model's own QC limits."""
    mask, mirrored = prediction_masks(probabilities, postprocess, model.threshold)
    axial = volume.axial
    qc = quality_control(mask, tuple(reversed(axial.GetSpacing())))
    verdict = assess(mask, probabilities[0], mirrored, location, axial, model.qc_limits)
    qc.reliable, qc.reasons, qc.signals = verdict.reliable, verdict.reasons, verdict.signals
    qc.plane = volume.plane
    return mask, qc


def segment_image(
    model: LoadedModel,
    image: sitk.Image,
    postprocess: bool = True,
    batch_size: int = 32,
    name: object = "image",
) -> Segmentation:
    """The stages after reading, in order, on one volume: the mask and probabilities on
    the input's own grid and the mask's QC.

    ``postprocess`` keeps the largest 3D component and fills its holes. A sagittal or
    coronal series is segmented on an axial volume resliced from it, the probabilities
    resampled back onto its own grid.

    Raises:
        DataError: naming ``name``, for an image no plane can serve (a single slice).
    """
    start = time.perf_counter()
    volume = axial_stage(image, name)
    location = locate_stage(volume, model.settings)
    stack = located_grid(volume, model.settings, location)
    on_grid = infer_stage(model.slice_model, stack, model.settings, batch_size, mirrored=True)
    on_axial = back_stage(on_grid, stack.grid, volume.axial)
    mask, qc = qc_stage(on_axial, volume, location, model, postprocess)
    mask = file_axes(mask, image, volume.axial)  # back in the input's own voxel order
    probabilities = file_axes(on_axial[0], image, volume.axial)
    return Segmentation(mask, probabilities, qc, time.perf_counter() - start)


@dataclass(frozen=True)
class Placement:
    """A volume's slices on the grid its model's settings place, and how they were placed:
    the slices and grid, the localiser's finding (``None``: not placed by it) and the
    volume's acquisition plane."""

    slices: np.ndarray
    grid: Geometry
    location: GlandLocation | None
    plane: str


def place(
    image: sitk.Image, settings: PreprocessSettings, location: GlandLocation | None = None
) -> Placement:
    """The axial, locate and grid stages for a model other than ``prokd predict``'s (an
    evaluated model, a teacher); ``location``: a finding to use instead of running the
    localiser."""
    volume = axial_stage(image)
    location = location or locate_stage(volume, settings)
    stack = located_grid(volume, settings, location)
    return Placement(stack.slices, stack.grid, location, volume.plane)


@dataclass
class VolumePrediction:
    """A fine pass over a volume: gland probabilities (z, y, x) float32 on its own grid,
    those of the mirrored slices mirrored back (``None`` unless asked for), and how the
    slices were placed."""

    probabilities: np.ndarray
    mirrored: np.ndarray | None
    placement: Placement


def predict_volume(
    model: nn.Module | SliceModel,
    image: sitk.Image,
    settings: PreprocessSettings,
    batch_size: int = 32,
    mirrored: bool = False,
    placement: Placement | None = None,
) -> VolumePrediction:
    """Gland probabilities of a whole volume on its own grid, by the stages from placing
    to mapping back (``placement``: one computed before)."""
    placement = placement or place(image, settings)
    stack = SliceStack(placement.slices, None, placement.grid)
    on_grid = infer_stage(model, stack, settings, batch_size, mirrored)
    fine, flipped = back_stage(on_grid, placement.grid, image)
    return VolumePrediction(fine, flipped, placement)
