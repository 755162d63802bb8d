"""Large-field-of-view pelvis images synthesised from label maps, for training what must tell
the gland from the rest of a whole pelvis (a localiser, a segmenter on radiotherapy scans).

Label-driven domain randomisation after SynthSeg (Billot et al., Medical Image Analysis
2023): every image draws each tissue's mean and spread anew, from T2-like ranges half of
the time and from anywhere in [0, 1] otherwise, then gets texture, partial-volume blur, a
smooth bias field, a contrast curve and Rician noise. Labels follow the HipMRI study's
semantic maps (``../shared/data/hipmri-labels``): 0 outside the body, 1 body, 2 bone,
3 bladder, 4 rectum, 5 prostate. The body is split into fat and muscle and the bone into
cortex and marrow by smooth random fields and distance from the edge, the prostate into a
darker transition zone and a brighter peripheral zone, so that no label is one flat value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from prokd.data.io import image_from_array, volume_stem, write_volume
from prokd.errors import DataError, ProkdError
from prokd.io_atomic import atomic_folder

BODY, BONE, BLADDER, RECTUM, PROSTATE = 1, 2, 3, 4, 5
SITE = "hipmri-synth"  # the six-site layout folder the synthetic cases are written under

# T2-like relative signal ranges (urine = 1) of the tissues each image draws from.
T2_RANGES = {
    "air": (0.0, 0.03),
    "fat": (0.6, 0.95),
    "muscle": (0.15, 0.35),
    "cortex": (0.0, 0.1),
    "marrow": (0.35, 0.7),
    "urine": (0.8, 1.0),
    "rectum": (0.05, 0.6),
    "tz": (0.25, 0.45),
    "pz": (0.5, 0.8),
}


@dataclass(frozen=True)
class SynthesisSettings:
    """How far each image strays from T2 appearance."""

    t2_like_share: float = 0.5  # images with T2-like tissue signal; the rest fully random
    noise: tuple[float, float] = (0.01, 0.06)  # Rician noise std, relative to the brightest
    blur_voxels: tuple[float, float] = (0.3, 1.2)  # partial-volume Gaussian sigma
    bias: float = 0.4  # bias field: exp of a smooth field within +-bias
    gamma: tuple[float, float] = (0.7, 1.5)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1] (random values on a coarse grid, linear zoom)."""
    coarse = rng.uniform(-1, 1, size=tuple(max(2, min(cells, s)) for s in shape))
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)
    return field[tuple(slice(0, s) for s in shape)].astype(np.float32)


def _tissue_means(rng: np.random.Generator, t2_like: bool) -> dict[str, float]:
    if t2_like:
        return {name: float(rng.uniform(*bounds)) for name, bounds in T2_RANGES.items()}
    means = {name: float(rng.uniform(0, 1)) for name in T2_RANGES}
    means["air"] = float(rng.uniform(0, 0.05))  # outside the body stays dark: no signal there
    return means


def _inner_part(region: np.ndarray, fraction: float) -> np.ndarray:
    """The voxels of ``region`` deeper than ``fraction`` of its greatest depth (computed in
    its bounding box, so a small organ costs little)."""
    if not region.any():
        return region
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
    depth = ndimage.distance_transform_edt(region[box])
    inner = np.zeros_like(region)
    inner[box] = depth > fraction * max(float(depth.max()), 1.0)
    return inner


