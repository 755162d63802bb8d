"""A small domain classifier: which site a slice looks like, from its intensity statistics.

The ``site`` teacher weighting reads it. Features of a slice (its centre channel when the
network sees neighbouring slices): a 16-bin histogram of the normalised intensities in
[-3, 3], five quantiles, the mean gradient magnitude and the mean absolute high-pass (noise
and sharpness). They are standardised, and a multinomial logistic regression (L2, L-BFGS,
deterministic from a zero start) is fitted on the student's training slices, labelled and
unlabelled, whose sites are known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prokd.data.cache import PreprocessedVolume
from prokd.errors import ConfigError

BINS = 16
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_SLICES = 4000  # slices the fit reads at most (evenly spaced over the training slices)
L2 = 1e-3


def slice_features(images: torch.Tensor) -> torch.Tensor:
    """(B, F) intensity statistics of (B, C, H, W) slices (the centre channel)."""
    x = images[:, images.shape[1] // 2].float()  # (B, H, W)
    flat = x.flatten(1)
    edges = torch.linspace(-3.0, 3.0, BINS + 1, device=x.device)
    bins = torch.bucketize(flat.clamp(-3.0, 3.0 - 1e-6), edges[1:-1])
    histogram = F.one_hot(bins, BINS).float().mean(1)
    quantiles = torch.quantile(flat, torch.tensor(QUANTILES, device=x.device), dim=1).T
    dy, dx = x[:, 1:, :-1] - x[:, :-1, :-1], x[:, :-1, 1:] - x[:, :-1, :-1]
    gradient = torch.sqrt(dx**2 + dy**2 + 1e-12).flatten(1).mean(1, keepdim=True)
    blurred = F.avg_pool2d(x[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    high_pass = (x - blurred).abs().flatten(1).mean(1, keepdim=True)
    return torch.cat([histogram, quantiles, gradient, high_pass], dim=1)


def check_sites(volumes: Sequence[PreprocessedVolume], sites: Sequence[str]) -> None:
    """Raises:
    ConfigError: a teacher's site has no training slice to learn it from."""
    present = {v.site for v in volumes if len(v.image)}
    missing = [site for site in sorted(set(sites)) if site not in present]
    if missing:
        raise ConfigError(
            f"teacher weighting 'site': no training slice from site {missing[0]!r} "
            "to learn what its slices look like"
        )


class SiteClassifier:
    """p(site | slice) for the teachers' sites, in the teachers' order."""

    def __init__(
        self,
        mean: torch.Tensor,
        scale: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        teacher_class: list[int],
    ) -> None:
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias
        self.teacher_class = teacher_class  # per teacher: its site's class index

    @classmethod
    def fit(cls, volumes: Sequence[PreprocessedVolume], sites: list[str]) -> SiteClassifier:
        """Fit on every slice of ``volumes`` from one of ``sites`` (a teacher's site each).

        Raises:
            ConfigError: a teacher's site has no training slice to learn it from.
        """
        check_sites(volumes, sites)
        classes = sorted(set(sites))
        slices, targets = [], []
        for volume in volumes:
            if volume.site in classes:
                slices.append(np.asarray(volume.image, dtype=np.float32))
                targets += [classes.index(volume.site)] * len(volume.image)
        images = torch.from_numpy(np.concatenate(slices))[:, None]
        labels = torch.tensor(targets)
        keep = torch.from_numpy(np.linspace(0, len(labels) - 1, min(MAX_SLICES, len(labels))))
        keep = keep.round().long()
        features = slice_features(images[keep])
        mean, scale = features.mean(0), features.std(0).clamp_min(1e-6)
        weight, bias = _logistic_regression((features - mean) / scale, labels[keep], len(classes))
        return cls(mean, scale, weight, bias, [classes.index(site) for site in sites])

    def log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K) log p(site of teacher k | slice) for (B, C, H, W) slices."""
        features = (slice_features(images) - self.mean.to(images.device)) / self.scale.to(
            images.device
        )
        logits = features @ self.weight.to(images.device).T + self.bias.to(images.device)
        return torch.log_softmax(logits, dim=1)[:, self.teacher_class]


def _logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L2 penalty, fitted by L-BFGS from zero."""
    weight = torch.zeros(classes, features.shape[1], requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, labels) + L2 * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()
