"""Teacher weighting strategies for multi-teacher distillation (procedure 2).

Each strategy turns the K teachers' logits (and the ground truth, and the student's input
slices) into weights of shape (B, K, H, W) that sum to 1 over teachers; the student's
targets are the weighted mixture. ``labelled`` (B,) marks the slices whose labels are real;
strategies that read labels weigh the teachers of unlabelled slices uniformly. Most
distillation happens on unlabelled slices, so the label-free strategies (``confidence``,
``agreement``, ``site``, ``gate``) weigh every slice from the image and the teachers alone
(``gate`` is fitted on the labelled slices first, then used on every slice).

Every strategy is a class in :data:`WEIGHTINGS`, built through :meth:`TeacherWeighting.build`
from :class:`TeacherFacts` (:func:`build_weighting` looks the name up, nothing more). A
strategy with a softmax temperature states its default once, as ``default_temperature``; the
config's ``distill.*_temperature`` keys start from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from prokd.data.cache import PreprocessedVolume
from prokd.distill.gate import (
    PixelGate,
    TeacherLogits,
    fit_gate,
    fitting_volumes,
    gate_weights,
    teacher_inputs,
)
from prokd.distill.site_classifier import SiteClassifier, check_sites
from prokd.distill.teacher_maps import entropy, others_mean, stack_probabilities
from prokd.errors import ConfigError


@dataclass(frozen=True)
class TeacherFacts:
    """What a strategy may know when it is built: each teacher's validation Dice, the site
    each teacher was trained at, the student's training volumes (labelled and unlabelled,
    each with its site), the teachers themselves (``teacher_logits``: images -> each
    teacher's logits), the case ids each teacher was trained on, and the neighbouring
    slices per side that the networks see."""

    validation_dice: Sequence[float] | None = None
    sites: Sequence[str] | None = None
    volumes: Sequence[PreprocessedVolume] = ()
    teacher_logits: TeacherLogits | None = None
    training_cases: Sequence[frozenset[str]] | None = None
    context_slices: int = 0


class TeacherWeighting:
    """Base class: ``weighting(teacher_logits, labels, labelled, images) -> (B, K, H, W)``."""

    name = ""
    default_temperature: float | None = None  # strategies without a temperature: None

    @classmethod
    def build(
        cls, temperature: float | None = None, facts: TeacherFacts = TeacherFacts()
    ) -> TeacherWeighting:
        """The strategy with ``temperature`` (default: its own), from the ``facts`` it needs."""
        return cls()

    def __call__(
        self,
        teacher_logits: Sequence[torch.Tensor],
        labels: torch.Tensor,
        labelled: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class TemperatureWeighting(TeacherWeighting):
    """A strategy whose weights are a softmax with a temperature."""

    default_temperature = 1.0

    def __init__(self, temperature: float | None = None) -> None:
        self.temperature = self.default_temperature if temperature is None else temperature

    @classmethod
    def build(
        cls, temperature: float | None = None, facts: TeacherFacts = TeacherFacts()
    ) -> TeacherWeighting:
        return cls(temperature)


WEIGHTINGS: dict[str, type[TeacherWeighting]] = {}


def register_weighting(cls: type[TeacherWeighting]) -> type[TeacherWeighting]:
    """Class decorator adding a strategy to :data:`WEIGHTINGS` under ``cls.name``."""
    WEIGHTINGS[cls.name] = cls
    return cls


@register_weighting
class UniformWeighting(TeacherWeighting):
    """``w_k = 1 / K`` everywhere: the baseline to beat."""

    name = "uniform"

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
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
        cls, temperature: float | None = None, facts: TeacherFacts = TeacherFacts()
    ) -> TeacherWeighting:
        """Raises:
        ConfigError: no validation scores to weigh by."""
        if not facts.validation_dice:
            raise ConfigError("teacher weighting 'validation' needs the teachers' validation Dice")
        return cls(facts.validation_dice, temperature)

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        b, _, h, w = teacher_logits[0].shape
        weights = self.weights.to(teacher_logits[0])
        return weights[None, :, None, None].expand(b, len(weights), h, w).contiguous()


@register_weighting
class ConfidenceWeighting(TemperatureWeighting):
    """Per pixel, confident teachers weigh more: ``softmax_k(-entropy_k / temperature)``."""

    name = "confidence"
    default_temperature = 0.1

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        per_pixel = entropy(stack_probabilities(teacher_logits))  # (B, K, H, W)
        return torch.softmax(-per_pixel / self.temperature, dim=1)


@register_weighting
class LabelAwareWeighting(TemperatureWeighting):
    """Teachers that agree with the ground truth weigh more: ``softmax_k(-CE_k / temperature)``,
    per pixel (with temperature 1, ``w_k`` is proportional to the probability the teacher
    gives the true class)."""

    name = "label-aware"
    default_temperature = 1.0

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        target = labels[:, 0] if labels.dim() == 4 else labels
        ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in teacher_logits], 1)
        weights = torch.softmax(-ce / self.temperature, dim=1)
        if labelled is None:
            return weights
        uniform = torch.full_like(weights, 1.0 / len(teacher_logits))
        return torch.where(labelled.to(weights.device)[:, None, None, None], weights, uniform)


@register_weighting
class AgreementWeighting(TemperatureWeighting):
    """Per pixel, teachers that agree with the others weigh more:
    ``softmax_k(-|p_k - mean_{j != k} p_j| / temperature)`` on gland probabilities ``p``; one
    teacher alone gets weight 1. Label-free: an outlier teacher (a site model far from its
    own data) loses weight wherever it disagrees."""

    name = "agreement"
    default_temperature = 0.1

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        gland = stack_probabilities(teacher_logits)[:, :, 1]  # (B, K, H, W)
        if gland.shape[1] == 1:
            return torch.ones_like(gland)
        return torch.softmax(-(gland - others_mean(gland)).abs() / self.temperature, dim=1)


@register_weighting
class SiteWeighting(TemperatureWeighting):
    """Per slice, teacher k weighs as much as the slice looks like teacher k's site:
    ``softmax_k(log p(site_k | slice) / temperature)`` from a small domain classifier on the
    slice's intensity statistics, fitted on the student's training slices, whose sites are
    known (:class:`~prokd.distill.site_classifier.SiteClassifier`). Label-free at use."""

    name = "site"
    default_temperature = 1.0

    def __init__(self, facts: TeacherFacts, temperature: float | None = None) -> None:
        super().__init__(temperature)
        self.facts = facts

    @classmethod
    def build(
        cls, temperature: float | None = None, facts: TeacherFacts = TeacherFacts()
    ) -> TeacherWeighting:
        """Raises:
        ConfigError: the teachers' sites are unknown, or no training slice comes from one."""
        if not facts.sites:
            raise ConfigError("teacher weighting 'site' needs the site of each teacher")
        check_sites(facts.volumes, facts.sites)
        return cls(facts, temperature)

    @cached_property
    def classifier(self) -> SiteClassifier:
        """The domain classifier, fitted when the weights are first asked for (building a
        job, e.g. for its reuse key, fits nothing)."""
        return SiteClassifier.fit(self.facts.volumes, list(self.facts.sites))

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        if images is None:
            raise ValueError("teacher weighting 'site' needs the student's input slices")
        b, _, h, w = teacher_logits[0].shape
        log_p = self.classifier.log_probabilities(images.to(teacher_logits[0].device))
        weights = torch.softmax(log_p / self.temperature, dim=1)  # (B, K)
        return weights[:, :, None, None].expand(b, weights.shape[1], h, w).contiguous()


@register_weighting
class GateWeighting(TeacherWeighting):
    """Per pixel, a learned gate: ``softmax_k(g(slice, p_k, mean_{j != k} p_j, H_k))``, one
    small network ``g`` shared by all teachers, fitted on the student's labelled slices with
    each teacher masked out where it was trained (:mod:`prokd.distill.gate`). Label-free at
    use."""

    name = "gate"

    def __init__(self, facts: TeacherFacts) -> None:
        self.facts = facts
        self._gate: PixelGate | None = None

    @classmethod
    def build(
        cls, temperature: float | None = None, facts: TeacherFacts = TeacherFacts()
    ) -> TeacherWeighting:
        """Raises:
        ConfigError: the teachers cannot be run, no training volume is labelled, or (with
            the teachers' sites or training cases known) none holds out two teachers."""
        if facts.teacher_logits is None:
            raise ConfigError("teacher weighting 'gate' needs the teachers to fit the gate")
        if not any(v.labelled for v in facts.volumes):
            raise ConfigError("teacher weighting 'gate' needs labelled slices to fit the gate")
        known = facts.training_cases if facts.training_cases is not None else facts.sites
        if known is not None:  # checked before training starts, not at its first step
            fitting_volumes(facts.volumes, len(known), facts.sites, facts.training_cases)
        return cls(facts)

    def gate(self, teachers: int, device: torch.device) -> PixelGate:
        """The gate, fitted when the weights are first asked for (building a job fits
        nothing)."""
        if self._gate is None:
            f = self.facts
            self._gate = fit_gate(
                f.teacher_logits,
                f.volumes,
                f.context_slices,
                teachers,
                sites=f.sites,
                training_cases=f.training_cases,
                device=device,
            )
        return self._gate

    def __call__(self, teacher_logits, labels, labelled=None, images=None):
        if images is None:
            raise ValueError("teacher weighting 'gate' needs the student's input slices")
        gate = self.gate(len(teacher_logits), teacher_logits[0].device)
        with torch.no_grad():
            scores = gate(teacher_inputs(stack_probabilities(teacher_logits), images))
        return gate_weights(scores).to(teacher_logits[0].dtype)


def build_weighting(
    name: str, facts: TeacherFacts = TeacherFacts(), temperature: float | None = None
) -> TeacherWeighting:
    """A strategy by name, through its class's :meth:`~TeacherWeighting.build` with the
    ``facts`` it needs (``validation``: each teacher's validation Dice; ``site``: each
    teacher's site and the training volumes; ``gate``: the teachers and the training
    volumes, with the teachers' training cases or sites); ``temperature`` replaces the strategy's
    default (strategies without one ignore it).

    Raises:
        ConfigError: unknown name, or a strategy without the facts it needs.
    """
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown teacher weighting {name!r} (known: {', '.join(WEIGHTINGS)})")
    return WEIGHTINGS[name].build(temperature, facts)
