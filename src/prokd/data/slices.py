"""2D slice dataset over preprocessed volumes, with MONAI augmentation for training."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandSimulateLowResolutiond,
    RandZoomd,
)
from torch.utils.data import Dataset

from prokd.data.cache import PreprocessedVolume
from prokd.data.preprocess import slice_stack
from prokd.data.protocols import RandEndorectalCoild, RandReslicedd


def training_augmentation(
    seed: int = 0, site_style: bool = False, protocols: bool = False, pixel_mm: float = 1.0
) -> Compose:
    """Spatial and intensity augmentation for 2D slices (keys ``image``, ``label`` and, when
    present, ``teacher``: volume teachers' probabilities, moved with the image).

    Left-right flips, small rotations/scaling/shifts, and the intensity changes that differ
    between sites: contrast curve, scale, blur and noise. ``site_style`` adds what differs
    between scanners more strongly: a smooth bias field (coil shading), a lower acquired
    resolution, and another field of view (zoom in or out). ``protocols`` adds acquisitions
    the data may lack (:mod:`prokd.data.protocols`, sizes in mm from ``pixel_mm``): an
    endorectal coil's balloon and flare, and slices resliced from a sagittal or coronal
    series.
    """
    keys = ["image", "label", "teacher"]
    site = [
        RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.2)),
        RandSimulateLowResolutiond(
            "image",
            prob=0.2,
            downsample_mode="area",
            upsample_mode="bilinear",
            zoom_range=(0.5, 1.0),
        ),
        RandZoomd(
            keys,
            prob=0.3,
            min_zoom=0.75,
            max_zoom=1.3,
            mode=("bilinear", "nearest", "bilinear"),
            padding_mode="edge",
            allow_missing_keys=True,
        ),
    ]
    augment = Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            RandAffined(
                keys,
                prob=0.7,
                rotate_range=0.2,
                scale_range=0.12,
                translate_range=(10, 10),
                mode=("bilinear", "nearest", "bilinear"),
                padding_mode="border",
                allow_missing_keys=True,
            ),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
            RandScaleIntensityd("image", factors=0.15, prob=0.5),
            RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandGaussianNoised("image", prob=0.3, std=0.1),
            *(site if site_style else []),
            *(
                [RandEndorectalCoild(0.2, pixel_mm), RandReslicedd(0.1, pixel_mm)]
                if protocols
                else []
            ),
        ]
    )
    augment.set_random_state(seed)
    return augment


# Bump when training_augmentation changes: cached augmented views would no longer match.
AUGMENTATION_VERSION = 1


def view_seed(seed: int, index: int, view: int) -> int:
    """Augmentation seed of view ``view`` of slice ``index`` (a run's ``seed``).

    The soft-target cache and the training loop derive a view's augmentation from this one
    function, so a teacher's cached output is for exactly the image the student sees.
    """
    return int(np.random.SeedSequence([seed, index, view]).generate_state(1)[0] % 2**31)


class SliceDataset(Dataset):
    """Every axial slice of a list of volumes as ``{"image": (C,H,W), "label": (1,H,W)}``
    (C = 1, or 2 * ``context_slices`` + 1 with neighbouring slices as channels),
    plus ``"teacher": (K,H,W)`` when the volumes carry K volume teachers' maps.

    Items also carry ``volume`` (index into ``volumes``) and ``slice`` so predictions can be
    stacked back into volumes.
    """

    def __init__(
        self,
        volumes: list[PreprocessedVolume],
        augment: Compose | None = None,
        context_slices: int = 0,
    ) -> None:
        self.volumes = volumes
        self.augment = augment
        self.context_slices = context_slices  # neighbours per side stacked as channels
        self.index = [(v, z) for v, vol in enumerate(volumes) for z in range(len(vol.image))]

    def __len__(self) -> int:
        return len(self.index)

    def view(self, index: int, seed: int) -> dict[str, torch.Tensor | int]:
        """Slice ``index`` augmented with the given seed (unaugmented without augmentation)."""
        if self.augment is not None:
            self.augment.set_random_state(seed)
        return self[index]

    def labelled(self) -> np.ndarray:
        """Boolean per item: does the slice come from a labelled volume?"""
        flags = [np.full(len(vol.image), vol.labelled) for vol in self.volumes]
        return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)

    def has_gland(self) -> np.ndarray:
        """Boolean per item: does the slice contain gland (for foreground-aware sampling)."""
        flags = [vol.gland_slices for vol in self.volumes]
        return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor | int]:
        v, z = self.index[item]
        vol = self.volumes[v]
        sample = {
            "image": torch.from_numpy(
                np.ascontiguousarray(slice_stack(vol.image, z, self.context_slices), np.float32)
            ),
            "label": torch.from_numpy(np.ascontiguousarray(vol.mask[z][None], dtype=np.float32)),
        }
        if vol.teacher_maps:
            maps = np.stack([gland[z] for gland in vol.teacher_maps])
            sample["teacher"] = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
        if self.augment is not None:
            sample = self.augment(sample)
            sample = {
                k: torch.as_tensor(np.asarray(t), dtype=torch.float32) for k, t in sample.items()
            }
        sample["label"] = sample["label"].round().to(torch.int64)
        return {**sample, "volume": v, "slice": z}
