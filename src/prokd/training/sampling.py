"""Which slices an epoch trains on, batch by batch, and how a batch is stacked."""

from __future__ import annotations

import random

import numpy as np
import torch

from prokd.data.slices import SliceDataset


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_order(
    dataset: SliceDataset,
    count: int,
    batch_size: int,
    foreground_fraction: float,
    unlabelled_share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Slice indices for one epoch, batch after batch.

    Each batch of ``batch_size`` holds ``round(batch_size * unlabelled_share)`` slices of
    unlabelled volumes (none when there are none), drawn uniformly; the labelled rest follow
    :func:`sample_slices`.
    """
    labelled = dataset.labelled()
    known, unknown = np.flatnonzero(labelled), np.flatnonzero(~labelled)
    if not len(unknown) or not unlabelled_share:
        fg = dataset.has_gland() & labelled
        pool = known if len(unknown) else np.arange(len(dataset))
        return pool[sample_slices(fg[pool], count, foreground_fraction, rng)]
    sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    extra = [int(round(size * unlabelled_share)) if len(known) else size for size in sizes]
    drawn = sample_slices(dataset.has_gland()[known], count - sum(extra), foreground_fraction, rng)
    labelled_rows = iter(known[drawn])
    unlabelled_rows = iter(rng.choice(unknown, size=sum(extra), replace=sum(extra) > len(unknown)))
    order = []
    for size, n in zip(sizes, extra, strict=True):
        order += [next(labelled_rows) for _ in range(size - n)]
        order += [next(unlabelled_rows) for _ in range(n)]
    return np.asarray(order, dtype=int)


def sample_slices(
    has_gland: np.ndarray, count: int, foreground_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Slice indices for one epoch, ``foreground_fraction`` of them containing gland.

    Draws without replacement while a group has enough slices; falls back to the other group
    when one is empty.
    """
    fg, bg = np.flatnonzero(has_gland), np.flatnonzero(~has_gland)
    n_fg = int(round(count * foreground_fraction)) if len(bg) else count
    n_fg = n_fg if len(fg) else 0
    parts = []
    for pool, n in ((fg, n_fg), (bg, count - n_fg)):
        if n:
            parts.append(rng.choice(pool, size=n, replace=n > len(pool)))
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=int)
    return rng.permutation(indices)


def collate_slices(
    dataset: SliceDataset, indices: np.ndarray, seeds: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack slices (images, labels, and volume teachers' maps if any); each augmented with
    its own seed, so a slice's augmentation does not depend on which rank draws it or what
    came before it."""
    items = [dataset.view(int(i), int(s)) for i, s in zip(indices, seeds, strict=True)]
    maps = torch.stack([it["teacher"] for it in items]) if "teacher" in items[0] else None
    return (
        torch.stack([it["image"] for it in items]),
        torch.stack([it["label"] for it in items]),
        maps,
    )
