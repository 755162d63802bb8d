"""Labelled volumes as another protocol would have acquired them, for testing a model on
protocols the data lack (``prokd simulate``): an endorectal coil, a radiotherapy scanner's
large field of view, or a sagittal or coronal series (a slab planned on the gland). Image
and mask move together; the mask stays the reference on the new grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from prokd.data.io import Geometry, image_from_array, write_volume
from prokd.data.layouts import PATIENTS_FILE, find_cases
from prokd.data.masks import occupied_slices
from prokd.data.planes import physical_bounds, slice_profile_sigma
from prokd.data.preprocess import axial_view
from prokd.data.validate import load_case
from prokd.errors import ProkdError
from prokd.io_atomic import atomic_folder

PROTOCOLS = ("coil", "large-fov", "sagittal", "coronal")
LARGE_FOV_MM = 400.0  # in-plane field of view of a simulated radiotherapy scan
NON_AXIAL = {  # direction (row-major) of each simulated series: x, y, z voxel axes in LPS
    "sagittal": (0, 0, 1, 1, 0, 0, 0, -1, 0),  # x -> P, y -> inferior, slices along L
    "coronal": (1, 0, 0, 0, 0, 1, 0, -1, 0),  # x -> L, y -> inferior, slices along P
}
NON_AXIAL_SPACING = (0.56, 0.56, 3.6)  # ProstateX's sagittal T2
# Coverage across a simulated series' slices: ProstateX-0000's coronal and sagittal T2
# series cover 45 and 68 mm, about the gland's own depth and width.
NON_AXIAL_SLAB_MM = (45.0, 80.0)


def _coil(image: sitk.Image, mask: sitk.Image, seed: int) -> tuple[sitk.Image, sitk.Image]:
    """A balloon and flare behind the gland on every gland slice, the same coil throughout."""
    import torch  # the training extra's: the coil is the training augmentation's

    from prokd.data.protocols import RandEndorectalCoild

    axial, axial_mask = axial_view(image), axial_view(mask)
    array = sitk.GetArrayFromImage(axial).astype(np.float32)
    gland = (sitk.GetArrayFromImage(axial_mask) > 0).astype(np.float32)
    coil = RandEndorectalCoild(1.0, axial.GetSpacing()[0], keep_slice_statistics=False)
    for z in occupied_slices(gland):
        coil.set_random_state(seed)  # the same balloon and flare on every slice
        sample = {
            "image": torch.from_numpy(array[z][None]),
            "label": torch.from_numpy(gland[z][None]),
        }
        out = coil(sample)
        array[z], gland[z] = out["image"].numpy()[0], out["label"].numpy()[0]
    array = np.clip(array, 0, None)
    return image_from_array(array, axial), image_from_array(gland.astype(np.uint8), axial)


def _resample_pair(
    image: sitk.Image, mask: sitk.Image, grid: Geometry, smooth_mm: tuple[float, float, float]
) -> tuple[sitk.Image, sitk.Image]:
    """Image (after a Gaussian low-pass of ``smooth_mm`` FWHM per physical axis L, P, S)
    and mask (linear, then >= 0.5) on ``grid``."""
    source = sitk.Cast(axial_view(image), sitk.sitkFloat32)
    variances = [slice_profile_sigma(f) ** 2 for f in smooth_mm]
    source = sitk.DiscreteGaussian(source, variances, 32, 0.01, True)
    reference = grid.apply_to(sitk.Image(grid.size, sitk.sitkFloat32))
    moved = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    soft = sitk.Resample(
        sitk.Cast(mask > 0, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0
    )
    return moved, sitk.Cast(soft >= 0.5, sitk.sitkUInt8)


def _large_fov(image: sitk.Image, mask: sitk.Image, seed: int) -> tuple[sitk.Image, sitk.Image]:
    """1.4-1.9 mm pixels, 1.5 mm slices, a 400 mm field of view padded with noisy air."""
    rng = np.random.default_rng(seed)
    pixel = float(rng.uniform(1.4, 1.9))
    low, high = physical_bounds(image)
    centre = 0.5 * (low + high)
    extent = np.array([LARGE_FOV_MM, LARGE_FOV_MM, high[2] - low[2]])
    spacing = np.array([pixel, pixel, 1.5])
    size = np.floor(extent / spacing).astype(int) + 1
    origin = centre - 0.5 * (size - 1) * spacing
    grid = Geometry(
        tuple(int(v) for v in size),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in origin),
        (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
    )
    moved, moved_mask = _resample_pair(image, mask, grid, (pixel, pixel, 0.0))
    array = sitk.GetArrayFromImage(moved)
    noise = 0.01 * float(np.percentile(array, 99))
    array = np.abs(array + rng.normal(0, noise, array.shape)).astype(np.float32)
    return image_from_array(array, moved), moved_mask


def _non_axial(
    image: sitk.Image, mask: sitk.Image, plane: str, seed: int
) -> tuple[sitk.Image, sitk.Image]:
    """A sagittal or coronal series as one is planned: a slab of :data:`NON_AXIAL_SLAB_MM`
    across, centred on the gland (within 5 mm), over the volume's extent in-plane; 0.56 mm
    in-plane pixels and 3.6 mm slices, the slice thickness as a low-pass across them."""
    rng = np.random.default_rng(seed)
    direction = np.array(NON_AXIAL[plane], dtype=float).reshape(3, 3)
    spacing = np.array(NON_AXIAL_SPACING)
    low, high = physical_bounds(image)
    normal = int(np.argmax(np.abs(direction[:, 2])))  # the physical axis slices follow
    voxels = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1]
    if len(voxels):
        index = [float(v) for v in voxels.mean(axis=0)]
        centre = mask.TransformContinuousIndexToPhysicalPoint(index)[normal]
    else:  # no gland to plan on: the volume's middle
        centre = 0.5 * (low[normal] + high[normal])
    middle, half = centre + rng.uniform(-5.0, 5.0), 0.5 * rng.uniform(*NON_AXIAL_SLAB_MM)
    low[normal], high[normal] = max(low[normal], middle - half), min(high[normal], middle + half)
    # Extent along each voxel axis, and the corner of the box the grid starts from.
    along = np.abs(direction.T) @ (high - low)
    size = np.floor(along / spacing).astype(int) + 1
    start = np.where(direction.sum(axis=1) < 0, high, low)
    grid = Geometry(
        tuple(int(v) for v in size),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in start),
        tuple(float(v) for v in direction.ravel()),
    )
    thickness = np.abs(direction[:, 2]) * spacing[2]  # FWHM along the slice normal
    return _resample_pair(image, mask, grid, tuple(float(v) for v in thickness))


def simulate(
    image: sitk.Image, mask: sitk.Image, protocol: str, seed: int = 0
) -> tuple[sitk.Image, sitk.Image]:
    """A volume and its mask as ``protocol`` (one of :data:`PROTOCOLS`) would give them.

    Raises:
        ProkdError: an unknown protocol.
    """
    if protocol == "coil":
        return _coil(image, mask, seed)
    if protocol == "large-fov":
        return _large_fov(image, mask, seed)
    if protocol in NON_AXIAL:
        return _non_axial(image, mask, protocol, seed)
    raise ProkdError(f"unknown protocol {protocol!r} (protocols: {', '.join(PROTOCOLS)})")


def write_simulated(
    data_dir: str | Path,
    out_dir: str | Path,
    protocol: str,
    seed: int = 0,
    layout: str | None = None,
    show_progress: bool = False,
) -> int:
    """Every labelled case of a dataset under ``protocol``, written in the six-site layout
    (``<out>/<site>-<protocol>/<case>.nii.gz`` and ``<case>_segmentation.nii.gz``), with
    ``patients.json``: each simulated case's patient is its source case's (read back by the
    six-site layout, so that a patient's simulated copies count as that one patient).

    Returns:
        The number of cases written.

    Raises:
        DataError: an unreadable dataset.
        ProkdError: an unknown protocol, no labelled case, or ``out_dir`` not empty.
    """
    if protocol not in PROTOCOLS:
        raise ProkdError(f"unknown protocol {protocol!r} (protocols: {', '.join(PROTOCOLS)})")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProkdError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    _, cases = find_cases(data_dir, layout)
    cases = [c for c in cases if c.labelled]
    if not cases:
        raise ProkdError(f"{data_dir}: no labelled case to simulate {protocol} on")
    patients = {}
    with atomic_folder(out_dir) as staging:
        for index, case in enumerate(tqdm(cases, desc=protocol, disable=not show_progress)):
            loaded = load_case(case)
            image, mask = simulate(loaded.image, loaded.mask, protocol, seed * 1000 + index)
            case_id = f"{case.site}-{protocol}/{case.case_id.replace('/', '_')}"
            write_volume(image, f"{staging / case_id}.nii.gz")
            write_volume(mask, f"{staging / case_id}_segmentation.nii.gz")
            patients[case_id] = case.patient
        (staging / PATIENTS_FILE).write_text(json.dumps(patients, indent=1))
    return len(cases)
