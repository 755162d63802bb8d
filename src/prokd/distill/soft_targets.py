"""Opt-in soft-target cache: teacher logits and tapped features computed once per training
slice and stored as float16 ``.npy`` memory maps.

Without augmentation the cache holds one row per stored slice. With augmentation it holds
``views`` rows per slice, one per pre-drawn augmented view (row ``slice * views + view``):
the teachers see each view once, when the cache is built, and a student shown that view
reads their outputs for exactly that image. Students distilled from the same teachers on
the same slices (the procedure-2 runs of every weighting strategy) share one cache.

The cache is keyed by the contents of every teacher checkpoint, the preprocessing settings
and the contents of the training slices; any change rebuilds it. A rebuild writes a new
folder beside the old one and swaps it in only when complete, so a stale manifest never
describes new arrays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prokd.data.io import file_sha256
from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import AUGMENTATION_VERSION, SliceDataset, view_seed
from prokd.distill.ensemble import TeacherEnsemble
from prokd.io_atomic import atomic_folder

MANIFEST = "manifest.json"


def cache_key(
    ensemble: TeacherEnsemble,
    dataset: SliceDataset,
    settings: PreprocessSettings,
    views: int = 0,
    seed: int = 0,
) -> dict[str, object]:
    """What the stored outputs depend on: teacher weights, preprocessing, slice contents and
    (with augmented views) the views' number, seed and augmentation."""
    slices = hashlib.sha256()
    for volume in dataset.volumes:
        slices.update(volume.case_id.encode())
        slices.update(np.ascontiguousarray(volume.image, dtype=np.float32).tobytes())
    return {
        "teachers": [file_sha256(t.path) for t in ensemble.teachers],
        "features": ensemble.with_features,
        "preprocess": settings.fingerprint(),
        "slices": slices.hexdigest(),
        "count": len(dataset),
        "views": views,
        "view_seed": seed if views else None,
        "augmentation": _augmentation_names(dataset) if views else None,
    }


def _augmentation_names(dataset: SliceDataset) -> list[object]:
    """The augmentation's code version and its transforms, in order (site-style adds some)."""
    return [AUGMENTATION_VERSION, *(type(t).__name__ for t in dataset.augment.transforms)]


def _row_image(dataset: SliceDataset, row: int, views: int, seed: int) -> torch.Tensor:
    """The image of one cache row: a stored slice, or one augmented view of it."""
    if not views:
        return dataset[row]["image"]
    index, view = divmod(row, views)
    return dataset.view(index, view_seed(seed, index, view))["image"]


class SoftTargetCache:
    """Stored teacher outputs for every slice of one dataset."""

    def __init__(self, folder: Path, teachers: int, taps: list[str], views: int = 0) -> None:
        self.folder = folder
        self.views = views
        self.logits = [
            np.load(folder / f"teacher{k}_logits.npy", mmap_mode="r") for k in range(teachers)
        ]
        self.features = [
            {t: np.load(folder / f"teacher{k}_{t}.npy", mmap_mode="r") for t in taps}
            for k in range(teachers)
        ]

    @classmethod
    def build(
        cls,
        folder: Path,
        ensemble: TeacherEnsemble,
        dataset: SliceDataset,
        settings: PreprocessSettings,
        views: int = 0,
        seed: int = 0,
        batch_size: int = 32,
        progress: bool = True,
    ) -> SoftTargetCache:
        """Open the cache in ``folder``, computing it first if absent or for other inputs.

        Args:
            views: augmented views per slice (0: the stored slices, unaugmented); needs
                ``dataset.augment``.
            seed: the run's seed, from which every view's augmentation is drawn.
        """
        folder = Path(folder)
        if views and dataset.augment is None:
            raise ValueError("augmented views need a dataset with augmentation")
        key = cache_key(ensemble, dataset, settings, views, seed)
        manifest = folder / MANIFEST
        if manifest.exists():
            saved = json.loads(manifest.read_text())
            if saved.get("key") == key:
                return cls(folder, len(ensemble), saved["taps"], views)
        with atomic_folder(folder) as building:
            taps = cls._compute(building, ensemble, dataset, views, seed, batch_size, progress)
            (building / MANIFEST).write_text(json.dumps({"key": key, "taps": taps}))
        return cls(folder, len(ensemble), taps, views)

    @staticmethod
    def _compute(
        folder: Path,
        ensemble: TeacherEnsemble,
        dataset: SliceDataset,
        views: int,
        seed: int,
        batch_size: int,
        progress: bool,
    ) -> list[str]:
        """Write every teacher's outputs for every row into ``folder``; return the taps."""
        per_slice = max(views, 1)
        n = len(dataset) * per_slice
        arrays: list[dict[str, np.ndarray]] = []
        taps: list[str] = []
        starts = range(0, n, batch_size)
        for start in tqdm(
            starts, desc="soft targets", unit="batch", leave=False, disable=not progress
        ):
            stop = min(start + batch_size, n)
            images = torch.stack([_row_image(dataset, r, views, seed) for r in range(start, stop)])
            logits, features = ensemble(images)
            for k, (z, f) in enumerate(zip(logits, features, strict=True)):
                outputs = {"logits": z, **f}
                if len(arrays) <= k:
                    taps = list(f)
                    arrays.append(
                        {
                            name: np.lib.format.open_memmap(
                                folder / f"teacher{k}_{name}.npy",
                                mode="w+",
                                dtype=np.float16,
                                shape=(n, *t.shape[1:]),
                            )
                            for name, t in outputs.items()
                        }
                    )
                for name, tensor in outputs.items():
                    arrays[k][name][start:stop] = tensor.float().cpu().numpy().astype(np.float16)
        for teacher_arrays in arrays:
            for array in teacher_arrays.values():
                array.flush()
        return taps

    def rows(self, slices: np.ndarray, views: np.ndarray | None = None) -> np.ndarray:
        """Rows of the given slices (and, with augmented views, of their views)."""
        return slices if not self.views else np.asarray(slices) * self.views + views

    def fetch(
        self, indices: np.ndarray, device: torch.device | None = None
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Teacher logits and features (float32) of the given rows (see :meth:`rows`)."""
        order = np.asarray(indices)

        def take(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(array[order], dtype=np.float32)).to(device)

        return (
            [take(a) for a in self.logits],
            [{t: take(a) for t, a in f.items()} for f in self.features],
        )
