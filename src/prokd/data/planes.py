"""The plane a series was acquired in, and an axial volume resliced from a sagittal or
coronal one, so that models trained on axial slices segment it on slices like their own.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry
from prokd.data.orientation import plane
from prokd.errors import DataError

AXIAL_SLICE_MM = 3.0  # slice spacing and thickness of a resliced axial volume
MIN_SLICES = 3  # fewer slices than this in the acquired plane: a localiser, not a series


def acquisition_plane(image: sitk.Image) -> str:
    """``axial``, ``sagittal`` or ``coronal``: the plane ``image`` was acquired in
    (:func:`prokd.data.orientation.plane`)."""
    return plane(image.GetDirection(), image.GetSpacing())


def check_segmentable(image: sitk.Image, name: object) -> None:
    """Refuse an image that no plane can serve (a single-slice localiser, a 2D image).

    Raises:
        DataError: naming ``name``, when any voxel axis has fewer than :data:`MIN_SLICES`.
    """
    if min(image.GetSize()) < MIN_SLICES:
        raise DataError(
            name,
            f"image of {'x'.join(map(str, image.GetSize()))} voxels: fewer than {MIN_SLICES} "
            "slices along an axis (a localiser or a 2D image), not a volume to segment",
        )


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest physical coordinates (LPS, mm) of ``image``'s voxel
    centres: the bounding box of its eight corner voxels."""
    size = np.array(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [float(i * (n - 1)) for i, n in zip(corner, size, strict=True)]
            )
            for corner in np.ndindex(2, 2, 2)
        ]
    )
    return corners.min(axis=0), corners.max(axis=0)


def axial_grid(image: sitk.Image, slice_mm: float = AXIAL_SLICE_MM) -> Geometry:
    """An axial (LPS) grid over ``image``'s physical extent: in-plane pixels the size of
    the image's finest in-plane spacing, ``slice_mm`` between slices."""
    low, high = physical_bounds(image)
    pixel = float(min(image.GetSpacing()[:2]))
    spacing = np.array([pixel, pixel, slice_mm])
    count = np.maximum(1, np.floor((high - low) / spacing).astype(int) + 1)
    return Geometry(
        tuple(int(v) for v in count),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in low),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )


FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # a Gaussian's full width at half maximum


def slice_profile_sigma(thickness_mm: float, spacing_mm: float = 0.0) -> float:
    """The standard deviation (mm) of the Gaussian that makes slices ``spacing_mm`` thick
    as thick as ``thickness_mm`` (the slice profile's full width at half maximum), widths
    adding in quadrature; 0 when they already are."""
    return float(np.sqrt(max(thickness_mm**2 - spacing_mm**2, 0.0)) / FWHM_PER_SIGMA)


def axial_reslice(image: sitk.Image, slice_mm: float = AXIAL_SLICE_MM) -> sitk.Image:
    """``image`` (a sagittal or coronal series) resampled onto :func:`axial_grid`, after a
    Gaussian low-pass along the superior-inferior axis that gives its slices the thickness
    of an axial acquisition's (:func:`slice_profile_sigma`; float32, 0 outside)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    along_s = int(np.argmax(np.abs(direction[2])))  # the voxel axis closest to S
    variances = [0.0, 0.0, 0.0]
    variances[along_s] = slice_profile_sigma(slice_mm, image.GetSpacing()[along_s]) ** 2
    smoothed = sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), variances, 32, 0.01, True)
    grid = axial_grid(image, slice_mm)
    return sitk.Resample(
        smoothed,
        grid.size,
        sitk.Transform(),
        sitk.sitkLinear,
        grid.origin,
        grid.spacing,
        grid.direction,
        0.0,
        sitk.sitkFloat32,
    )
