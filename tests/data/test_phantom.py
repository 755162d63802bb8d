import json

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.layouts import find_cases
from prokd.data.phantom import SITES, generate_case, write_phantom
from prokd.data.preprocess import PreprocessSettings, normalise_intensity
from prokd.errors import ProkdError


def test_same_seed_same_volume_other_seed_other_volume():
    a_img, a_mask, a_sp, a_org = generate_case(SITES[2], 7, 2, 1)
    b_img, b_mask, b_sp, b_org = generate_case(SITES[2], 7, 2, 1)
    c_img, _, _, _ = generate_case(SITES[2], 8, 2, 1)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_sp == b_sp and a_org == b_org
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("site_index", range(len(SITES)))
def test_every_site_has_a_plausible_gland(site_index):
    site = SITES[site_index]
    image, mask, spacing, _ = generate_case(site, 0, site_index, 0)
    assert image.dtype == np.int16 and mask.dtype == np.uint8
    assert spacing == (site.spacing_mm, site.spacing_mm, site.slice_mm)
    volume_ml = mask.sum() * np.prod(spacing) / 1000
    assert 15 < volume_ml < 100
    per_slice = mask.sum(axis=(1, 2))
    assert per_slice[0] == 0 and per_slice[-1] == 0  # apex and base inside the slab
    gland_slices = per_slice[per_slice > 0]
    assert gland_slices.min() < 0.3 * gland_slices.max()  # small apex/base sections


def test_not_solvable_by_intensity_thresholds():
    """No single intensity band segments the gland: the benchmark needs context."""
    for index in (0, 3):
        image, mask, _, _ = generate_case(SITES[index], 0, index, 0)
        x = normalise_intensity(image, PreprocessSettings())
        gland = mask.astype(bool)
        best = 0.0
        for low in np.linspace(-2, 2, 9):
            for high in np.linspace(-1.5, 3, 10):
                pred = (x > low) & (x < high)
                best = max(best, 2 * (pred & gland).sum() / (pred.sum() + gland.sum()))
        assert best < 0.5


def test_sites_differ_in_appearance():
    """Gland-to-background contrast and noise differ between sites (domain shift)."""
    contrasts = []
    for index, site in enumerate(SITES):
        image, mask, _, _ = generate_case(site, 0, index, 0)
        x = normalise_intensity(image, PreprocessSettings())
        contrasts.append(float(x[mask > 0].mean()))
    assert max(contrasts) - min(contrasts) > 0.3
    assert len({s.spacing_mm for s in SITES}) == len(SITES)


def test_endorectal_coil_site_has_bright_flare_behind_gland():
    coil = next(i for i, s in enumerate(SITES) if s.endorectal_coil)
    image, mask, _, _ = generate_case(SITES[coil], 0, coil, 0)
    k = int(mask.sum(axis=(1, 2)).argmax())
    ys, xs = np.nonzero(mask[k])
    behind = image[k, ys.max() + 3 : ys.max() + 20, int(xs.mean()) - 5 : int(xs.mean()) + 5]
    assert behind.mean() > 1.5 * image[k][mask[k] > 0].mean()


def test_write_phantom_six_site_layout(tmp_path):
    out = tmp_path / "ph"
    cases = write_phantom(out, sites=2, cases_per_site=2, seed=3)
    assert [c.site for c in cases] == ["SiteA", "SiteA", "SiteB", "SiteB"]
    layout, manifest = find_cases(out)
    assert layout == "six-site" and len(manifest) == 4
    image = sitk.ReadImage(str(manifest[0].image))
    assert image.GetSpacing() == pytest.approx((0.5, 0.5, 3.0))
    info = json.loads((out / "phantom.json").read_text())
    assert info["seed"] == 3 and len(info["cases"]) == 4


def test_write_phantom_refuses_non_empty_folder_and_bad_counts(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ProkdError, match="not empty"):
        write_phantom(tmp_path, sites=1, cases_per_site=1)
    with pytest.raises(ProkdError, match="--sites must be between 1 and 6"):
        write_phantom(tmp_path / "new", sites=7)
    with pytest.raises(ProkdError, match="--cases-per-site"):
        write_phantom(tmp_path / "new", cases_per_site=0)
