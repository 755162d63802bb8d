"""Views a teacher labels and a student trains on, made from whole 3D volumes.

Kinds (:data:`VIEW_KINDS`): ``acquired`` (the volume as it is), ``augment`` (an in-plane
rotation and scaling, a bias field, a contrast curve and noise, in 3D), ``mix`` (the
volume with the part beyond a random plane through its gland taken from a partner volume,
gland on gland: CutMix in 3D), and the protocols of :mod:`prokd.data.simulate` (an
endorectal coil, a large field of view, sagittal and coronal series). Every view is a
deterministic function of its volumes and seed, so a view bank can label it once and find
it again. Simulated protocols and mixes are planned on a gland mask: the label where there
is one, else the teacher's mask of the volume as acquired.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from prokd.data.io import image_from_array
from prokd.data.preprocess import axial_view
from prokd.data.simulate import PROTOCOLS, simulate
from prokd.errors import ProkdError

VIEW_KINDS = ("acquired", "augment", "mix", *PROTOCOLS)
PLANNED_ON_GLAND = ("mix", *PROTOCOLS)  # the kinds that need the volume's gland mask
DEFAULT_KINDS = ("augment", "coil", "mix", "sagittal", "coronal")  # after round 0, in turn
ROTATION_RAD = 0.26  # in-plane rotation of an augmented view: up to 15 degrees either way
SCALE_RANGE = 0.1  # and a zoom of up to 10%


def _augmented(image: sitk.Image, seed: int) -> sitk.Image:
    """The volume rotated and scaled in the axial plane, with a bias field, a gamma curve
    and Gaussian noise (MONAI's random transforms, seeded), on its own axial grid."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandAffine,
        RandBiasField,
        RandGaussianNoise,
    )

    axial = axial_view(image)
    array = sitk.GetArrayFromImage(axial).astype(np.float32)[None]  # (1, z, y, x)
    high = float(np.percentile(array, 99.5)) or 1.0
    transform = Compose(
        [
            RandAffine(
                prob=1.0,
                rotate_range=(ROTATION_RAD, 0.0, 0.0),  # about z: within each axial slice
                scale_range=(0.0, SCALE_RANGE, SCALE_RANGE),
                padding_mode="zeros",
            ),
            RandBiasField(prob=1.0, coeff_range=(0.1, 0.4)),
            RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
            RandGaussianNoise(prob=1.0, std=0.02),
        ]
    )
    transform.set_random_state(seed)
    out = np.asarray(transform(array / high))[0] * high
    return image_from_array(np.clip(out, 0, None).astype(np.float32), axial)


def _gland_centre(mask: sitk.Image) -> np.ndarray:
    """Physical centre of a mask's voxels (the image's centre for an empty mask)."""
    voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]
    if len(voxels):
        index = [float(v) for v in voxels.mean(axis=0)]
    else:
        index = [0.5 * (s - 1) for s in mask.GetSize()]
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(index))


def _mixed(
    image: sitk.Image,
    gland: sitk.Image,
    partner: sitk.Image,
    partner_gland: sitk.Image,
    seed: int,
) -> sitk.Image:
    """``image`` (axial view) with the part beyond a random vertical plane through its gland
    centre taken from ``partner``, moved gland centre onto gland centre and its intensities
    mapped linearly (1st and 99th percentiles) onto the image's."""
    rng = np.random.default_rng(seed)
    axial = sitk.Cast(axial_view(image), sitk.sitkFloat32)
    shift = _gland_centre(partner_gland) - _gland_centre(gland)
    moved = sitk.Resample(
        sitk.Cast(partner, sitk.sitkFloat32),
        axial,
        sitk.TranslationTransform(3, [float(v) for v in shift]),
        sitk.sitkLinear,
        0.0,
    )
    mine, theirs = sitk.GetArrayFromImage(axial), sitk.GetArrayFromImage(moved)
    low, high = np.percentile(mine, (1, 99))
    their_low, their_high = np.percentile(theirs[theirs > 0], (1, 99)) if theirs.any() else (0, 1)
    theirs = np.clip(
        low + (theirs - their_low) * (high - low) / max(their_high - their_low, 1e-6), 0, None
    )
    # Which side of the plane each voxel lies on, in physical space.
    angle = rng.uniform(0, 2 * np.pi)
    normal = np.array([np.cos(angle), np.sin(angle), 0.0])
    z, y, x = np.indices(mine.shape)
    index = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(float)
    origin, spacing = np.array(axial.GetOrigin()), np.array(axial.GetSpacing())
    direction = np.array(axial.GetDirection()).reshape(3, 3)
    points = origin + (index * spacing) @ direction.T
    side = ((points - _gland_centre(gland)) @ normal > 0).reshape(mine.shape)
    return image_from_array(np.where(side, theirs, mine).astype(np.float32), axial)


def make_view(
    kind: str,
    image: sitk.Image,
    gland: sitk.Image | None,
    seed: int,
    partner: tuple[sitk.Image, sitk.Image | None] | None = None,
) -> sitk.Image:
    """The view ``kind`` of ``image`` from ``seed``; ``gland`` (its mask) plans the kinds
    of :data:`PLANNED_ON_GLAND`; ``partner`` (image, gland mask) is the second volume of a
    mix.

    Raises:
        ProkdError: an unknown kind, a planned kind without its gland mask, or a mix
            without a partner.
    """
    if kind == "acquired":
        return image
    if kind == "augment":
        return _augmented(image, seed)
    if kind in PLANNED_ON_GLAND and (gland is None or (partner and partner[1] is None)):
        raise ProkdError(f"a {kind} view is planned on the gland: give its mask")
    if kind == "mix":
        if partner is None:
            raise ProkdError("a mixed view needs a partner volume")
        return _mixed(image, gland, partner[0], partner[1], seed)
    if kind in PROTOCOLS:
        return simulate(image, gland, kind, seed)[0]
    raise ProkdError(f"unknown view kind {kind!r} (kinds: {', '.join(VIEW_KINDS)})")
