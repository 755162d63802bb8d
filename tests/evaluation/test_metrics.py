"""prokd's metrics are MONAI's definitions without torch: checked against MONAI itself."""

import numpy as np
import pytest

from prokd.evaluation.metrics import dice_score, volume_metrics

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")


def _blob(shape, centre, radii):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1


def _onehot(mask):
    fg = torch.from_numpy(mask)
    return torch.stack([~fg, fg])[None].float()


def _noisy_blob(seed, shape, centre):
    rng = np.random.default_rng(seed)
    blob = _blob(shape, centre, rng.uniform(3, 9, 3))
    return blob ^ (rng.random(shape) < 0.02)  # specks and holes: many small surfaces


@pytest.mark.parametrize(
    "pred,truth,spacing",
    [
        (
            _blob((12, 40, 44), (6, 22, 21), (3.5, 11, 15)),
            _blob((12, 40, 44), (6, 20, 22), (4, 12, 14)),
            (3.5, 0.6, 0.8),
        ),
        # both touch the volume's border: outside counts as background, as in MONAI
        (
            _blob((8, 30, 30), (0, 15, 0), (5, 9, 12)),
            _blob((8, 30, 30), (1, 14, 2), (4, 10, 10)),
            (3.0, 0.5, 0.7),
        ),
        (
            _noisy_blob(1, (10, 32, 36), (5, 16, 18)),
            _noisy_blob(2, (10, 32, 36), (4, 15, 19)),
            (4.0, 0.45, 0.45),
        ),
    ],
)
def test_matches_monai_metric_functions(pred, truth, spacing):
    m = volume_metrics(pred, truth, spacing)
    p, t = _onehot(pred), _onehot(truth)
    hd95 = monai_metrics.compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing))
    assd = monai_metrics.compute_average_surface_distance(
        p, t, symmetric=True, spacing=list(spacing)
    )
    assert m.hd95 == pytest.approx(float(hd95), rel=1e-5)
    assert m.assd == pytest.approx(float(assd), rel=1e-5)
    assert m.dice == pytest.approx(
        float(monai_metrics.compute_dice(p, t, include_background=False)), rel=1e-6
    )
    assert m.iou == pytest.approx(
        float(monai_metrics.compute_iou(p, t, include_background=False)), rel=1e-6
    )
    inter, total = (pred & truth).sum(), pred.sum() + truth.sum()
    assert m.dice == pytest.approx(2 * inter / total)
    assert m.iou == pytest.approx(inter / (total - inter))
    assert m.true_ml == pytest.approx(truth.sum() * float(np.prod(spacing)) / 1000)


def test_shift_by_one_slice_gives_slice_thickness_distances():
    truth = _blob((10, 20, 20), (5, 10, 10), (3, 6, 6))
    pred = np.roll(truth, 1, axis=0)
    m = volume_metrics(pred, truth, (4.0, 1.0, 1.0))
    assert m.hd95 == pytest.approx(4.0)
    assert 0 < m.assd <= 4.0


def test_empty_masks_have_defined_values():
    empty = np.zeros((4, 5, 6), bool)
    full = empty.copy()
    full[1:3, 1:4, 1:5] = True
    both = volume_metrics(empty, empty, (2.0, 1.0, 1.0))
    assert (both.dice, both.iou, both.hd95, both.assd) == (1.0, 1.0, 0.0, 0.0)
    diagonal = np.linalg.norm([8.0, 5.0, 6.0])
    for pred, truth in ((empty, full), (full, empty)):
        m = volume_metrics(pred, truth, (2.0, 1.0, 1.0))
        assert (m.dice, m.iou) == (0.0, 0.0)
        assert m.hd95 == pytest.approx(diagonal) and m.assd == pytest.approx(diagonal)
        assert all(np.isfinite(list(m.as_dict().values())))
    assert dice_score(empty, empty) == 1.0 and dice_score(full, empty) == 0.0


def test_surface_distances_are_the_nearest_surface_voxels_a_kd_tree_finds():
    """The distance transform gives each surface voxel's distance to the other surface's
    nearest voxel: the brute-force answer of a k-d tree over physical points."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from prokd.evaluation.metrics import surface_distances

    rng = np.random.default_rng(3)
    spacing = (3.0, 0.5, 0.7)
    for _ in range(4):
        pred = ndimage.uniform_filter(rng.random((10, 30, 26)), 3) > 0.55
        truth = ndimage.uniform_filter(rng.random((10, 30, 26)), 3) > 0.5
        surfaces = [m & ~ndimage.binary_erosion(m) for m in (pred, truth)]
        points = [np.argwhere(s) * np.asarray(spacing) for s in surfaces]
        to_truth, to_pred = surface_distances(pred, truth, spacing)
        np.testing.assert_allclose(to_truth, cKDTree(points[1]).query(points[0])[0], atol=1e-9)
        np.testing.assert_allclose(to_pred, cKDTree(points[0]).query(points[1])[0], atol=1e-9)
