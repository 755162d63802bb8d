"""Frozen teachers run together: logits and tapped features, no gradients."""

from __future__ import annotations

import torch

from prokd.inference.teacher_files import OnnxNetwork
from prokd.inference.trained import TrainedModel
from prokd.models import get_spec
from prokd.models.taps import FeatureTaps, tap_shapes


class TeacherEnsemble:
    """K frozen teachers in eval mode; each sees the whole batch in one forward pass.

    A teacher is a prokd network (its taps pulled by forward hooks) or a site teacher file
    (:class:`~prokd.inference.teacher_files.OnnxNetwork`, whose taps are outputs).
    """

    def __init__(
        self,
        teachers: list[TrainedModel],
        with_features: bool = True,
        device: torch.device | None = None,
    ) -> None:
        if not teachers:
            raise ValueError("a teacher ensemble needs at least one teacher")
        self.teachers = teachers
        self.with_features = with_features
        for teacher in teachers:
            teacher.network.eval()
            teacher.network.requires_grad_(False)
            if device is not None:
                teacher.network.to(device)

    def __len__(self) -> int:
        return len(self.teachers)

    def feature_channels(self, size: int) -> list[dict[str, int]]:
        """Channels of every tap of every teacher."""
        return [_tap_channels(t, size) for t in self.teachers]

    def __call__(
        self, images: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Logits and (if enabled) tapped features of every teacher for a batch."""
        logits, features = [], []
        for teacher in self.teachers:
            if isinstance(teacher.network, OnnxNetwork):
                out, tapped_features = teacher.network.run(images)
                logits.append(out)
                features.append(tapped_features if self.with_features else {})
                continue
            taps = get_spec(teacher.name).taps if self.with_features else {}
            device = next(teacher.network.parameters()).device
            with FeatureTaps(teacher.network, taps) as tapped, torch.inference_mode():
                out = teacher.network(images.to(device))  # on the teacher's own device
            # Clone out of inference mode so the loss may save them for backward.
            logits.append(out.clone())
            features.append({k: v.clone() for k, v in tapped.features.items()})
        return logits, features

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every teacher's logits for a batch, without features."""
        return self(images)[0]


def _tap_channels(teacher: TrainedModel, size: int) -> dict[str, int]:
    """Channels of each of a teacher's taps."""
    if isinstance(teacher.network, OnnxNetwork):
        return dict(teacher.network.channels)
    spec = get_spec(teacher.name).taps
    shapes = tap_shapes(teacher.network, spec, size, size, teacher.settings.channels)
    return {tap: shape[0] for tap, shape in shapes.items()}


def logits_from_probabilities(gland: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Two-class logits (B, 2, H, W) whose softmax is (1 - p, p) for gland probabilities
    (B, 1, H, W): how a volume teacher's output enters the KL term."""
    p = gland.clamp(eps, 1 - eps)
    return torch.log(torch.cat([1 - p, p], dim=1))


def pseudo_labelled(
    labels: torch.Tensor, teacher_logits: list[torch.Tensor], labelled: torch.Tensor
) -> torch.Tensor:
    """``labels`` (B, 1, H, W) where ``labelled`` (B,) is true; elsewhere the teachers'
    pseudo-labels: their mean gland probability above 0.5."""
    gland = torch.stack([torch.softmax(z.float(), 1)[:, 1:2] for z in teacher_logits]).mean(0)
    pseudo = (gland > 0.5).to(labels.dtype)
    return torch.where(labelled.view(-1, 1, 1, 1), labels, pseudo)


class ProbabilityAverage(torch.nn.Module):
    """Several networks as one: logits whose softmax is the mean of their softmaxes."""

    def __init__(self, networks: list[torch.nn.Module]) -> None:
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(n(x), 1) for n in self.networks]).mean(0)
        return torch.log(probs.clamp_min(1e-12))
