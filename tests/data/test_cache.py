import numpy as np

from prokd.data.cache import PreprocessCache, case_fingerprint
from prokd.data.layouts import Case
from prokd.data.preprocess import PreprocessSettings
from tests.conftest import ball_case, write

SETTINGS = PreprocessSettings(size=16, fov_mm=12.0)


def _case(tmp_path, seed=0):
    image, mask = ball_case(seed=seed)
    img = write(tmp_path / "data" / "Case00.nii.gz", image)
    msk = write(tmp_path / "data" / "Case00_segmentation.nii.gz", mask)
    return Case("Case00", "S", img, (msk,))


def test_second_load_reuses_the_entry(tmp_path):
    case = _case(tmp_path)
    cache = PreprocessCache(tmp_path / "cache")
    first = cache.load(case, SETTINGS)
    entry = cache.path_for(case, SETTINGS)
    stamp = entry.stat().st_mtime_ns
    second = cache.load(case, SETTINGS)
    assert entry.stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "cache").iterdir())) == 1
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.grid == second.grid


def test_changed_setting_does_not_reuse_stale_entry(tmp_path):
    case = _case(tmp_path)
    cache = PreprocessCache(tmp_path / "cache")
    small = cache.load(case, SETTINGS)
    large = cache.load(case, PreprocessSettings(size=24, fov_mm=12.0))
    assert small.image.shape[1:] == (16, 16) and large.image.shape[1:] == (24, 24)
    clipped = PreprocessSettings(size=16, fov_mm=12.0, clip_percentiles=(5, 95))
    assert case_fingerprint(case, clipped) != case_fingerprint(case, SETTINGS)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_changed_file_content_does_not_reuse_stale_entry(tmp_path):
    case = _case(tmp_path)
    cache = PreprocessCache(tmp_path / "cache")
    before = cache.load(case, SETTINGS)
    _case(tmp_path, seed=1)  # same paths, new content
    after = cache.load(case, SETTINGS)
    assert not np.array_equal(before.image, after.image)


def test_mhd_fingerprint_covers_the_raw_file(tmp_path):
    image, mask = ball_case()
    img = write(tmp_path / "Case00.mhd", image)
    msk = write(tmp_path / "Case00_segmentation.mhd", mask)
    case = Case("Case00", "S", img, (msk,))
    before = case_fingerprint(case, SETTINGS)
    raw = tmp_path / "Case00.raw"
    data = bytearray(raw.read_bytes())
    data[0] ^= 0xFF
    raw.write_bytes(bytes(data))
    assert case_fingerprint(case, SETTINGS) != before


def test_empty_mask_warning_is_issued_on_every_load(tmp_path):
    import pytest

    from prokd.errors import DataWarning

    image, mask = ball_case()
    img = write(tmp_path / "data" / "Case00.nii.gz", image)
    msk = write(tmp_path / "data" / "Case00_segmentation.nii.gz", np.zeros_like(mask))
    case = Case("Case00", "S", img, (msk,))
    cache = PreprocessCache(tmp_path / "cache")
    for _ in range(2):  # computed, then read back from the cache
        with pytest.warns(DataWarning, match="Case00_segmentation.nii.gz: empty mask"):
            cache.load(case, SETTINGS)


def _sagittal_phantom(tmp_path):
    """The phantom and its gland as a sagittal series holds them, as a labelled case."""
    import SimpleITK as sitk

    from tests.conftest import phantom_in_plane

    paths = []
    names = ("Case00", "Case00_segmentation")
    for volume, name in zip(phantom_in_plane("sagittal"), names, strict=True):
        path = tmp_path / "S" / f"{name}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        sitk.WriteImage(volume, str(path))
        paths.append(path)
    return Case("Case00", "S", paths[0], (paths[1],))


def test_a_sagittal_volume_is_placed_in_training_as_at_prediction(tmp_path):
    """The cache runs prediction's stages (reslice to axial, localise, cut, place): the
    slices a model trains on are those it would be given at prediction."""
    from prokd.data.io import read_volume
    from prokd.inference.localise import ModelLocator
    from prokd.inference.pipeline import place

    case = _sagittal_phantom(tmp_path)
    image = read_volume(case.image)
    for crop_centre in ("image", "gland"):
        settings = PreprocessSettings(size=128, fov_mm=128.0, crop_centre=crop_centre)
        cache = PreprocessCache(tmp_path / "cache", ModelLocator())
        trained_on = cache.load(case, settings)
        predicted_on = place(image, settings)
        assert predicted_on.plane == "sagittal"
        np.testing.assert_allclose(trained_on.image, predicted_on.slices, atol=1e-5)
        assert trained_on.grid == predicted_on.grid
        assert trained_on.mask.sum() > 1000  # the gland came along, on the same grid
