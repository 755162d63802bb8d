"""Per-volume preprocessing to a fixed 2D slice grid, and its exact inverse.

The target grid keeps the (reoriented) slice positions of the volume and resamples each
axial slice to a square ``size`` x ``size`` grid of ``fov_mm / size`` mm pixels, centred
in-plane on the centre of the image or on the centre of the body the image shows (never on
the mask, so nothing leaks from the labels at test time).
Both directions are physical-space resamplings with SimpleITK, so orientation, resampling
and crop/pad are undone by one resampling onto the original grid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry
from prokd.data.masks import fill_holes, largest_component
from prokd.errors import ConfigError, warn_all

NORMALISATIONS = ("zscore", "robust")
CROP_CENTRES = ("image", "body", "gland")
ORIENTATION = "LPS"  # axial: array x runs right->left, y anterior->posterior, z inferior->superior


DEFAULT_LOCALISER = "prostate-localiser"  # the bundled localiser (prokd.inference.bundled)


@dataclass(frozen=True)
class PreprocessSettings:
    """How a volume becomes a stack of 2D slices.

    Attributes:
        size: in-plane pixels per side of every slice (128 for CPU work; 256, 384 also common).
        fov_mm: in-plane field of view kept around the image centre, in mm.
        clip_percentiles: intensities are clipped to these percentiles before scaling.
        normalise: ``zscore`` (mean and standard deviation of the whole clipped volume) or
            ``robust`` (percentiles, median and interquartile range of the region the slice
            grid covers, so that coil flare or a large field of view outside it does not
            shift the scale).
        context_slices: neighbouring slices on each side given to the network as extra
            channels (2.5D input: ``2 * context_slices + 1`` channels; 0: plain 2D). The
            stored slices do not depend on it; the slice stack is built when slices are read.
        crop_centre: where the grid's in-plane centre goes: ``image`` (the centre of the
            image, right for the usual prostate-centred acquisitions) or ``body`` (the
            in-plane centroid of the body, found from the image alone, for large pelvic
            fields of view whose centre need not be the gland's; the intensity statistics
            then come from the region the grid covers, as with ``robust``, so that the air
            and anatomy of a wide field do not shift them), or ``gland`` (the gland's centre
            as a coarse localiser finds it in the whole volume, image alone, no label:
            :mod:`prokd.inference.localise`; statistics local as with ``body``, and taken
            over the body's voxels only, not the air).
        localiser: the coarse localiser of ``crop_centre: gland``: a bundled model's name
            (default ``prostate-localiser``) or a model file (ONNX, checkpoint or run
            folder; a relative path is read from the working directory), e.g. one trained
            without a held-out source.
    """

    size: int = 128
    fov_mm: float = 128.0
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    context_slices: int = 0
    normalise: str = "zscore"
    crop_centre: str = "image"
    localiser: str = DEFAULT_LOCALISER

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"preprocess.size must be at least 8, got {self.size}")
        if self.fov_mm <= 0:
            raise ConfigError(f"preprocess.fov_mm must be positive, got {self.fov_mm}")
        low, high = self.clip_percentiles
        if not 0 <= low < high <= 100:
            raise ConfigError("preprocess.clip_percentiles must satisfy 0 <= low < high <= 100")
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(
                f"preprocess.normalise must be one of {', '.join(NORMALISATIONS)}, "
                f"got {self.normalise!r}"
            )
        if self.crop_centre not in CROP_CENTRES:
            raise ConfigError(
                f"preprocess.crop_centre must be one of {', '.join(CROP_CENTRES)}, "
                f"got {self.crop_centre!r}"
            )
        if not isinstance(self.localiser, str) or not self.localiser:
            raise ConfigError(
                f"preprocess.localiser must be a bundled model's name or a model file, "
                f"got {self.localiser!r}"
            )
        if not 0 <= self.context_slices <= 3:
            raise ConfigError(
                f"preprocess.context_slices must be in 0..3, got {self.context_slices}"
            )

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessSettings:
        """Settings from their ``asdict`` form (as stored in checkpoints and exports)."""
        values = dict(values)
        values["clip_percentiles"] = tuple(values["clip_percentiles"])
        return cls(**values)

    @property
    def spacing_mm(self) -> float:
        """In-plane pixel size of the slices."""
        return self.fov_mm / self.size

    @property
    def channels(self) -> int:
        """Input channels of a network fed with these settings."""
        return 2 * self.context_slices + 1

    def fingerprint(self) -> str:
        """Stable text of the settings that shape the stored slices, for cache keys
        (``context_slices`` only stacks them when read, so it is left out; ``normalise``,
        ``crop_centre`` and ``localiser``, added later, only when they are not the default,
        so earlier keys stay valid; a localiser file's contents are the cache's to key)."""
        values = asdict(self)
        del values["context_slices"]
        defaults = {"normalise": "zscore", "crop_centre": "image", "localiser": DEFAULT_LOCALISER}
        for key, default in defaults.items():
            if values[key] == default:
                del values[key]
        return json.dumps(values, sort_keys=True)

    def grid_only(self) -> PreprocessSettings:
        """These settings less those that change intensities only: what fixes the grid."""
        return PreprocessSettings(
            self.size, self.fov_mm, crop_centre=self.crop_centre, localiser=self.localiser
        )


def slice_stack(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slice ``z`` of a (z, H, W) volume with ``context`` neighbours on each side, as
    (2 * context + 1, H, W) channels; beyond the first and last slice the edge repeats."""
    index = np.clip(np.arange(z - context, z + context + 1), 0, len(volume) - 1)
    return volume[index]


BODY_MAP_PIXELS = 64  # in-plane size the body is found at (enough for a centroid)


@dataclass(frozen=True)
class BodyRegion:
    """The body found in an axial view: its in-plane centroid (continuous x, y index of the
    view) and whether it runs off the view's left and right edges (then its centroid is the
    view's, not the body's)."""

    centre_index: tuple[float, float]
    cut_left_and_right: bool


def body_region(oriented: sitk.Image) -> BodyRegion | None:
    """The body in ``oriented`` (an axial view): the largest connected region of
    :func:`body_mask`, on a copy averaged down to about :data:`BODY_MAP_PIXELS` pixels a
    side. ``None`` when nothing stands out (a
    constant image)."""
    factor = max(1, max(oriented.GetSize()[:2]) // BODY_MAP_PIXELS)
    small = sitk.BinShrink(sitk.Cast(oriented, sitk.sitkFloat32), [factor, factor, 1])
    if float(np.ptp(sitk.GetArrayViewFromImage(small))) == 0:
        return None
    filled = body_mask(sitk.GetArrayFromImage(small))
    body = largest_component(filled)
    z, y, x = np.argwhere(body).mean(axis=0)
    point = small.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
    centroid = oriented.TransformPhysicalPointToContinuousIndex(point)
    columns = np.flatnonzero(body.any(axis=(0, 1)))
    cut = bool(columns[0] == 0 and columns[-1] == body.shape[2] - 1)
    return BodyRegion((float(centroid[0]), float(centroid[1])), cut)


def body_centre_index(oriented: sitk.Image) -> tuple[float, float] | None:
    """In-plane continuous index (x, y) of the body's centroid in ``oriented``
    (:func:`body_region`); ``None`` when nothing stands out."""
    region = body_region(oriented)
    return None if region is None else region.centre_index


def axial_view(image: sitk.Image) -> sitk.Image:
    """``image`` with its voxel axes permuted and flipped to :data:`ORIENTATION` (axial
    slices along the array's first axis): the same voxels, the same physical space. An
    image already in that order is returned as it is (no copy)."""
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return image if code == ORIENTATION else sitk.DICOMOrient(image, ORIENTATION)


def axial_slab(image: sitk.Image, slices: tuple[int, int] | None) -> sitk.Image:
    """The :func:`axial_view` of ``image`` cut to its axial slices ``first..last``
    (inclusive; all of them for ``None``): physical space unchanged."""
    axial = axial_view(image)
    if slices is None:
        return axial
    first, last = slices
    return axial[:, :, first : last + 1]


def file_axes(
    axial: np.ndarray, reference: sitk.Image, view: sitk.Image | None = None
) -> np.ndarray:
    """An array on :func:`axial_view` ``(reference)``'s grid (``view``, when it was computed
    before), back in ``reference``'s own voxel order (the inverse permutation and flips,
    exact).

    Raises:
        ValueError: the array's shape is not the axial view's.
    """
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection())
    view = view if view is not None else axial_view(reference)
    expected = tuple(reversed(view.GetSize()))
    if axial.shape != expected:
        raise ValueError(f"array shape {axial.shape} != axial view shape {expected}")
    if code == ORIENTATION:  # the file stores its axes in that order already
        return axial
    image = Geometry.of(view).apply_to(sitk.GetImageFromArray(axial))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, code))


