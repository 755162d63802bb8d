"""Per-pixel maps of K teachers' outputs that the weighting strategies read."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def stack_probabilities(teacher_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The teachers' class probabilities, (B, K, C, H, W), from K logits (B, C, H, W)."""
    return torch.stack([F.softmax(z, dim=1) for z in teacher_logits], dim=1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Each teacher's per-pixel entropy, (B, K, H, W), from (B, K, C, H, W) probabilities."""
    return -torch.xlogy(probs, probs).sum(2)


def others_mean(gland: torch.Tensor) -> torch.Tensor:
    """Per teacher, the mean of the *other* teachers' gland probabilities (B, K, H, W); one
    teacher alone is its own."""
    k = gland.shape[1]
    return gland if k == 1 else (gland.sum(1, keepdim=True) - gland) / (k - 1)
