import numpy as np
import torch

from prokd.data.cache import PreprocessedVolume
from prokd.data.io import Geometry
from prokd.data.preprocess import slice_stack
from prokd.data.slices import SliceDataset, training_augmentation

GRID = Geometry((16, 16, 3), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _volume(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((3, 16, 16), np.uint8)
    mask[1, 4:12, 5:11] = 1
    image = (rng.normal(size=(3, 16, 16)) + 2 * mask).astype(np.float32)
    return PreprocessedVolume(f"c{seed}", "S", image, mask, GRID)


def test_items_cover_every_slice_with_index_back_to_volume():
    ds = SliceDataset([_volume(0), _volume(1)])
    assert len(ds) == 6
    item = ds[4]
    assert item["volume"] == 1 and item["slice"] == 1
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"][0].numpy(), ds.volumes[1].mask[1])
    np.testing.assert_array_equal(ds.has_gland(), [False, True, False] * 2)


def test_augmentation_is_seeded_and_keeps_binary_labels():
    a = SliceDataset([_volume(0)], training_augmentation(seed=5))
    b = SliceDataset([_volume(0)], training_augmentation(seed=5))
    changed = False
    for _ in range(5):
        x, y = a[1], b[1]
        torch.testing.assert_close(x["image"], y["image"])
        assert set(x["label"].unique().tolist()) <= {0, 1}
        changed |= not torch.equal(x["image"], torch.from_numpy(a.volumes[0].image[1][None]))
    assert changed


def test_volume_teacher_maps_move_with_the_augmented_image():
    """A teacher map equal to the mask, augmented with it (bilinear vs nearest), stays on
    the augmented label: the map undergoes the image's spatial transform."""
    volume = _volume(0)
    with_map = volume.with_teacher_maps([volume.mask.astype(np.float32)])
    plain = SliceDataset([volume], training_augmentation(seed=3))
    mapped = SliceDataset([with_map], training_augmentation(seed=3))
    moved = False
    for seed in range(8):
        a, b = plain.view(1, seed), mapped.view(1, seed)
        torch.testing.assert_close(a["image"], b["image"])  # the map changes no draw
        assert b["teacher"].shape == (1, 16, 16)
        agree = ((b["teacher"] >= 0.5).long() == b["label"]).float().mean()
        assert agree > 0.97
        moved |= not torch.equal(b["label"][0], torch.from_numpy(volume.mask[1]).long())
    assert moved


def test_site_style_augmentation_adds_scanner_changes_and_keeps_teacher_maps_aligned():
    """Bias field, lower resolution and field of view join the augmentation; the draws stay
    seeded, labels binary, and a teacher map still follows the label."""
    base = [type(t).__name__ for t in training_augmentation(1).transforms]
    site = [type(t).__name__ for t in training_augmentation(1, site_style=True).transforms]
    assert site[: len(base)] == base
    assert site[len(base) :] == ["RandBiasFieldd", "RandSimulateLowResolutiond", "RandZoomd"]
    volume = _volume(0)
    with_map = volume.with_teacher_maps([volume.mask.astype(np.float32)])
    a = SliceDataset([with_map], training_augmentation(seed=3, site_style=True))
    b = SliceDataset([with_map], training_augmentation(seed=3, site_style=True))
    moved, unmoved = [], []
    for seed in range(12):
        x, y = a.view(1, seed), b.view(1, seed)
        torch.testing.assert_close(x["image"], y["image"])
        assert set(x["label"].unique().tolist()) <= {0, 1}
        moved.append(((x["teacher"] >= 0.5).long() == x["label"]).float().mean())
        unmoved.append((torch.from_numpy(volume.mask[1]).long() == x["label"]).float().mean())
    # bilinear vs nearest differ on the edges of a 16x16 slice; an unmoved map far more
    assert np.mean(moved) > 0.95 and np.mean(moved) > np.mean(unmoved) + 0.03


def test_context_slices_stack_neighbours_as_channels():
    """2.5D input: slice z with its neighbours as channels, the edge slice repeated."""
    volume = _volume(0)
    ds = SliceDataset([volume], context_slices=1)
    first, middle = ds[0]["image"], ds[1]["image"]
    assert middle.shape == (3, 16, 16)
    np.testing.assert_array_equal(middle.numpy(), volume.image[[0, 1, 2]])
    np.testing.assert_array_equal(first.numpy(), volume.image[[0, 0, 1]])
    np.testing.assert_array_equal(slice_stack(volume.image, 2, 2), volume.image[[0, 1, 2, 2, 2]])
