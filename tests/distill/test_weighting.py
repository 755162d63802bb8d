import pytest
import torch

from prokd.distill.weighting import WEIGHTINGS, build_weighting
from prokd.errors import ConfigError


def _logits(prob_gland):
    """Logits (1, 2, 2, 2) whose gland probability is ``prob_gland`` everywhere."""
    p = torch.full((1, 2, 2), prob_gland)
    return torch.log(torch.stack([1 - p, p], 1))


LABELS = torch.ones(1, 1, 2, 2, dtype=torch.long)  # every pixel is gland


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_strategy_sums_to_one_over_teachers(name):
    torch.manual_seed(0)
    teachers = [torch.randn(3, 2, 5, 6) for _ in range(4)]
    labels = torch.randint(0, 2, (3, 1, 5, 6))
    weights = build_weighting(name, [0.7, 0.8, 0.6, 0.9])(teachers, labels)
    assert weights.shape == (3, 4, 5, 6)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 5, 6))


def test_uniform():
    weights = build_weighting("uniform")([_logits(0.9), _logits(0.1)], LABELS)
    assert torch.allclose(weights, torch.full_like(weights, 0.5))


def test_confident_teacher_gets_more_weight():
    confident, unsure = _logits(0.98), _logits(0.55)
    weights = build_weighting("confidence")([unsure, confident], LABELS)
    assert (weights[:, 1] > 0.9).all()
    # Confidence ignores the labels: a confidently wrong teacher also wins.
    wrong = _logits(0.02)
    assert (build_weighting("confidence")([unsure, wrong], LABELS)[:, 1] > 0.9).all()


def test_teacher_that_matches_labels_gets_more_weight():
    right, wrong = _logits(0.9), _logits(0.2)
    weights = build_weighting("label-aware")([wrong, right], LABELS)
    assert (weights[:, 1] > weights[:, 0]).all()
    # With temperature 1 the weights are proportional to p(true class).
    torch.testing.assert_close(weights[:, 1], torch.full((1, 2, 2), 0.9 / 1.1))


def test_validation_weights_follow_validation_dice():
    weights = build_weighting("validation", [0.6, 0.9])([_logits(0.5), _logits(0.5)], LABELS)
    assert (weights[:, 1] > weights[:, 0]).all()
    assert torch.allclose(weights[0, :, 0, 0].sum(), torch.tensor(1.0))


def test_unknown_or_incomplete_strategy():
    with pytest.raises(ConfigError, match="unknown teacher weighting 'oracle'"):
        build_weighting("oracle")
    with pytest.raises(ConfigError, match="needs the teachers' validation Dice"):
        build_weighting("validation")


def test_label_aware_weighs_unlabelled_slices_uniformly():
    torch.manual_seed(0)
    logits = [torch.randn(3, 2, 4, 4) for _ in range(2)]
    labels = torch.randint(0, 2, (3, 1, 4, 4))
    labelled = torch.tensor([True, False, True])
    weights = build_weighting("label-aware", temperature=0.5)(logits, labels, labelled)
    full = build_weighting("label-aware", temperature=0.5)(logits, labels)
    assert torch.equal(weights[labelled], full[labelled])
    assert torch.equal(weights[1], torch.full_like(weights[1], 0.5))


def test_build_weighting_takes_the_configured_temperature():
    assert build_weighting("confidence", temperature=0.3).temperature == 0.3
    assert build_weighting("label-aware").temperature == 1.0
    sharp = build_weighting("validation", [0.8, 0.7], temperature=0.01).weights
    soft = build_weighting("validation", [0.8, 0.7], temperature=1.0).weights
    assert sharp[0] > soft[0] > 0.5
