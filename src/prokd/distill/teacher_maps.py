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


def others_mean(gland: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Per teacher, the mean of the *other* teachers' gland probabilities (B, K, H, W),
    counting only the teachers ``allowed`` (B, K) on each slice (default: all); a teacher
    with no other allowed teacher gets its own."""
    if allowed is None:
        allowed = torch.ones(gland.shape[:2], dtype=torch.bool, device=gland.device)
    weight = allowed.to(gland.dtype)[:, :, None, None]
    others_total = (gland * weight).sum(1, keepdim=True) - gland * weight
    others_count = weight.sum(1, keepdim=True) - weight
    return torch.where(others_count > 0, others_total / others_count.clamp_min(1), gland)
