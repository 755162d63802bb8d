"""Distillation losses: temperature-softened KL between teacher and student outputs, and
feature distillation through learned 1x1 adapters.

Several teachers are combined with per-teacher weights that sum to 1 over teachers; weights
may be global (K,), per sample (B, K) or per pixel (B, K, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NORMS = ("pixel", "channel")


def expand_teacher_weights(
    weights: torch.Tensor | None, teachers: int, batch: int, height: int, width: int
) -> torch.Tensor:
    """Per-teacher weights as a (B, K, H, W) tensor; ``None`` means uniform.

    Raises:
        ValueError: wrong shape, negative weights, or weights that do not sum to 1 over K.
    """
    if weights is None:
        return torch.full((batch, teachers, height, width), 1.0 / teachers)
    weights = weights.detach()
    if weights.dim() == 1:
        weights = weights[None, :, None, None]
    elif weights.dim() == 2:
        weights = weights[:, :, None, None]
    if weights.dim() != 4 or weights.shape[1] != teachers:
        raise ValueError(
            f"teacher weights of shape {tuple(weights.shape)} do not fit {teachers} "
            "teachers: use (K,), (B, K) or (B, K, H, W)"
        )
    if (weights < 0).any() or not torch.allclose(
        weights.sum(1), torch.ones((), dtype=weights.dtype), atol=1e-4
    ):
        raise ValueError("teacher weights must be non-negative and sum to 1 over teachers")
    return weights.expand(batch, teachers, height, width)


def soft_targets(
    teacher_logits: list[torch.Tensor], weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Weighted mixture of the teachers' softened probabilities, (B, C, H, W).

    Args:
        teacher_logits: K tensors (B, C, H, W); detached here (no gradient into teachers).
        weights: (B, K, H, W) weights summing to 1 over K.
        temperature: softmax temperature T.
    """
    probs = torch.stack([F.softmax(z.detach() / temperature, dim=1) for z in teacher_logits], 1)
    return (probs * weights[:, :, None]).sum(1)


def kl_distillation(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(p_teacher^T || p_student^T)`` per pixel, averaged over (masked) pixels.

    The ``T^2`` factor keeps the gradient scale independent of T (Hinton et al., 2015).

    Args:
        student_logits: (B, C, H, W).
        target_probs: (B, C, H, W) softened teacher probabilities (see :func:`soft_targets`).
        temperature: T used for both teacher and student.
        mask: optional (B, H, W) or (B, 1, H, W) boolean/0-1 map of pixels to include.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    per_pixel = (torch.xlogy(target_probs, target_probs) - target_probs * log_student).sum(1)
    if mask is None:
        mean = per_pixel.mean()
    else:
        mask = mask.reshape(per_pixel.shape).to(per_pixel.dtype)
        mean = (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)
    return mean * temperature**2


def _normalise(features: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "pixel":
        return F.normalize(features, dim=1)
    return F.normalize(features.flatten(2), dim=2).view_as(features)


class FeatureDistillation(nn.Module):
    """Feature distillation at named taps, one learned adapter per (teacher, tap).

    Each adapter (1x1 conv + batch norm) maps student channels to that teacher's channels (a
    teacher without taps, such as a volume teacher, has none and adds no feature error);
    the adapted student map is resized to the teacher's spatial size (bilinear), both are
    L2-normalised per pixel (over channels) or per channel (over pixels), and the squared
    error is averaged over channels. Per-pixel teacher weights (resized to the map) mix the
    teachers' errors. Adapters are trained with the student and dropped at export.
    """

    def __init__(
        self,
        student_channels: dict[str, int],
        teacher_channels: list[dict[str, int]],
        normalise: str = "pixel",
    ) -> None:
        super().__init__()
        if normalise not in FEATURE_NORMS:
            raise ValueError(f"normalise must be one of {FEATURE_NORMS}, got {normalise!r}")
        self.normalise = normalise
        self.taps = list(student_channels)
        self.adapters = nn.ModuleList(
            nn.ModuleDict(
                {
                    tap: nn.Sequential(
                        nn.Conv2d(student_channels[tap], channels[tap], 1, bias=False),
                        nn.BatchNorm2d(channels[tap]),
                    )
                    for tap in self.taps
                    if tap in channels
                }
            )
            for channels in teacher_channels
        )

    def forward(
        self,
        student_features: dict[str, torch.Tensor],
        teacher_features: list[dict[str, torch.Tensor]],
        weights: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Loss per tap.

        Args:
            student_features: tap -> (B, Cs, h, w).
            teacher_features: per teacher, tap -> (B, Ct, h', w'); detached here.
            weights: (B, K, H, W) teacher weights summing to 1 over K.
        """
        if len(teacher_features) != len(self.adapters):
            raise ValueError(
                f"{len(teacher_features)} teachers' features for {len(self.adapters)} adapter sets"
            )
        losses = {}
        for tap in self.taps:
            student = student_features[tap]
            total = student.new_zeros(())
            for k, (adapters, features) in enumerate(
                zip(self.adapters, teacher_features, strict=True)
            ):
                if tap not in adapters:  # a teacher without this tap (a black box)
                    continue
                target = features[tap].detach()
                adapted = adapters[tap](student)
                if adapted.shape[-2:] != target.shape[-2:]:
                    adapted = F.interpolate(
                        adapted, size=target.shape[-2:], mode="bilinear", align_corners=False
                    )
                error = (
                    (_normalise(adapted, self.normalise) - _normalise(target, self.normalise))
                    .pow(2)
                    .mean(1)
                )
                w = F.interpolate(
                    weights[:, k : k + 1],
                    size=target.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )[:, 0]
                total = total + (w * error).mean()
            losses[tap] = total
        return losses
