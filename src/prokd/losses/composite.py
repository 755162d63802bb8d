"""The composite training loss: supervised Dice + Lovász, plus KL and feature distillation.

``total = w_dice*Dice + w_lovasz*Lovász + w_kl*T^2*KL + w_feat*sum_taps feature``; the
distillation terms are present only when teachers' outputs are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from prokd.losses.distillation import (
    FeatureDistillation,
    expand_teacher_weights,
    kl_distillation,
    soft_targets,
)
from prokd.losses.lovasz import lovasz_softmax


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term of the composite loss."""

    dice: float = 1.0
    lovasz: float = 1.0
    kl: float = 1.0
    feature: float = 1.0


@dataclass
class LossParts:
    """The total loss and each weighted term (for logs), keyed by term name."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


class CompositeLoss(nn.Module):
    """Supervised and distillation loss for one student and zero, one or several teachers.

    Args:
        weights: term weights.
        temperature: softmax temperature of the KL term.
        feature_loss: feature distillation with its adapters, or ``None`` for no feature term.
        lovasz_per_image: Lovász per image (True) or over the whole batch (False).
        lovasz_classes: ``"present"`` or ``"all"``.
    """

    def __init__(
        self,
        weights: LossWeights = LossWeights(),
        temperature: float = 4.0,
        feature_loss: FeatureDistillation | None = None,
        lovasz_per_image: bool = False,
        lovasz_classes: str = "present",
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.weights = weights
        self.temperature = temperature
        self.feature_loss = feature_loss
        self.lovasz_per_image = lovasz_per_image
        self.lovasz_classes = lovasz_classes
        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def supervised_parts(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        labelled: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The ground-truth terms (Dice, Lovász) of a batch, weighted.

        Both are batch-level (not means over samples): in data-parallel training they are
        computed on the batch gathered from every rank. ``labelled`` (B,) bool restricts them
        to the slices with real labels; a batch without any gives zero terms.
        """
        w = self.weights
        if labelled is not None:
            student_logits, labels = student_logits[labelled], labels[labelled]
            if not len(labels):
                zero = student_logits.sum() * 0.0
                return {"dice": zero, "lovasz": zero}
        return {
            "dice": w.dice * self.dice(student_logits, labels),
            "lovasz": w.lovasz
            * lovasz_softmax(
                F.softmax(student_logits, 1), labels, self.lovasz_classes, self.lovasz_per_image
            ),
        }

    def teacher_parts(
        self,
        student_logits: torch.Tensor,
        student_features: dict[str, torch.Tensor] | None,
        teacher_logits: list[torch.Tensor],
        teacher_features: list[dict[str, torch.Tensor]] | None,
        teacher_weights: torch.Tensor | None = None,
        kl_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The teacher terms (KL, features), weighted: means over the batch's pixels."""
        w = self.weights
        b, _, h, wd = student_logits.shape
        mix = expand_teacher_weights(teacher_weights, len(teacher_logits), b, h, wd)
        mix = mix.to(student_logits)
        targets = soft_targets(teacher_logits, mix, self.temperature)
        parts = {"kl": w.kl * kl_distillation(student_logits, targets, self.temperature, kl_mask)}
        if self.feature_loss is not None and w.feature > 0:
            if student_features is None or teacher_features is None:
                raise ValueError("the feature term needs student and teacher features")
            per_tap = self.feature_loss(student_features, teacher_features, mix)
            parts["feature"] = w.feature * torch.stack(list(per_tap.values())).sum()
        return parts

    def forward(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        student_features: dict[str, torch.Tensor] | None = None,
        teacher_logits: list[torch.Tensor] | None = None,
        teacher_features: list[dict[str, torch.Tensor]] | None = None,
        teacher_weights: torch.Tensor | None = None,
        kl_mask: torch.Tensor | None = None,
        labelled: torch.Tensor | None = None,
    ) -> LossParts:
        """Compute every active term.

        Args:
            student_logits: (B, C, H, W).
            labels: (B, 1, H, W) integer ground truth.
            student_features: tap -> student feature map (needed for the feature term).
            teacher_logits: K teachers' (B, C, H, W) logits, or ``None`` for supervised only.
            teacher_features: K dicts tap -> teacher feature map.
            teacher_weights: (K,), (B, K) or (B, K, H, W), summing to 1 over teachers;
                ``None`` for uniform.
            kl_mask: optional pixels to include in the KL term.
            labelled: (B,) bool, the slices the ground-truth terms apply to (default: all).
        """
        parts = self.supervised_parts(student_logits, labels, labelled)
        if teacher_logits:
            parts.update(
                self.teacher_parts(
                    student_logits,
                    student_features,
                    teacher_logits,
                    teacher_features,
                    teacher_weights,
                    kl_mask,
                )
            )
        return LossParts(torch.stack(list(parts.values())).sum(), parts)
