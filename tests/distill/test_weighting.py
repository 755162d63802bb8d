from dataclasses import replace

import numpy as np
import pytest
import torch

from prokd.distill.site_classifier import SiteClassifier
from prokd.distill.weighting import WEIGHTINGS, TeacherFacts, build_weighting
from prokd.errors import ConfigError
from tests.conftest import slice_volume


def _logits(prob_gland):
    """Logits (1, 2, 2, 2) whose gland probability is ``prob_gland`` everywhere."""
    p = torch.full((1, 2, 2), prob_gland)
    return torch.log(torch.stack([1 - p, p], 1))


LABELS = torch.ones(1, 1, 2, 2, dtype=torch.long)  # every pixel is gland


def _site_volume(site, seed, noise):
    """A 32x32 volume of ``site`` whose noise level is the site's signature."""
    volume = slice_volume(seed)
    rng = np.random.default_rng(seed + 100)
    image = volume.image + rng.normal(0, noise, volume.image.shape).astype(np.float32)
    return replace(volume, case_id=f"{site}{seed}", site=site, image=image)


SITE_VOLUMES = [_site_volume("A", s, 0.05) for s in range(3)] + [
    _site_volume("B", s, 1.5) for s in range(3, 6)
]


def _four_teachers(images):
    """Logits of four teachers that scale the slice differently (for the ``gate`` fit)."""
    return [torch.cat([-s * images[:, :1], s * images[:, :1]], 1) for s in (0.5, 1.0, 2.0, -1.0)]


FACTS = TeacherFacts(
    [0.7, 0.8, 0.6, 0.9], ["A", "B", "A", "B"], SITE_VOLUMES, teacher_logits=_four_teachers
)


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_strategy_sums_to_one_over_teachers(name):
    torch.manual_seed(0)
    teachers = [torch.randn(3, 2, 32, 32) for _ in range(4)]
    labels = torch.randint(0, 2, (3, 1, 32, 32))
    images = torch.randn(3, 1, 32, 32)
    weights = build_weighting(name, FACTS)(teachers, labels, images=images)
    assert weights.shape == (3, 4, 32, 32)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 32, 32))


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
    weights = build_weighting("validation", TeacherFacts([0.6, 0.9]))(
        [_logits(0.5), _logits(0.5)], LABELS
    )
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
    scores = TeacherFacts([0.8, 0.7])
    sharp = build_weighting("validation", scores, temperature=0.01).weights
    soft = build_weighting("validation", scores, temperature=1.0).weights
    assert sharp[0] > soft[0] > 0.5


def test_agreement_weighs_down_the_teacher_that_disagrees():
    agreeing, outlier = _logits(0.9), _logits(0.1)
    weights = build_weighting("agreement")([agreeing, outlier, agreeing], LABELS)
    assert (weights[:, 1] < 0.01).all()  # |0.1 - 0.9| / 0.1 against |0.9 - 0.5| / 0.1
    torch.testing.assert_close(weights[:, 0], weights[:, 2])
    # Labels play no part: the same weights with the opposite labels.
    assert torch.equal(
        weights, build_weighting("agreement")([agreeing, outlier, agreeing], 1 - LABELS)
    )
    # Teachers that all agree weigh the same; one teacher alone weighs 1.
    same = build_weighting("agreement")([agreeing, agreeing], LABELS)
    assert torch.allclose(same, torch.full_like(same, 0.5))
    assert torch.equal(build_weighting("agreement")([outlier], LABELS), torch.ones(1, 1, 2, 2))


def test_site_weighting_follows_the_site_a_slice_looks_like():
    facts = TeacherFacts(sites=["A", "B"], volumes=SITE_VOLUMES)
    weighting = build_weighting("site", facts)
    teachers = [torch.zeros(2, 2, 32, 32), torch.zeros(2, 2, 32, 32)]
    quiet = _site_volume("A", 10, 0.05).image[1:2]  # a new slice like site A's
    noisy = _site_volume("B", 11, 1.5).image[1:2]  # a new slice like site B's
    images = torch.from_numpy(np.stack([quiet, noisy]))
    weights = weighting(teachers, torch.zeros(2, 1, 32, 32, dtype=torch.long), images=images)
    assert weights[0, 0].min() > 0.9 and weights[1, 1].min() > 0.9
    assert torch.equal(weights[0, :, 0, 0], weights[0, :, 31, 31])  # one weight per slice
    # Teachers in another order get their own site's weight.
    swapped = build_weighting("site", replace(facts, sites=["B", "A"]))
    flipped = swapped(teachers, torch.zeros(2, 1, 32, 32, dtype=torch.long), images=images)
    torch.testing.assert_close(flipped, weights.flip(1))


def test_site_weighting_needs_sites_and_their_slices():
    with pytest.raises(ConfigError, match="needs the site of each teacher"):
        build_weighting("site", TeacherFacts(volumes=SITE_VOLUMES))
    with pytest.raises(ConfigError, match="no training slice from site 'C'"):
        SiteClassifier.fit(SITE_VOLUMES, ["A", "C"])
