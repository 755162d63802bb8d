"""Pelvis images synthesised from label maps: the tissues partition the map, an image is a
function of its seed and differs between seeds, T2-like images keep urine brighter than
bone, and the writer gives one case per map with the gland as its mask."""

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.synth_pelvis import (
    BLADDER,
    BODY,
    BONE,
    PROSTATE,
    RECTUM,
    SITE,
    SynthesisSettings,
    synthesise,
    tissue_map,
    write_synthetic_pelvis,
)
from prokd.errors import DataError
from tests.conftest import make_volume

SPACING = (3.0, 2.0, 2.0)


def _labels(shape=(12, 48, 48)) -> np.ndarray:
    """A body with a bone, a bladder, a rectum and a prostate between them."""
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.int16)
    labels[((y - 24) / 20.0) ** 2 + ((x - 24) / 22.0) ** 2 < 1] = BODY
    labels[(np.abs(x - 8) < 3) & (np.abs(y - 24) < 6)] = BONE
    labels[((y - 14) / 5.0) ** 2 + ((x - 24) / 6.0) ** 2 < 1] = BLADDER
    labels[((y - 34) / 3.0) ** 2 + ((x - 24) / 3.0) ** 2 < 1] = RECTUM
    labels[((y - 24) / 4.0) ** 2 + ((x - 24) / 4.0) ** 2 + ((z - 6) / 3.0) ** 2 < 1] = PROSTATE
    return labels


def test_the_tissues_partition_the_label_map():
    labels = _labels()
    tissues = tissue_map(labels, SPACING, np.random.default_rng(0))
    painted = np.sum([mask.astype(int) for mask in tissues.values()], axis=0)
    np.testing.assert_array_equal(painted, 1)  # every voxel exactly one tissue
    np.testing.assert_array_equal(tissues["tz"] | tissues["pz"], labels == PROSTATE)
    assert tissues["tz"].any() and tissues["pz"].any() and tissues["fat"].any()


def test_an_image_is_a_function_of_its_seed():
    labels = _labels()
    first = synthesise(labels, SPACING, seed=3)
    np.testing.assert_array_equal(first, synthesise(labels, SPACING, seed=3))
    assert not np.array_equal(first, synthesise(labels, SPACING, seed=4))
    assert first.dtype == np.float32 and first.shape == labels.shape


def test_t2_like_images_show_urine_brighter_than_bone():
    labels = _labels()
    t2 = SynthesisSettings(t2_like_share=1.0, noise=(0.0, 0.001), blur_voxels=(0.1, 0.2))
    for seed in range(5):
        image = synthesise(labels, SPACING, seed, t2)
        assert np.median(image[labels == BLADDER]) > np.median(image[labels == BONE])


def test_the_writer_gives_one_case_per_map_with_the_gland_as_mask(tmp_path):
    maps = tmp_path / "labels"
    maps.mkdir()
    for case in ("Case_001_Week0_SEMANTIC_LFOV", "Case_002_Week0_SEMANTIC_LFOV"):
        sitk.WriteImage(
            make_volume(_labels(), spacing=(2.0, 2.0, 3.0)), str(maps / f"{case}.nii.gz")
        )
    assert write_synthetic_pelvis(maps, tmp_path / "out") == 2
    mask = sitk.ReadImage(str(tmp_path / "out" / SITE / "Case_001_Week0_segmentation.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), _labels() == PROSTATE)
    assert (tmp_path / "out" / SITE / "Case_002_Week0.nii.gz").is_file()
    empty = tmp_path / "no-gland"
    empty.mkdir()
    sitk.WriteImage(make_volume(np.ones((4, 8, 8), np.int16)), str(empty / "Case_9.nii.gz"))
    with pytest.raises(DataError, match="no prostate"):
        write_synthetic_pelvis(empty, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
