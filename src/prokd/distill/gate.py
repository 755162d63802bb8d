"""A learned per-pixel gate over teachers, fitted on labelled slices and used label-free.

The gate scores every teacher at every pixel with one small convolutional network shared by
all teachers. Its input, per teacher: the slice (its centre channel), the teacher's gland
probability, the other teachers' mean gland probability and the teacher's entropy. The
weights are the softmax of the scores over teachers. Because the network is shared, it
learns what a trustworthy teacher output looks like, not which teacher to trust: it applies
to teachers (and sites) whose labels it never saw.

Fitting minimises the negative log-likelihood and the soft Dice loss of the weighted mixture
against the labels of the student's labelled slices. A teacher takes no part where it was
trained: on a slice from one of its own training cases (or, when those are unknown, from its
own site) its score is masked out, and its prediction is left out of the other teachers'
mean, so the gate learns from teachers seen on data new to them, the situation of every
unlabelled slice from another site. Slices with fewer than two
such teachers are left out of the fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prokd.data.cache import PreprocessedVolume
from prokd.data.slices import SliceDataset
from prokd.distill.teacher_maps import entropy, others_mean, stack_probabilities
from prokd.errors import ConfigError

TeacherLogits = Callable[[torch.Tensor], list[torch.Tensor]]  # images -> K (B, 2, H, W)

HIDDEN = 8
FIT_STEPS = 200
FIT_BATCH = 8
FIT_LR = 3e-3
MAX_SLICES = 512  # labelled slices the fit reads at most (evenly spaced)
SEED = 0  # the fit draws its initial weights and batches from its own generator


def teacher_inputs(
    probs: torch.Tensor, images: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """The gate's input per teacher, (B, K, 4, H, W), from the teachers' probabilities
    (B, K, 2, H, W): slice, gland probability, the mean gland probability of the other
    teachers ``allowed`` (B, K) on the slice (default: all), entropy."""
    gland = probs[:, :, 1]  # (B, K, H, W)
    centre = images[:, images.shape[1] // 2].float().to(gland.device)
    slice_maps = centre[:, None].expand_as(gland)
    return torch.stack([slice_maps, gland, others_mean(gland, allowed), entropy(probs)], dim=2)


class PixelGate(nn.Module):
    """Scores (B, K, H, W) from :func:`teacher_inputs`, one network for every teacher."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        b, k, c, h, w = inputs.shape
        return self.net(inputs.reshape(b * k, c, h, w)).reshape(b, k, h, w)


def gate_weights(scores: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of (B, K, H, W) scores over teachers; ``allowed`` (B, K) masks teachers out."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, :, None, None], float("-inf"))
    return torch.softmax(scores, dim=1)


def mixture_loss(weights: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL plus soft gland Dice loss of the mixture ``sum_k w_k p_k`` (probs (B, K, 2, H, W))
    against integer labels (B, H, W)."""
    mixture = (weights[:, :, None] * probs).sum(1).clamp_min(1e-6)  # (B, 2, H, W)
    nll = F.nll_loss(torch.log(mixture), labels)
    gland, truth = mixture[:, 1], (labels == 1).float()
    dice = 1 - (2 * (gland * truth).sum() + 1) / (gland.sum() + truth.sum() + 1)
    return nll + dice


def held_out(
    volume: PreprocessedVolume,
    sites: Sequence[str] | None,
    training_cases: Sequence[frozenset[str]] | None,
    teachers: int,
) -> list[bool]:
    """Per teacher, whether ``volume`` is new to it: not one of its training cases (when
    known), else not from its site (when known), else true."""
    if training_cases is not None:
        return [volume.case_id not in cases for cases in training_cases]
    if sites is not None:
        return [volume.site != site for site in sites]
    return [True] * teachers


def fitting_volumes(
    volumes: Sequence[PreprocessedVolume],
    teachers: int,
    sites: Sequence[str] | None = None,
    training_cases: Sequence[frozenset[str]] | None = None,
) -> list[tuple[PreprocessedVolume, list[bool]]]:
    """The labelled volumes the gate is fitted on, each with its :func:`held_out` flags.

    Raises:
        ConfigError: no labelled volume on which at least two teachers are held out.
    """
    labelled = [v for v in volumes if v.labelled]
    flags = [held_out(v, sites, training_cases, teachers) for v in labelled]
    usable = [(v, f) for v, f in zip(labelled, flags, strict=True) if sum(f) >= 2]
    if not usable:
        raise ConfigError(
            "teacher weighting 'gate': no labelled slice on which two teachers are held out "
            "(each teacher is masked out on its own training cases or site)"
        )
    return usable


def fit_gate(
    teacher_logits: TeacherLogits,
    volumes: Sequence[PreprocessedVolume],
    context_slices: int,
    teachers: int,
    sites: Sequence[str] | None = None,
    training_cases: Sequence[frozenset[str]] | None = None,
    device: torch.device | None = None,
) -> PixelGate:
    """A :class:`PixelGate` fitted on the labelled slices of ``volumes`` (see the module).

    Raises:
        ConfigError: no labelled slice on which at least two teachers are held out, or the
            weights are asked for more teachers than ``teacher_logits`` runs.
    """
    usable = fitting_volumes(volumes, teachers, sites, training_cases)
    dataset = SliceDataset([v for v, _ in usable], None, context_slices)
    rows = np.linspace(0, len(dataset) - 1, min(len(dataset), MAX_SLICES)).round().astype(int)
    items = [dataset[int(r)] for r in np.unique(rows)]
    images = torch.stack([item["image"] for item in items])
    labels = torch.stack([item["label"][0] for item in items]).to(device)
    allowed = torch.tensor([usable[item["volume"]][1] for item in items], device=device)
    with torch.inference_mode():
        logits = [
            torch.cat(z).to(device)
            for z in zip(*(teacher_logits(b) for b in images.split(64)), strict=True)
        ]
    if len(logits) != teachers:
        raise ConfigError(
            "teacher weighting 'gate': fitted on the trained teachers only, so it cannot "
            "weigh volume teachers beside them"
        )
    probs = stack_probabilities(logits).clone()  # out of inference mode
    inputs = teacher_inputs(probs, images, allowed)  # a masked teacher informs no other
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        gate = PixelGate().to(device)
        optimiser = torch.optim.Adam(gate.parameters(), lr=FIT_LR)
        for _ in range(FIT_STEPS):
            batch = torch.randint(len(items), (min(FIT_BATCH, len(items)),))
            weights = gate_weights(gate(inputs[batch]), allowed[batch])
            loss = mixture_loss(weights, probs[batch], labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return gate.eval().requires_grad_(False)
