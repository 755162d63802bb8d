"""Which site a slice looks like: a smooth, bright site and a noisy, dark one are told apart
on slices the classifier never saw; the teachers' order maps onto the classes; a teacher's
site without training slices is refused."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from prokd.distill.site_classifier import SiteClassifier, check_sites, slice_features
from prokd.errors import ConfigError
from tests.conftest import slice_volume


def _site_volume(seed: int, site: str):
    """A slice volume restyled as a site: ``Smooth`` (blurred, bright) or ``Noisy``."""
    volume = slice_volume(seed)
    rng = np.random.default_rng(seed)
    if site == "Smooth":
        image = 0.5 * volume.image + 1.0
    else:
        image = volume.image - 1.0 + rng.normal(0, 1.0, volume.image.shape)
    return replace(volume, image=image.astype(np.float32), site=site, case_id=f"{site}{seed}")


def test_features_have_the_documented_size():
    features = slice_features(torch.randn(5, 3, 32, 32))
    assert features.shape == (5, 16 + 5 + 2)


def test_two_sites_are_told_apart_on_new_slices_in_the_teachers_order():
    train = [_site_volume(i, site) for i in range(3) for site in ("Smooth", "Noisy")]
    classifier = SiteClassifier.fit(train, ["Noisy", "Smooth", "Noisy"])
    for site, teacher in (("Smooth", 1), ("Noisy", 0)):
        images = torch.from_numpy(_site_volume(20, site).image)[:, None]
        log_p = classifier.log_probabilities(images)
        assert log_p.shape == (len(images), 3)
        assert (log_p.argmax(1) == teacher).all()  # teacher 2 shares teacher 0's site
        torch.testing.assert_close(log_p[:, 0], log_p[:, 2])


def test_a_teacher_site_without_slices_is_refused():
    with pytest.raises(ConfigError, match="no training slice from site 'Elsewhere'"):
        check_sites([_site_volume(0, "Smooth")], ["Smooth", "Elsewhere"])
