"""Teacher weighting strategies for multi-teacher distillation (procedure 2).

Each strategy turns the K teachers' logits (and the ground truth) into weights of shape
(B, K, H, W) that sum to 1 over teachers; the student's targets are the weighted mixture.
``labelled`` (B,) marks the slices whose labels are real; strategies that read labels weigh
the teachers of unlabelled slices uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from prokd.errors import ConfigError


class TeacherWeighting:
    """Base class: ``weighting(teacher_logits, labels, labelled) -> (B, K, H, W)`` weights."""

    name = ""

    def __call__(
        self,
        teacher_logits: Sequence[torch.Tensor],
        labels: torch.Tensor,
        labelled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


WEIGHTINGS: dict[str, Callable[..., TeacherWeighting]] = {}


def register_weighting(cls: type[TeacherWeighting]) -> type[TeacherWeighting]:
    """Class decorator adding a strategy to :data:`WEIGHTINGS` under ``cls.name``."""
    WEIGHTINGS[cls.name] = cls
    return cls


def _stack_probs(teacher_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([F.softmax(z, dim=1) for z in teacher_logits], dim=1)  # (B, K, C, H, W)


@register_weighting
class UniformWeighting(TeacherWeighting):
    """``w_k = 1 / K`` everywhere: the baseline to beat."""

    name = "uniform"

    def __call__(self, teacher_logits, labels, labelled=None):
        b, _, h, w = teacher_logits[0].shape
        k = len(teacher_logits)
        return teacher_logits[0].new_full((b, k, h, w), 1.0 / k)


@register_weighting
class ValidationWeighting(TeacherWeighting):
    """Fixed weights from each teacher's validation Dice: ``softmax(dice / temperature)``."""

    name = "validation"

    def __init__(self, validation_dice: Sequence[float], temperature: float = 0.05) -> None:
        self.weights = torch.softmax(torch.tensor(list(validation_dice)) / temperature, 0)

    def __call__(self, teacher_logits, labels, labelled=None):
        b, _, h, w = teacher_logits[0].shape
        weights = self.weights.to(teacher_logits[0])
        return weights[None, :, None, None].expand(b, len(weights), h, w).contiguous()


@register_weighting
class ConfidenceWeighting(TeacherWeighting):
    """Per pixel, confident teachers weigh more: ``softmax_k(-entropy_k / temperature)``."""

    name = "confidence"

    def __init__(self, temperature: float = 0.1) -> None:
        self.temperature = temperature

    def __call__(self, teacher_logits, labels, labelled=None):
        probs = _stack_probs(teacher_logits)
        entropy = -torch.xlogy(probs, probs).sum(2)  # (B, K, H, W)
        return torch.softmax(-entropy / self.temperature, dim=1)


@register_weighting
class LabelAwareWeighting(TeacherWeighting):
    """Teachers that agree with the ground truth weigh more: ``softmax_k(-CE_k / temperature)``.

    Per pixel by default (with temperature 1, ``w_k`` is proportional to the probability the
    teacher gives the true class); ``per_sample=True`` uses each slice's mean cross-entropy.
    """

    name = "label-aware"

    def __init__(self, temperature: float = 1.0, per_sample: bool = False) -> None:
        self.temperature = temperature
        self.per_sample = per_sample

    def __call__(self, teacher_logits, labels, labelled=None):
        target = labels[:, 0] if labels.dim() == 4 else labels
        ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in teacher_logits], 1)
        if self.per_sample:
            ce = ce.mean(dim=(2, 3), keepdim=True).expand_as(ce)
        weights = torch.softmax(-ce / self.temperature, dim=1)
        if labelled is None:
            return weights
        uniform = torch.full_like(weights, 1.0 / len(teacher_logits))
        return torch.where(labelled.to(weights.device)[:, None, None, None], weights, uniform)


def build_weighting(
    name: str,
    validation_dice: Sequence[float] | None = None,
    temperature: float | None = None,
) -> TeacherWeighting:
    """A strategy by name; ``validation`` needs each teacher's validation Dice.

    ``temperature`` replaces the strategy's default softmax temperature (strategies without
    one ignore it).

    Raises:
        ConfigError: unknown name, or ``validation`` without validation scores.
    """
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown teacher weighting {name!r} (known: {', '.join(WEIGHTINGS)})")
    if name == "validation":
        if not validation_dice:
            raise ConfigError("teacher weighting 'validation' needs the teachers' validation Dice")
        return ValidationWeighting(validation_dice, *_given(temperature))
    if name in ("confidence", "label-aware"):
        return WEIGHTINGS[name](*_given(temperature))
    return WEIGHTINGS[name]()


def _given(temperature: float | None) -> tuple[float, ...]:
    return () if temperature is None else (temperature,)