def target_grid(
    image: sitk.Image,
    settings: PreprocessSettings,
    centre: tuple[float, float, float] | None = None,
) -> Geometry:
    """The slice grid of ``image``: reoriented axes, original slices, square in-plane grid
    centred on ``centre`` (a physical point, e.g. the localiser's gland) when given, else on
    the image's or the body's centre (``settings.crop_centre``; ``gland`` without a centre
    falls back to the image's)."""
    oriented = axial_view(image)
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    size = np.array(oriented.GetSize())
    spacing = np.array(oriented.GetSpacing())
    n, step = settings.size, settings.spacing_mm
    point, centre = centre, ((size[0] - 1) / 2.0, (size[1] - 1) / 2.0)
    if point is not None:
        centre = oriented.TransformPhysicalPointToContinuousIndex(point)[:2]
    elif settings.crop_centre == "body":
        centre = body_centre_index(oriented) or centre
    # The grid's in-plane centre on that point, same first slice: origin offset in index space.
    offset = np.array(
        [
            centre[0] * spacing[0] - (n - 1) * step / 2.0,
            centre[1] * spacing[1] - (n - 1) * step / 2.0,
            0.0,
        ]
    )
    origin = np.array(oriented.GetOrigin()) + direction @ offset
    return Geometry(
        (n, n, int(size[2])),
        (step, step, float(spacing[2])),
        tuple(float(v) for v in origin),
        tuple(float(v) for v in direction.ravel()),
    )


