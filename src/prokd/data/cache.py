"""On-disk cache of preprocessed volumes, keyed by file content and preprocessing settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from prokd.data.io import Geometry, volume_sha256
from prokd.data.layouts import Case
from prokd.data.placement import AxialVolume, axial_stage, grid_stage
from prokd.data.preprocess import PreprocessSettings
from prokd.data.validate import load_case
from prokd.errors import ConfigError, warn_all
from prokd.io_atomic import atomic_path

CACHE_FORMAT = 3  # bump when the stored arrays or the preprocessing code change meaning
# 3: sagittal and coronal volumes are resliced to axial before placement, as in prediction


@dataclass
class PreprocessedVolume:
    """A case on its slice grid: normalised image and mask, (z, size, size).

    An unlabelled volume (``labelled`` false) carries an all-zero mask that no loss reads.
    ``teacher_maps`` holds, per volume teacher of a distilled run, its gland probabilities
    on the same grid (see :mod:`prokd.distill.volume_teachers`).
    """

    case_id: str
    site: str
    image: np.ndarray
    mask: np.ndarray
    grid: Geometry
    labelled: bool = True
    teacher_maps: tuple[np.ndarray, ...] = ()

    def with_teacher_maps(self, maps: list[np.ndarray]) -> PreprocessedVolume:
        """The same volume with volume teachers' probabilities on its grid.

        Raises:
            ValueError: a map's shape is not the image's.
        """
        for gland in maps:
            if gland.shape != self.image.shape:
                raise ValueError(
                    f"{self.case_id}: teacher map {gland.shape} != image {self.image.shape}"
                )
        return replace(self, teacher_maps=tuple(np.asarray(m, np.float32) for m in maps))

    def without_mask(self) -> PreprocessedVolume:
        """The same volume used as unlabelled data: its mask zeroed and never read."""
        return replace(self, mask=np.zeros_like(self.mask), labelled=False)

    @property
    def gland_slices(self) -> np.ndarray:
        """Boolean per slice: does the slice contain gland?"""
        return self.mask.reshape(len(self.mask), -1).any(axis=1)


class GlandLocator(Protocol):
    """What places a ``crop_centre: gland`` grid: the gland's centre in an image (``None``
    when it finds none), and a fingerprint of the model that finds it (for cache keys).
    :class:`prokd.inference.localise.ModelLocator` is the one prokd uses."""

    fingerprint: str

    def locate(
        self, image: sitk.Image
    ) -> tuple[tuple[float, float, float] | None, tuple[int, int] | None]:
        """The gland's centre and the axial-view slices to keep (``None``: none found)."""


def case_fingerprint(case: Case, settings: PreprocessSettings, placement: str = "") -> str:
    """SHA-256 over the bytes of the image and reference mask files, channel and settings
    (and ``placement``, the fingerprint of what places a ``gland`` grid)."""
    digest = hashlib.sha256()
    digest.update(f"{CACHE_FORMAT}|{case.image_channel}|{settings.fingerprint()}".encode())
    if settings.crop_centre == "gland":
        digest.update(placement.encode())
    for path in (case.image, *case.masks[:1]):
        volume_sha256(path, digest)
    return digest.hexdigest()


class PreprocessCache:
    """Preprocess each case once; later calls load the stored arrays.

    Entries are ``<root>/<fingerprint>.npz``; a changed file or setting gives a new
    fingerprint, so a stale entry is never reused.
    """

    def __init__(self, root: str | Path, locator: GlandLocator | None = None) -> None:
        self.root = Path(root)
        self.locator = locator

    def _located(
        self, volume: AxialVolume, settings: PreprocessSettings
    ) -> tuple[tuple[float, float, float] | None, tuple[int, int] | None]:
        """Where a ``gland`` grid is centred and which axial slices it keeps, as the
        locator finds them in the volume's source, as prediction does (``None``, ``None``:
        not a ``gland`` grid, or no gland found).

        Raises:
            ConfigError: a ``gland`` grid without a locator.
        """
        if settings.crop_centre != "gland":
            return None, None
        if self.locator is None:
            raise ConfigError("preprocess.crop_centre: gland needs a gland localiser")
        return self.locator.locate(volume.source)

    def path_for(self, case: Case, settings: PreprocessSettings) -> Path:
        """Where the entry of ``case`` under ``settings`` lives."""
        placement = self.locator.fingerprint if self.locator is not None else ""
        return self.root / f"{case_fingerprint(case, settings, placement)}.npz"

    def load(self, case: Case, settings: PreprocessSettings) -> PreprocessedVolume:
        """The preprocessed case, computed and stored on first use.

        The case's validation warnings (an empty mask) are stored with it and issued as
        :class:`~prokd.errors.DataWarning` on every load, cached or not.
        """
        path = self.path_for(case, settings)
        if not path.exists():
            loaded = load_case(case)
            reference = loaded.mask if case.labelled else None
            volume = axial_stage(loaded.image, case.image, reference)  # prediction's stages
            stack = grid_stage(volume, settings, *self._located(volume, settings))
            image, mask, grid = stack.slices, stack.mask, stack.grid
            if mask is None:
                mask = np.zeros(image.shape, dtype=np.uint8)
            with atomic_path(path) as tmp:
                np.savez(
                    tmp,
                    image=image,
                    mask=mask,
                    size=grid.size,
                    spacing=grid.spacing,
                    origin=grid.origin,
                    direction=grid.direction,
                    warnings=np.array(loaded.warnings, dtype=str),
                )
        with np.load(path) as entry:
            warn_all(str(w) for w in entry["warnings"])
            grid = Geometry(
                tuple(int(v) for v in entry["size"]),
                tuple(float(v) for v in entry["spacing"]),
                tuple(float(v) for v in entry["origin"]),
                tuple(float(v) for v in entry["direction"]),
            )
            return PreprocessedVolume(
                case.case_id, case.site, entry["image"], entry["mask"], grid, case.labelled
            )
