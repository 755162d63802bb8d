"""Opt-in soft-target cache: teacher logits and tapped features computed once per training
slice and stored as float16 ``.npy`` memory maps.

Valid only when the student sees the stored slices unchanged (augmentation off): the cache
is keyed by slice index. Students distilled from the same teachers on the same slices (the
procedure-2 runs of every weighting strategy) share one cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prokd.data.slices import SliceDataset
from prokd.distill.ensemble import TeacherEnsemble
from prokd.io_atomic import atomic_path

MANIFEST = "manifest.json"


class SoftTargetCache:
    """Stored teacher outputs for every slice of one dataset."""

    def __init__(self, folder: Path, teachers: int, taps: list[str]) -> None:
        self.folder = folder
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
        batch_size: int = 32,
        progress: bool = True,
    ) -> SoftTargetCache:
        """Open the cache in ``folder``, computing it first if absent or for other inputs."""
        folder = Path(folder)
        key = {
            "teachers": [str(t.path) for t in ensemble.teachers],
            "slices": [[v.case_id, len(v.image)] for v in dataset.volumes],
        }
        manifest = folder / MANIFEST
        if manifest.exists() and json.loads(manifest.read_text())["key"] == key:
            saved = json.loads(manifest.read_text())
            return cls(folder, len(ensemble), saved["taps"])
        folder.mkdir(parents=True, exist_ok=True)
        n = len(dataset)
        arrays: list[dict[str, np.ndarray]] = []
        taps: list[str] = []
        starts = range(0, n, batch_size)
        for start in tqdm(
            starts, desc="soft targets", unit="batch", leave=False, disable=not progress
        ):
            stop = min(start + batch_size, n)
            images = torch.stack([dataset[i]["image"] for i in range(start, stop)])
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
                    arrays[k][name][start:stop] = tensor.numpy().astype(np.float16)
        for teacher_arrays in arrays:
            for array in teacher_arrays.values():
                array.flush()
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps({"key": key, "taps": taps}))
        return cls(folder, len(ensemble), taps)

    def fetch(
        self, indices: np.ndarray
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Teacher logits and features (float32) of the given slice indices."""
        order = np.asarray(indices)

        def take(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(array[order], dtype=np.float32))

        return (
            [take(a) for a in self.logits],
            [{t: take(a) for t, a in f.items()} for f in self.features],
        )
