"""Acquisition protocols a training slice did not come from, simulated on it.

Two MONAI-style random transforms on 2D slice samples (``image`` (C, H, W), ``label``
(1, H, W) and, when present, ``teacher`` (K, H, W); axial slices in LPS order, so rows run
anterior to posterior):

- :class:`RandEndorectalCoild`: an inflated endorectal balloon in the rectum behind the
  gland, filled dark (air) or bright (fluid), pressing the gland forward (one smooth
  displacement moves image, label and teacher maps together), the receive coil's bright
  flare falling off with distance from it, and more noise, as at 1.5 T;
- :class:`RandReslicedd`: a slice resliced from a sagittal or coronal series: the other
  series' slice thickness along one in-plane axis and its limited coverage along it.

Both need to know where the gland is (the label, or the teachers' mean on an unlabelled
slice) and leave a slice without gland as it is.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from prokd.data.planes import slice_profile_sigma

PUSH_DECAY_MM = 30.0  # distance over which the balloon's push on the tissue falls by 1/e


def gland_region(sample: Mapping[Hashable, torch.Tensor]) -> np.ndarray:
    """Where the gland is on a sample's slice, (H, W) bool: the label, or on an unlabelled
    slice the teachers' mean probability above 0.5."""
    gland = np.asarray(sample["label"])[0] > 0.5
    if not gland.any() and "teacher" in sample:
        gland = np.asarray(sample["teacher"]).mean(axis=0) > 0.5
    return gland


class _GlandTransform(Randomizable, MapTransform):
    """A random transform applied, with probability ``prob``, to slices with gland only:
    subclasses draw their parameters in ``randomize`` (``_do``: apply it or not) and change
    a sample in ``apply``."""

    _do: bool

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        self.randomize()
        sample = dict(data)
        gland = gland_region(sample)
        if not self._do or not gland.any():
            return sample
        return self.apply(sample, gland)

    def apply(self, sample: dict, gland: np.ndarray) -> dict:
        """The transformed sample, given where its gland is, (H, W) bool."""
        raise NotImplementedError


def _as_tensors(sample: dict, arrays: dict[str, np.ndarray]) -> dict:
    out = dict(sample)
    for key, value in arrays.items():
        out[key] = torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32)
    return out


class RandEndorectalCoild(_GlandTransform):
    """An endorectal coil's balloon and flare simulated behind the gland (see module doc).

    Args:
        prob: chance of applying it to a slice with gland.
        pixel_mm: pixel size of the slices (sizes below are in mm).
        flare: whether to add the coil's flare (off in alignment tests).
        noise: whether to add 1.5 T-like noise.
        keep_slice_statistics: rescale the result to the slice's mean and spread, as the
            normalisation of a whole volume absorbs a flare (for normalised training
            slices; off for raw volumes, which a model normalises itself).
    """

    def __init__(
        self,
        prob: float = 0.2,
        pixel_mm: float = 1.0,
        flare: bool = True,
        noise: bool = True,
        keep_slice_statistics: bool = True,
    ) -> None:
        MapTransform.__init__(self, ["image", "label", "teacher"], allow_missing_keys=True)
        self.prob, self.pixel_mm, self.flare, self.noise = prob, pixel_mm, flare, noise
        self.keep_slice_statistics = keep_slice_statistics

    def randomize(self, data: object = None) -> None:  # noqa: D102 (MONAI's interface)
        self._do = self.R.uniform() < self.prob
        self._radii_mm = (self.R.uniform(12, 22), self.R.uniform(8, 15))
        self._gap_mm = self.R.uniform(1, 4)
        self._push_mm = self.R.uniform(4, 10)
        self._bright_fill = self.R.uniform() < 0.3
        self._flare_gain = self.R.uniform(1.0, 3.0)
        self._flare_mm = self.R.uniform(15, 35)
        self._noise_std = self.R.uniform(0.05, 0.25)
        self._noise_seed = int(self.R.randint(0, 2**31 - 1))

    def apply(self, sample: dict, gland: np.ndarray) -> dict:  # noqa: D102 (see the base)
        rows, cols = np.nonzero(gland)
        ry, rx = (r / self.pixel_mm for r in (self._radii_mm[1], self._radii_mm[0]))
        centre = (rows.max() + self._gap_mm / self.pixel_mm + ry, cols.mean())
        shape = gland.shape
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
        dy, dx = y - centre[0], x - centre[1]
        radius = np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)  # 1 on the balloon's wall
        beyond_mm = np.maximum(radius - 1.0, 0.0) * 0.5 * (rx + ry) * self.pixel_mm
        push = (self._push_mm / self.pixel_mm) * np.exp(-beyond_mm / PUSH_DECAY_MM)
        norm = np.maximum(np.hypot(dy, dx), 1e-6)
        # Backward mapping: what lands at p came from p minus the push (away from the centre).
        source = [y - push * dy / norm, x - push * dx / norm]
        balloon = radius < 1.0
        wall = (radius >= 1.0) & (radius < 1.12)
        arrays = {}
        for key in ("image", "label", "teacher"):
            if key not in sample:
                continue
            channels = np.asarray(sample[key], dtype=np.float64)
            order = 0 if key == "label" else 1
            moved = np.stack(
                [ndimage.map_coordinates(c, source, order=order, mode="nearest") for c in channels]
            )
            if key != "image":
                moved[:, balloon | wall] = 0.0
            arrays[key] = moved
        original = np.asarray(sample["image"], dtype=np.float64)
        painted = self._paint(arrays["image"], balloon, wall, beyond_mm)
        if self.keep_slice_statistics:
            spread = painted.std() or 1.0
            painted = (painted - painted.mean()) / spread * original.std() + original.mean()
        arrays["image"] = painted
        return _as_tensors(sample, arrays)

    def _paint(
        self, image: np.ndarray, balloon: np.ndarray, wall: np.ndarray, beyond_mm: np.ndarray
    ) -> np.ndarray:
        """The balloon, its wall, the flare and the noise on the (C, H, W) image."""
        std = image.std() or 1.0
        low, high = np.percentile(image, (1, 99))
        out = image.copy()
        out[:, balloon] = high if self._bright_fill else low
        out[:, wall] = low + 0.2 * (high - low)
        if self.flare:
            gain = 1.0 + self._flare_gain * np.exp(-beyond_mm / self._flare_mm)
            out = low + (out - low) * gain
        if self.noise:
            rng = np.random.default_rng(self._noise_seed)
            out = out + rng.normal(0.0, self._noise_std * std, out.shape)
        return out