def tissue_map(
    labels: np.ndarray, spacing_zyx: tuple[float, ...], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Boolean masks of the tissues an image paints, from a (z, y, x) label map.

    The body is fat under the skin (a random 5-30 mm) and around the pelvic organs
    (a random 3-15 mm), muscle elsewhere, with random islands of either; bone is cortex
    (a random 1-4 mm shell) around marrow; the prostate a transition zone inside a
    peripheral one.
    """
    body = labels == BODY
    from_air = ndimage.distance_transform_edt(labels != 0, sampling=spacing_zyx)
    organs = np.isin(labels, (BLADDER, RECTUM, PROSTATE))
    from_organs = ndimage.distance_transform_edt(~organs, sampling=spacing_zyx)
    islands = _smooth_field(rng, labels.shape, 16) > rng.uniform(0.3, 0.9)
    fat = body & ((from_air < rng.uniform(5, 30)) | (from_organs < rng.uniform(3, 15)) | islands)
    bone = labels == BONE
    from_outside_bone = ndimage.distance_transform_edt(bone, sampling=spacing_zyx)
    cortex = bone & (from_outside_bone <= rng.uniform(1.0, 4.0))
    prostate = labels == PROSTATE
    tz = _inner_part(prostate, rng.uniform(0.3, 0.5))
    return {
        "air": labels == 0,
        "fat": fat,
        "muscle": body & ~fat,
        "cortex": cortex,
        "marrow": bone & ~cortex,
        "urine": labels == BLADDER,
        "rectum": labels == RECTUM,
        "tz": tz,
        "pz": prostate & ~tz,
    }


def synthesise(
    labels: np.ndarray,
    spacing_zyx: tuple[float, ...],
    seed: int,
    settings: SynthesisSettings | None = None,
) -> np.ndarray:
    """A T2-like (or fully random-contrast) image, float32 in about [0, 1], drawn for a
    (z, y, x) label map of voxels ``spacing_zyx`` mm; the same ``seed``, the same image."""
    settings = settings or SynthesisSettings()
    rng = np.random.default_rng(seed)
    means = _tissue_means(rng, rng.uniform() < settings.t2_like_share)
    texture = _smooth_field(rng, labels.shape, 32)
    image = np.zeros(labels.shape, np.float32)
    for name, where in tissue_map(labels, spacing_zyx, rng).items():
        image[where] = means[name] + rng.uniform(0.02, 0.12) * texture[where]
    image = ndimage.gaussian_filter(image, rng.uniform(*settings.blur_voxels))
    image *= np.exp(settings.bias * _smooth_field(rng, labels.shape, 4))
    image = np.clip(image, 0, None) / max(float(image.max()), 1e-6)
    image **= rng.uniform(*settings.gamma)
    std = rng.uniform(*settings.noise)
    real = image + rng.normal(0, std, image.shape).astype(np.float32)
    imaginary = rng.normal(0, std, image.shape).astype(np.float32)
    return np.sqrt(real**2 + imaginary**2).astype(np.float32)


def label_maps(folder: str | Path) -> list[Path]:
    """The label-map volumes of a folder, sorted.

    Raises:
        DataError: the folder is missing or holds no volume file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "label-map folder not found")
    maps = sorted(p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii", ".mha")))
    if not maps:
        raise DataError(folder, "no label-map volume (.nii.gz, .nii, .mha) in the folder")
    return maps


def write_synthetic_pelvis(
    labels_dir: str | Path, out_dir: str | Path, seed: int = 0, show_progress: bool = False
) -> int:
    """Write one synthetic image per label map in the six-site layout
    (``<out>/hipmri-synth/<map>.nii.gz`` and ``<map>_segmentation.nii.gz``, the gland).

    One image per map, so that a split by case is a split by patient.

    Returns:
        The number of cases written.

    Raises:
        DataError: no label map, or one without a prostate label.
        ProkdError: ``out_dir`` exists and is not empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProkdError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    maps = label_maps(labels_dir)
    with atomic_folder(out_dir) as staging:
        for index, path in enumerate(tqdm(maps, disable=not show_progress, desc="synthesise")):
            reference = sitk.ReadImage(str(path))
            labels = sitk.GetArrayFromImage(reference).astype(np.int16)
            if not (labels == PROSTATE).any():
                raise DataError(path, f"label map has no prostate (label {PROSTATE})")
            name = staging / SITE / volume_stem(path).removesuffix("_SEMANTIC_LFOV")
            spacing = tuple(reversed(reference.GetSpacing()))
            image = synthesise(labels, spacing, seed * 100_003 + index)
            write_volume(image_from_array(image, reference), f"{name}.nii.gz")
            gland = (labels == PROSTATE).astype(np.uint8)
            write_volume(image_from_array(gland, reference), f"{name}_segmentation.nii.gz")
    return len(maps)
