"""Teacher weighting strategies for multi-teacher distillation (procedure 2).

Each strategy turns the K teachers' logits (and the ground truth) into weights of shape
(B, K, H, W) that sum to 1 over teachers; the student's targets are the weighted mixture.
``labelled`` (B,) marks the slices whose labels are real; strategies that read labels weigh
the teachers of unlabelled slices uniformly.

Every strategy is a class in :data:`WEIGHTINGS`, built through :meth:`TeacherWeighting.build`
(:func:`build_weighting` looks the name up, nothing more). A strategy with a softmax
temperature states its default once, as ``default_temperature``; the config's
``distill.*_temperature`` keys start from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from prokd.errors import ConfigError


class TeacherWeighting:
    """Base class: ``weighting(teacher_logits, labels, labelled) -> (B, K, H, W)`` weights."""

    name = ""
    default_temperature: float | None = None  # strategies without a temperature: None

    @classmethod
    def build(
        cls, temperature: float | None = None, validation_dice: Sequence[float] | None = None
    ) -> TeacherWeighting:
        """The strategy with ``temperature`` (default: its own); ``validation_dice`` is
        read by strategies that need the teachers' validation scores."""
        return cls()

    def __call__(
        self,
        teacher_logits: Sequence[torch.Tensor],
        labels: torch.Tensor,
        labelled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class TemperatureWeighting(TeacherWeighting):
    """A strategy whose weights are a softmax with a temperature."""

    default_temperature = 1.0

    def __init__(self, temperature: float | None = None) -> None:
        self.temperature = self.default_temperature if temperature is None else temperature

    @classmethod
    def build(
        cls, temperature: float | None = None, validation_dice: Sequence[float] | None = None
    ) -> TeacherWeighting:
        return cls(temperature)


WEIGHTINGS: dict[str, type[TeacherWeighting]] = {}


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
    default_temperature = 0.05

    def __init__(self, validation_dice: Sequence[float], temperature: float | None = None) -> None:
        self.temperature = self.default_temperature if temperature is None else temperature
        self.weights = torch.softmax(torch.tensor(list(validation_dice)) / self.temperature, 0)

    @classmethod
    def build(
        cls, temperature: float | None = None, validation_dice: Sequence[float] | None = None
    ) -> TeacherWeighting:
        """Raises:
        ConfigError: no validation scores to weigh by."""
        if not validation_dice:
            raise ConfigError("teacher weighting 'validation' needs the teachers' validation Dice")
        return cls(validation_dice, temperature)

    def __call__(self, teacher_logits, labels, labelled=None):
        b, _, h, w = teacher_logits[0].shape
        weights = self.weights.to(teacher_logits[0])
        return weights[None, :, None, None].expand(b, len(weights), h, w).contiguous()


@register_weighting
class ConfidenceWeighting(TemperatureWeighting):
    """Per pixel, confident teachers weigh more: ``softmax_k(-entropy_k / temperature)``."""

    name = "confidence"
    default_temperature = 0.1

    def __call__(self, teacher_logits, labels, labelled=None):
        probs = _stack_probs(teacher_logits)
        entropy = -torch.xlogy(probs, probs).sum(2)  # (B, K, H, W)
        return torch.softmax(-entropy / self.temperature, dim=1)


@register_weighting
class LabelAwareWeighting(TemperatureWeighting):
    """Teachers that agree with the ground truth weigh more: ``softmax_k(-CE_k / temperature)``,
    per pixel (with temperature 1, ``w_k`` is proportional to the probability the teacher
    gives the true class)."""

    name = "label-aware"
    default_temperature = 1.0

    def __call__(self, teacher_logits, labels, labelled=None):
        target = labels[:, 0] if labels.dim() == 4 else labels
        ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in teacher_logits], 1)
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
    """A strategy by name, through its class's :meth:`~TeacherWeighting.build`;
    ``validation`` needs each teacher's validation Dice; ``temperature`` replaces the
    strategy's default (strategies without one ignore it).

    Raises:
        ConfigError: unknown name, or ``validation`` without validation scores.
    """
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown teacher weighting {name!r} (known: {', '.join(WEIGHTINGS)})")
    return WEIGHTINGS[name].build(temperature, validation_dice)