class RandReslicedd(_GlandTransform):
    """A slice as a sagittal (or coronal) series resliced to axial gives it: the series'
    slice thickness (3-4.5 mm) along the left-right (or anterior-posterior) axis, and
    nothing beyond its coverage along that axis (40-100 mm around the gland: a series is
    planned on the gland, and a thin one cuts its edges, never more than a tenth of its
    extent on either side). Label and teacher maps are cut to the coverage too: the series
    does not show the gland beyond it.

    Args:
        prob: chance of applying it to a slice with gland.
        pixel_mm: pixel size of the slices.
    """

    def __init__(self, prob: float = 0.1, pixel_mm: float = 1.0) -> None:
        MapTransform.__init__(self, ["image", "label", "teacher"], allow_missing_keys=True)
        self.prob, self.pixel_mm = prob, pixel_mm

    def randomize(self, data: object = None) -> None:  # noqa: D102 (MONAI's interface)
        self._do = self.R.uniform() < self.prob
        self._axis = -1 if self.R.uniform() < 0.6 else -2  # sagittal source: x; coronal: y
        self._thickness_mm = self.R.uniform(3.0, 4.5)
        self._coverage_mm = self.R.uniform(40, 100)
        self._shift_mm = self.R.uniform(-5, 5)

    def apply(self, sample: dict, gland: np.ndarray) -> dict:  # noqa: D102 (see the base)
        image = np.asarray(sample["image"], dtype=np.float64)
        sigma = np.zeros(3)
        sigma[self._axis] = slice_profile_sigma(self._thickness_mm) / self.pixel_mm
        out = ndimage.gaussian_filter(image, sigma)
        along = np.nonzero(gland.any(axis=0 if self._axis == -1 else 1))[0]
        extent, shift = along.max() - along.min(), self._shift_mm / self.pixel_mm
        centre = 0.5 * (along.min() + along.max()) + shift
        half = max(0.5 * self._coverage_mm / self.pixel_mm, 0.4 * extent + abs(shift))
        position = np.arange(image.shape[self._axis])
        outside = (position < centre - half) | (position > centre + half)
        index = [slice(None)] * 3
        index[self._axis] = outside
        out[tuple(index)] = np.percentile(image, 1)
        arrays = {"image": out}
        for key in ("label", "teacher"):
            if key in sample:
                cut = torch.as_tensor(sample[key]).numpy().astype(np.float32)
                cut[tuple(index)] = 0.0
                arrays[key] = cut
        return _as_tensors(sample, arrays)
