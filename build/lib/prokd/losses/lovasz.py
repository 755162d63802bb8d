"""Lovász-softmax loss (Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss: A
tractable surrogate for the optimization of the intersection-over-union measure in neural
networks", CVPR 2018).

For each class, the loss is the Lovász extension of the Jaccard loss evaluated at the vector
of pixel errors ``|[y == c] - p_c|``: errors sorted in decreasing order, dotted with the
discrete gradient of the Jaccard loss along that order. For hard (0/1) predictions it equals
``1 - IoU`` of the class.
"""

from __future__ import annotations

import torch

CLASS_MODES = ("present", "all")


def jaccard_steps(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss as pixels (sorted by error) are added one at a time.

    Args:
        foreground_sorted: (P,) 0/1 ground truth of the class, in decreasing-error order.
    """
    total = foreground_sorted.sum()
    intersection = total - foreground_sorted.cumsum(0)
    union = total + (1.0 - foreground_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax_flat(
    probs: torch.Tensor, labels: torch.Tensor, classes: str = "present"
) -> torch.Tensor:
    """Lovász-softmax of flattened pixels.

    Args:
        probs: (P, C) class probabilities.
        labels: (P,) integer labels in [0, C).
        classes: ``"present"`` averages over the classes present in ``labels``; ``"all"``
            over every class (an absent class then contributes its false positives).
    """
    if classes not in CLASS_MODES:
        raise ValueError(f"classes must be one of {CLASS_MODES}, got {classes!r}")
    losses = []
    for c in range(probs.shape[1]):
        foreground = (labels == c).to(probs.dtype)
        if classes == "present" and foreground.sum() == 0:
            continue
        errors = (foreground - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, jaccard_steps(foreground[order])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, classes: str = "present", per_image: bool = False
) -> torch.Tensor:
    """Lovász-softmax loss of a batch.

    Args:
        probs: (B, C, H, W) softmax probabilities.
        labels: (B, H, W) or (B, 1, H, W) integer labels.
        classes: ``"present"`` or ``"all"`` (see :func:`lovasz_softmax_flat`).
        per_image: average the loss of each image (True) or compute it on the whole batch
            as one set of pixels (False).

    Returns:
        Scalar loss.
    """
    if labels.dim() == probs.dim():
        labels = labels[:, 0]
    channels = probs.shape[1]

    def flat(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax_flat(p.movedim(0, -1).reshape(-1, channels), y.reshape(-1), classes)

    if per_image:
        return torch.stack([flat(p, y) for p, y in zip(probs, labels, strict=True)]).mean()
    return flat(probs.transpose(0, 1), labels)
