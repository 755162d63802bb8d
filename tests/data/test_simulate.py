"""Simulated protocols on whole labelled volumes: image and mask stay together on the new
grid, the new grid is what the protocol acquires, and a simulated copy stays its source
volume's patient."""

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.cli import main
from prokd.data.layouts import find_cases
from prokd.data.planes import acquisition_plane, physical_bounds
from prokd.data.simulate import simulate
from prokd.errors import DataError
from prokd.evaluation.metrics import dice_score
from prokd.training.config import SourceConfig
from prokd.training.runs import source_cases
from tests.conftest import make_volume


def _ball_volume():
    """A bright ball (the 'gland', 40 mm across) in a darker textured box, and its mask."""
    shape, spacing = (24, 160, 160), (3.0, 0.5, 0.5)
    z, y, x = np.indices(shape)
    zz, yy, xx = (z - 12) * spacing[0], (y - 80) * spacing[1], (x - 80) * spacing[2]
    ball = zz**2 + yy**2 + xx**2 < 20.0**2
    rng = np.random.default_rng(0)
    array = np.where(ball, 800.0, 200.0) + rng.normal(0, 10, shape)
    geometry = {"spacing": tuple(reversed(spacing)), "origin": (-40.0, -40.0, -36.0)}
    return make_volume(array.astype(np.float32), **geometry), make_volume(
        ball.astype(np.uint8), **geometry
    )


def _ml(mask: sitk.Image) -> float:
    return float(sitk.GetArrayFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / 1000


@pytest.mark.parametrize("protocol", ["coil", "large-fov", "sagittal", "coronal"])
def test_image_and_mask_stay_aligned_under_every_protocol(protocol):
    image, mask = _ball_volume()
    moved, moved_mask = simulate(image, mask, protocol, seed=1)
    assert moved.GetSize() == moved_mask.GetSize()
    np.testing.assert_allclose(moved.GetOrigin(), moved_mask.GetOrigin())
    np.testing.assert_allclose(moved.GetDirection(), moved_mask.GetDirection())
    array, gland = sitk.GetArrayFromImage(moved), sitk.GetArrayFromImage(moved_mask) > 0
    assert abs(_ml(moved_mask) - _ml(mask)) < 0.12 * _ml(mask)  # the same gland
    bright = array > 500
    assert dice_score(bright & gland, gland) > 0.9  # where the mask is, the ball is


def test_the_protocols_acquire_what_they_say():
    image, mask = _ball_volume()
    sagittal, _ = simulate(image, mask, "sagittal")
    assert acquisition_plane(sagittal) == "sagittal"
    assert sagittal.GetSpacing() == pytest.approx((0.56, 0.56, 3.6))
    assert acquisition_plane(simulate(image, mask, "coronal")[0]) == "coronal"
    wide, _ = simulate(image, mask, "large-fov", seed=3)
    spacing = wide.GetSpacing()
    assert 1.4 <= spacing[0] <= 1.9 and spacing[2] == 1.5
    assert spacing[0] * (wide.GetSize()[0] - 1) == pytest.approx(400.0, abs=2.0)


@pytest.mark.parametrize(("plane", "axis"), [("sagittal", 0), ("coronal", 1)])
def test_a_non_axial_series_is_a_slab_planned_on_the_gland(plane, axis):
    image, mask = _ball_volume()  # the ball's centre at 0 mm on every axis
    low, high = physical_bounds(image)
    for seed in range(4):
        series, series_mask = simulate(image, mask, plane, seed=seed)
        s_low, s_high = physical_bounds(series)
        across = s_high[axis] - s_low[axis]
        assert 45.0 - 3.6 <= across <= 80.0  # the slab, not the volume's 80 mm
        assert abs(0.5 * (s_low[axis] + s_high[axis])) <= 5.0 + 1.8  # centred on the gland
        in_plane = [a for a in range(3) if a != axis]
        np.testing.assert_allclose(
            s_high[in_plane] - s_low[in_plane], (high - low)[in_plane], atol=0.6
        )
        assert _ml(series_mask) > 0.9 * _ml(mask)  # the gland is in the slab


def test_the_coil_pushes_the_gland_forward_on_every_slice_alike():
    image, mask = _ball_volume()
    _, moved_mask = simulate(image, mask, "coil", seed=4)
    before, after = sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(moved_mask)
    rows = [np.nonzero(a[12])[0].mean() for a in (before, after)]
    assert rows[1] < rows[0] - 1.0  # anterior = smaller row in LPS


def test_simulate_writes_a_labelled_six_site_dataset(tmp_path, capsys):
    image, mask = _ball_volume()
    source = tmp_path / "data" / "SiteA"
    source.mkdir(parents=True)
    sitk.WriteImage(image, str(source / "Case00.nii.gz"))
    sitk.WriteImage(mask, str(source / "Case00_segmentation.nii.gz"))
    out = tmp_path / "coil"
    assert main(["simulate", "coil", str(tmp_path / "data"), str(out)]) == 0
    assert (out / "SiteA-coil" / "SiteA_Case00_segmentation.nii.gz").is_file()
    # the simulated copy is its source volume's patient, as read back, under a site too
    [copy] = find_cases(out)[1]
    assert copy.case_id == "SiteA-coil/SiteA_Case00" and copy.patient == "SiteA/Case00"
    [real] = source_cases(SourceConfig(str(tmp_path / "data"), site="s"))
    [sited] = source_cases(SourceConfig(str(out), site="s", test_only=True))
    assert sited.patient == real.patient == "s/SiteA/Case00"
    (out / "patients.json").write_text("[1]")
    with pytest.raises(DataError, match="patients.json: expected a mapping"):
        find_cases(out)
    assert main(["simulate", "coil", str(tmp_path / "data"), str(out)]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
