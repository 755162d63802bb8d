"""Masks do not depend on how a file stores its axes: a real scan in all 48 axis orderings
and flips gives one mask in physical space, and one QC record."""

import itertools

import numpy as np
import SimpleITK as sitk

from prokd.data.preprocess import axial_view, file_axes
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import segment_image
from tests.conftest import make_volume


def _orientations() -> list[str]:
    """The 48 orientation codes: every permutation of the three axes, each axis flipped
    or not."""
    axes = ("LR", "PA", "SI")
    return [
        "".join(axes[a][flip] for a, flip in zip(order, flips, strict=True))
        for order in itertools.permutations(range(3))
        for flips in itertools.product((0, 1), repeat=3)
    ]


def test_file_axes_undoes_the_axial_view_for_every_ordering():
    rng = np.random.default_rng(0)
    image = make_volume(rng.normal(size=(5, 7, 9)).astype(np.float32), (0.7, 0.9, 3.0))
    codes = _orientations()
    assert len(set(codes)) == 48
    for code in codes:
        stored = sitk.DICOMOrient(image, code)
        axial = sitk.GetArrayFromImage(axial_view(stored))
        np.testing.assert_array_equal(file_axes(axial, stored), sitk.GetArrayFromImage(stored))


def test_a_real_scan_gets_the_same_mask_in_all_48_orderings(shared_data):
    model = load_model_file("prostate-t2")
    scan = sitk.ReadImage(str(shared_data / "real/prostate158/002/t2.nii.gz"))
    scan = sitk.DICOMOrient(scan, "LPS")
    reference = segment_image(model, scan)
    assert reference.mask.sum() > 1000
    for code in _orientations():
        stored = sitk.DICOMOrient(scan, code)
        result = segment_image(model, stored)
        mask = sitk.GetImageFromArray(result.mask)
        mask.CopyInformation(stored)
        in_lps = sitk.GetArrayFromImage(sitk.DICOMOrient(mask, "LPS"))
        assert np.array_equal(in_lps, reference.mask), code
        assert result.qc == reference.qc, code
