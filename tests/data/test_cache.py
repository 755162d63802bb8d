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
