"""Views made from whole volumes: deterministic per seed, each kind doing what it says."""

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.io import image_from_array, read_volume, write_volume
from prokd.data.preprocess import axial_view
from prokd.data.view_store import ViewRecipe, ViewStore, entry_key, image_digest
from prokd.data.views import VIEW_KINDS, make_view
from prokd.errors import ConfigError, ProkdError
from tests.conftest import ball_case, make_volume


def _pair(seed: int = 0, shape=(8, 96, 96)) -> tuple[sitk.Image, sitk.Image]:
    """A 96 mm wide volume (wider than a non-axial series' slab) with a ball of gland."""
    image, mask = ball_case(shape, radius=20.0, seed=seed)
    image[:, :, :4] = 0  # some air, as around a body
    spacing = (1.0, 1.0, 3.0)
    return make_volume(image, spacing), make_volume(mask, spacing)


@pytest.mark.parametrize("kind", [k for k in VIEW_KINDS if k != "acquired"])
def test_each_view_is_a_function_of_its_seed(kind):
    image, gland = _pair()
    partner = _pair(seed=5)
    first = make_view(kind, image, gland, 11, partner)
    again = make_view(kind, image, gland, 11, partner)
    other = make_view(kind, image, gland, 12, partner)
    assert image_digest(first) == image_digest(again)
    assert image_digest(first) != image_digest(image)
    assert image_digest(other) != image_digest(first)


def test_the_acquired_view_is_the_volume():
    image, gland = _pair()
    assert make_view("acquired", image, gland, 3) is image


def test_an_augmented_view_rotates_within_axial_slices():
    """A slice-wise rotation keeps each slice's content on its slice: an image bright on
    one slice only stays bright on that slice only."""
    array = np.zeros((6, 40, 40), np.float32)
    array[2, 10:30, 10:30] = 100.0
    image = make_volume(array)
    view = sitk.GetArrayFromImage(make_view("augment", image, image > 0, 4))
    assert view.shape == array.shape
    per_slice = view.reshape(6, -1).mean(axis=1)
    assert per_slice[2] > 20 * max(per_slice[[0, 1, 3, 4, 5]].max(), 1e-3)


def test_a_mix_takes_one_side_from_the_partner():
    image, gland = _pair()
    partner_image = make_volume(np.full((8, 40, 40), 7.0, np.float32))
    mixed = sitk.GetArrayFromImage(make_view("mix", image, gland, 2, (partner_image, gland)))
    own = sitk.GetArrayFromImage(axial_view(image))
    changed = ~np.isclose(mixed, own)
    assert 0.2 < changed.mean() < 0.8  # a plane through the gland centre splits the volume


def test_unknown_kinds_and_a_mix_alone_are_refused():
    image, gland = _pair()
    with pytest.raises(ProkdError, match="unknown view kind"):
        make_view("mirror", image, gland, 0)
    with pytest.raises(ProkdError, match="partner"):
        make_view("mix", image, gland, 0)


def test_image_digest_survives_a_nifti_round_trip(tmp_path):
    image, _ = _pair()
    image.SetOrigin((-101.23456789, 33.3333333, 7.0000001))
    path = write_volume(sitk.Cast(image, sitk.sitkFloat32), tmp_path / "v.nii.gz")
    assert image_digest(read_volume(path)) == image_digest(image)
    moved = sitk.Image(image)
    moved.SetOrigin((-101.0, 33.3333333, 7.0))
    assert image_digest(moved) != image_digest(image)


def test_entry_keys_follow_recipe_volumes_and_teacher():
    recipe = ViewRecipe("s", "s/1", "s/1", "augment", 1, 42)
    key = entry_key(recipe, ["abc"], "teacher-1")
    assert key == entry_key(ViewRecipe("s", "s/1", "s/1", "augment", 1, 42), ["abc"], "teacher-1")
    assert key != entry_key(ViewRecipe("s", "s/1", "s/1", "augment", 1, 43), ["abc"], "teacher-1")
    assert key != entry_key(recipe, ["abd"], "teacher-1")
    assert key != entry_key(recipe, ["abc"], "teacher-2")


def test_a_bank_belongs_to_one_teacher(tmp_path):
    ViewStore(tmp_path / "bank", "taps", "fp-1", 0.55)
    ViewStore(tmp_path / "bank", "taps", "fp-1", 0.55)  # the same teacher reopens it
    with pytest.raises(ConfigError, match="view bank of teacher 'taps'"):
        ViewStore(tmp_path / "bank", "other", "fp-2", 0.5)


def test_an_entry_is_found_by_view_and_alias(tmp_path):
    store = ViewStore(tmp_path / "bank", "t", "fp", 0.5)
    image, gland = _pair()
    recipe = ViewRecipe("s", "s/1", "s/1", "acquired", 0, 1)
    probabilities = image_from_array(sitk.GetArrayFromImage(gland).astype(np.float32), image)
    entry = store.add("k1", recipe, image, probabilities, 1.5, aliases=["source-digest"])
    assert store.has("k1") and not store.has("k2")
    assert entry.digests == (image_digest(image), "source-digest")
    assert store.entries() == [entry]


def test_a_view_planned_on_the_gland_needs_its_mask():
    image, gland = _pair()
    with pytest.raises(ProkdError, match="planned on the gland"):
        make_view("coil", image, None, 0)
    with pytest.raises(ProkdError, match="planned on the gland"):
        make_view("mix", image, gland, 0, (image, None))
    assert make_view("augment", image, None, 0).GetSize() == image.GetSize()