def resample_to_grid(
    image: sitk.Image, grid: Geometry, interpolator: int, default: float
) -> sitk.Image:
    """``image`` resampled onto ``grid`` in physical space (float32, ``default`` outside)."""
    return sitk.Resample(
        image,
        grid.size,
        sitk.Transform(),
        interpolator,
        grid.origin,
        grid.spacing,
        grid.direction,
        default,
        sitk.sitkFloat32,
    )


# Voxels kept around the slice grid when cropping before the low-pass: DiscreteGaussian's
# widest kernel (32) reaches 16 voxels, linear interpolation one more.
CROP_MARGIN = 18


def _around_grid(image: sitk.Image, grid: Geometry) -> sitk.Image:
    """``image`` cropped to the voxels the slice grid's resampling can read (its corners'
    bounding box plus :data:`CROP_MARGIN`), so that a large field of view costs no more
    than the grid; the low-pass and resampling then give the same values as on the whole
    image."""
    direction = np.array(grid.direction).reshape(3, 3)
    extent = np.array(grid.spacing) * (np.array(grid.size) - 1)
    corners = [
        np.array(grid.origin) + direction @ (np.array(c) * extent) for c in np.ndindex(2, 2, 2)
    ]
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    size = np.array(image.GetSize())
    low = np.clip(np.floor(indices.min(axis=0)).astype(int) - CROP_MARGIN, 0, size)
    high = np.clip(np.ceil(indices.max(axis=0)).astype(int) + CROP_MARGIN + 1, 0, size)
    if np.any(high <= low) or (np.all(low == 0) and np.all(high == size)):
        return image
    return sitk.RegionOfInterest(image, [int(v) for v in high - low], [int(v) for v in low])


def _antialias(image: sitk.Image, target_spacing: float) -> sitk.Image:
    """Gaussian low-pass in-plane before downsampling (sigma from the spacing ratio)."""
    variances = []
    for axis, spacing in enumerate(image.GetSpacing()):
        if axis < 2 and target_spacing > spacing:
            sigma_mm = 0.5 * np.sqrt(target_spacing**2 - spacing**2)
            variances.append(float(sigma_mm**2))
        else:
            variances.append(0.0)
    if not any(variances):
        return image
    return sitk.DiscreteGaussian(image, variances, 32, 0.01, True)


IQR_TO_STD = 1.349  # interquartile range of a unit normal distribution


STATISTICS_PIXELS = 256  # in-plane pixels a side the intensity statistics are taken over
MIN_BODY_SHARE = 0.05  # a body mask smaller than this share of the region is not used


