"""Simulated protocols on training slices: the coil keeps image and mask aligned and pushes
the gland forward; the resliced series blurs one axis and cuts image, label and teacher
maps to its coverage."""

import numpy as np
import torch
from scipy import ndimage

from prokd.data.protocols import RandEndorectalCoild, RandReslicedd
from prokd.data.slices import training_augmentation
from prokd.evaluation.metrics import dice_score


def _slice(size=128, seed=0):
    """A (1, H, W) image whose gland (an ellipse) is bright on a textured background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    gland = ((y - 55) / 16.0) ** 2 + ((x - 64) / 22.0) ** 2 < 1
    background = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3) * 0.3
    image = np.where(gland, 3.0, background)
    return {
        "image": torch.tensor(image[None], dtype=torch.float32),
        "label": torch.tensor(gland[None], dtype=torch.float32),
    }


def _applied(transform, sample, seed=0):
    transform.set_random_state(seed)
    return transform(sample)


def test_the_coil_moves_image_and_mask_together_and_the_balloon_lies_behind_the_gland():
    sample = _slice()
    coil = RandEndorectalCoild(prob=1.0, flare=False, noise=False)
    for seed in range(5):
        out = _applied(coil, sample, seed)
        image, label = out["image"].numpy()[0], out["label"].numpy()[0]
        # The painted balloon is about the image's extremes; the gland is the only region
        # near 3 outside it: image and label still coincide.
        bright_gland = (image > 2.0) & (label > 0.5)
        assert dice_score(bright_gland, label > 0.5) > 0.97, seed
        balloon = coil._radii_mm  # noqa: SLF001 (the drawn sizes)
        assert balloon[0] >= 12 and balloon[1] >= 8
        rows_before = np.nonzero(sample["label"].numpy()[0])[0]
        rows_after = np.nonzero(label)[0]
        assert rows_after.mean() < rows_before.mean() - 1.0, seed  # pushed anterior
        assert abs(label.sum() - sample["label"].sum().item()) / label.sum() < 0.1


def test_the_coil_paints_a_balloon_below_the_gland_and_adds_a_flare_around_it():
    sample = _slice()
    out = _applied(RandEndorectalCoild(prob=1.0, noise=False), sample, seed=1)
    image, label = out["image"].numpy()[0], out["label"].numpy()[0]
    assert label.shape == (128, 128) and set(np.unique(label)) <= {0.0, 1.0}
    below = image[int(np.nonzero(label)[0].max()) + 2 :, 50:78]
    # A balloon (uniform fill) or its wall stands out right behind the gland.
    assert np.ptp(below[:25]) > 1.0
    # The output keeps the slice's mean and spread (volume normalisation absorbs a flare).
    before = sample["image"].numpy()
    assert abs(image.mean() - before.mean()) < 1e-3 and abs(image.std() - before.std()) < 1e-3


def test_protocols_leave_slices_without_gland_alone():
    sample = _slice()
    empty = {"image": sample["image"], "label": torch.zeros_like(sample["label"])}
    for transform in (RandEndorectalCoild(prob=1.0), RandReslicedd(prob=1.0)):
        out = _applied(transform, empty)
        assert torch.equal(out["image"], empty["image"])


def test_an_unlabelled_slice_is_placed_by_its_teachers_maps():
    sample = _slice()
    unlabelled = {
        "image": sample["image"],
        "label": torch.zeros_like(sample["label"]),
        "teacher": sample["label"].repeat(2, 1, 1) * 0.9,
    }
    out = _applied(RandEndorectalCoild(prob=1.0, flare=False, noise=False), unlabelled)
    moved = out["teacher"].numpy()
    assert moved.shape == (2, 128, 128)
    assert np.nonzero(moved[0] > 0.5)[0].mean() < np.nonzero(sample["label"][0].numpy())[0].mean()


def test_a_resliced_slice_is_blurred_along_one_axis():
    sample = _slice()
    texture = ndimage.gaussian_filter(np.random.default_rng(1).normal(0, 1, (128, 128)), 1)
    sample["image"] = sample["image"] + torch.tensor(texture[None], dtype=torch.float32)
    before = sample["image"].numpy()[0]
    for seed in range(6):
        transform = RandReslicedd(prob=1.0)
        image = _applied(transform, sample, seed)["image"].numpy()[0]
        axis = transform._axis  # noqa: SLF001 (the drawn axis)

        def roughness(array, along):  # near the gland's centre: inside any coverage band
            return np.square(np.diff(array[48:62, 56:72], axis=along)).mean()

        other = -1 if axis == -2 else -2
        across = roughness(image, axis) / roughness(before, axis)
        assert across < 0.8 * roughness(image, other) / roughness(before, other), seed


def test_a_resliced_slice_is_cut_to_its_coverage_never_more_than_a_tenth_of_the_gland():
    sample = _slice()  # 2 mm pixels: the gland is 88 by 64 mm, wider than most coverages
    label = sample["label"].numpy()[0] > 0.5
    cuts = 0
    for seed in range(12):
        transform = RandReslicedd(prob=1.0, pixel_mm=2.0)
        out = _applied(transform, sample, seed)
        image, cut = out["image"].numpy()[0], out["label"].numpy()[0] > 0.5
        axis = transform._axis  # noqa: SLF001 (the drawn axis)
        assert image[cut].mean() > 2.0  # the gland inside the coverage is in view
        assert not (cut & ~label).any()
        along = np.nonzero(label.any(axis=0 if axis == -1 else 1))[0]
        kept = np.nonzero(cut.any(axis=0 if axis == -1 else 1))[0]
        tenth = 0.1 * (along.max() - along.min()) + 1
        assert kept.min() - along.min() <= tenth and along.max() - kept.max() <= tenth, seed
        # Outside the coverage: no label, and the image is flat there.
        outside = np.take(image, np.flatnonzero(~np.isin(np.arange(128), kept)), axis=axis)
        assert np.ptp(np.take(outside, [0, -1], axis=axis)) < 1e-6
        cuts += int(cut.sum() < label.sum())
    assert cuts >= 3  # thin coverages do cut the gland's edges


def test_a_thin_coverage_cuts_the_teacher_maps_as_the_label():
    sample = _slice()
    sample["teacher"] = sample["label"].repeat(2, 1, 1) * 0.9
    for seed in range(12):
        out = _applied(RandReslicedd(prob=1.0), sample, seed)
        label, teacher = out["label"].numpy()[0] > 0.5, out["teacher"].numpy()
        assert np.array_equal(teacher[0] > 0.5, label) and np.array_equal(teacher[1] > 0.5, label)


def test_training_augmentation_with_protocols_changes_slices_and_keeps_labels_aligned():
    """The protocols act (some draws change the slice), the label stays a 0/1 gland of
    about its size that still covers the bright gland, and a seed repeats its draws."""
    names = [type(t).__name__ for t in training_augmentation(protocols=True).transforms]
    assert "RandEndorectalCoild" in names and "RandReslicedd" in names
    sample = _slice()
    changed = 0
    for seed in range(8):
        out = training_augmentation(seed=seed, protocols=True, pixel_mm=1.0)(_slice())
        image, label = out["image"].numpy()[0], out["label"].numpy()[0]
        assert image.shape == label.shape == (128, 128)
        assert set(np.unique(label)) <= {0.0, 1.0}
        area = label.sum() / sample["label"].sum().item()
        assert 0.3 < area < 2.5, area
        assert dice_score(label > 0.5, image > 1.5) > 0.5  # the label still marks the gland
        changed += not np.allclose(image, sample["image"].numpy()[0])
        again = training_augmentation(seed=seed, protocols=True, pixel_mm=1.0)(_slice())
        np.testing.assert_array_equal(again["image"].numpy(), out["image"].numpy())
    assert changed >= 6
