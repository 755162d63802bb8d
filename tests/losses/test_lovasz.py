import numpy as np
import pytest
import torch

from prokd.losses.lovasz import lovasz_softmax


def _jaccard_loss(mispredicted: np.ndarray, foreground: np.ndarray) -> float:
    """Set function Delta_J(M) = |M| / |F u M| (Berman et al., eq. 4); 0 for empty sets."""
    union = np.logical_or(foreground, mispredicted).sum()
    return float(mispredicted.sum() / union) if union else 0.0


def _lovasz_extension_reference(errors: np.ndarray, foreground: np.ndarray) -> float:
    """Lovász extension as an integral over level sets: sum_j (t_j - t_{j+1}) Delta({m >= t_j})."""
    levels = np.unique(errors)[::-1]
    total = 0.0
    for j, t in enumerate(levels):
        below = levels[j + 1] if j + 1 < len(levels) else 0.0
        total += (t - below) * _jaccard_loss(errors >= t, foreground)
    return total


def _reference(probs: np.ndarray, labels: np.ndarray, classes: str) -> float:
    """Mean over classes of the Lovász extension of the Jaccard loss, all pixels together."""
    flat_p = np.moveaxis(probs, 1, -1).reshape(-1, probs.shape[1])
    flat_y = labels.reshape(-1)
    losses = []
    for c in range(probs.shape[1]):
        fg = flat_y == c
        if classes == "present" and not fg.any():
            continue
        losses.append(_lovasz_extension_reference(np.abs(fg - flat_p[:, c]), fg))
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("classes", ["present", "all"])
def test_matches_brute_force_lovasz_extension(seed, classes):
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(size=(2, 3, 4, 5)))
    labels = torch.from_numpy(rng.integers(0, 2, size=(2, 4, 5)))  # class 2 absent
    probs = logits.softmax(1)
    loss = lovasz_softmax(probs, labels, classes=classes)
    assert float(loss) == pytest.approx(
        _reference(probs.numpy(), labels.numpy(), classes), abs=1e-9
    )


def test_hard_predictions_give_one_minus_iou_per_class():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(1, 6, 7))
    predicted = labels.copy()
    predicted[rng.random(labels.shape) < 0.3] = rng.integers(0, 3)
    probs = np.moveaxis(np.eye(3)[predicted], -1, 1)
    loss = lovasz_softmax(torch.from_numpy(probs), torch.from_numpy(labels), classes="all")
    ious = [
        ((predicted == c) & (labels == c)).sum() / ((predicted == c) | (labels == c)).sum()
        for c in range(3)
    ]
    assert float(loss) == pytest.approx(1 - np.mean(ious), abs=1e-12)


def test_per_image_is_the_mean_of_single_images():
    torch.manual_seed(0)
    probs = torch.randn(3, 2, 5, 5).softmax(1)
    labels = torch.randint(0, 2, (3, 1, 5, 5))
    per_image = lovasz_softmax(probs, labels, per_image=True)
    singles = [lovasz_softmax(probs[i : i + 1], labels[i : i + 1]) for i in range(3)]
    assert float(per_image) == pytest.approx(float(torch.stack(singles).mean()))
    assert float(lovasz_softmax(probs, labels)) != pytest.approx(float(per_image))


def test_perfect_prediction_is_zero_and_gradient_flows():
    labels = torch.randint(0, 2, (2, 1, 6, 6))
    perfect = torch.nn.functional.one_hot(labels[:, 0], 2).permute(0, 3, 1, 2).double()
    assert float(lovasz_softmax(perfect, labels)) == 0.0
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    lovasz_softmax(logits.softmax(1), labels).backward()
    assert logits.grad.abs().sum() > 0


def test_unknown_class_mode():
    with pytest.raises(ValueError, match="classes must be one of"):
        lovasz_softmax(torch.rand(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "some")