def body_mask(array: np.ndarray) -> np.ndarray:
    """The body in a (z, y, x) region: voxels brighter than its Otsu threshold, holes filled
    slice by slice (so that dark muscle inside the fat is body; the air is not)."""
    threshold_image = sitk.OtsuThreshold(sitk.GetImageFromArray(array.astype(np.float32)), 0, 1)
    bright = sitk.GetArrayViewFromImage(threshold_image) > 0
    return fill_holes(bright, in_plane=True)


def normalise_intensity(
    array: np.ndarray, settings: PreprocessSettings, body_only: bool = False
) -> np.ndarray:
    """Clip to the settings' percentiles, then centre and scale: by the mean and standard
    deviation (``zscore``), or by the median and the interquartile range over 1.349
    (``robust``; the standard deviation where the quartiles coincide). With ``body_only``
    every statistic comes from the body's voxels (:func:`body_mask`), so that how much air
    a field of view holds does not change the scale. Statistics come from every ``k``-th
    pixel in-plane of a slice larger than :data:`STATISTICS_PIXELS` (the same values, at
    a fraction of the cost).

    Computed in float64, so values near the float32 limits neither overflow nor turn into
    NaN; a constant volume becomes zeros with a :class:`~prokd.errors.DataWarning`.
    """
    step = max(1, max(array.shape[1:]) // STATISTICS_PIXELS)
    thinned = np.asarray(array[:, ::step, ::step])  # statistics from every step-th pixel
    inside = body_mask(thinned) if body_only and np.ptp(thinned) > 0 else None
    if inside is not None and inside.mean() < MIN_BODY_SHARE:
        inside = None
    values = thinned if inside is None else thinned[inside]
    low, high = np.percentile(values, settings.clip_percentiles)
    clipped = np.clip(array.astype(np.float64), low, high)
    sample = np.clip(values.astype(np.float64), low, high)
    centre, scale = float(sample.mean()), float(sample.std())
    if settings.normalise == "robust":
        q1, centre, q3 = np.percentile(sample, (25, 50, 75))
        scale = float(q3 - q1) / IQR_TO_STD or scale
    if scale == 0:
        warn_all(["image is constant (no contrast): nothing to segment"])
        return np.zeros(array.shape, np.float32)
    return ((clipped - centre) / scale).astype(np.float32)


def preprocess_volume(
    image: sitk.Image,
    mask: sitk.Image | None,
    settings: PreprocessSettings,
    centre: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Resample a volume (and its mask) onto its slice grid (centred on ``centre``, a
    physical point, when given: see :func:`target_grid`).

    Returns:
        The normalised image (z, size, size) float32, the mask (z, size, size) uint8 or
        ``None``, and the slice grid (for :func:`to_original_grid`).
    """
    # Reoriented first (a permutation and flips, exact), so that the in-plane low-pass acts
    # on the in-plane axes whatever order the file stores them in.
    image = axial_view(image)
    grid = target_grid(image, settings, centre)
    local = settings.normalise == "robust" or settings.crop_centre != "image"
    region = _around_grid(image, grid) if local else image
    normalised = normalise_intensity(
        sitk.GetArrayViewFromImage(region), settings, body_only=settings.crop_centre == "gland"
    )
    source = _around_grid(Geometry.of(region).apply_to(sitk.GetImageFromArray(normalised)), grid)
    background = float(normalised.min())
    resampled = resample_to_grid(
        _antialias(source, settings.spacing_mm), grid, sitk.sitkLinear, background
    )
    out_image = sitk.GetArrayFromImage(resampled)
    out_mask = None
    if mask is not None:
        soft = resample_to_grid(sitk.Cast(mask, sitk.sitkFloat32), grid, sitk.sitkLinear, 0.0)
        out_mask = (sitk.GetArrayFromImage(soft) >= 0.5).astype(np.uint8)
    return out_image, out_mask, grid


def to_original_grid(
    probabilities: np.ndarray, grid: Geometry, reference: sitk.Image
) -> np.ndarray:
    """Map slice-grid probabilities (z, size, size) back onto the reference volume's grid.

    Linear interpolation in physical space; voxels outside the slice grid get 0.

    Returns:
        Probabilities as (z, y, x) float32 in the reference's array shape.
    """
    expected = tuple(reversed(grid.size))
    if probabilities.shape != expected:
        raise ValueError(f"probabilities shape {probabilities.shape} != slice grid {expected}")
    source = grid.apply_to(sitk.GetImageFromArray(probabilities.astype(np.float32)))
    back = sitk.Resample(
        source, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(back)
