"""``prokd.segment``: the one-call Python API gives what ``prokd predict`` writes."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.cli import main
from prokd.errors import DataError
from prokd.evaluation.metrics import dice_score
from tests.conftest import assert_same_grid


def test_the_readme_example_runs_without_torch(shared_data, tmp_path):
    """The README's five lines, in a fresh process: a mask on the input's grid, and torch
    never imported."""
    scan = shared_data / "real/prostate158/002/t2.nii.gz"
    script = f"""
import sys
import prokd
result = prokd.segment({str(scan)!r})
import SimpleITK as sitk
sitk.WriteImage(result.mask, {str(tmp_path / "api.nii.gz")!r})
print(result.qc["gland_ml"], "torch" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    gland_ml, torch_loaded = run.stdout.split()
    assert torch_loaded == "False" and 20 < float(gland_ml) < 150
    assert main(["predict", "prostate-t2", str(scan), str(tmp_path / "cli.nii.gz")]) == 0
    api = sitk.ReadImage(str(tmp_path / "api.nii.gz"))
    cli = sitk.ReadImage(str(tmp_path / "cli.nii.gz"))
    assert_same_grid(api, sitk.ReadImage(str(scan)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(api), sitk.GetArrayFromImage(cli))


def test_segment_takes_an_image_and_a_dicom_series(shared_data):
    import prokd

    from_series = prokd.segment(shared_data / "dicom/ProstateX/ProstateX-0000")
    image = sitk.ReadImage(str(shared_data / "unlabeled/prostatex/ProstateX-0000/t2.nii.gz"))
    from_image = prokd.segment(image)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(from_series.mask), sitk.GetArrayFromImage(from_image.mask)
    )
    probabilities = sitk.GetArrayFromImage(from_image.probabilities)
    assert (
        probabilities.dtype == np.float32 and 0 <= probabilities.min() <= probabilities.max() <= 1
    )
    # the mask is the thresholded probabilities, post-processed (largest component, holes)
    assert dice_score(sitk.GetArrayFromImage(from_image.mask) > 0, probabilities >= 0.5) > 0.95
    assert set(from_image.qc) >= {"gland_ml", "touches_border", "warnings"}


def test_segment_refuses_a_folder_of_several_volumes(shared_data):
    import prokd

    with pytest.raises(DataError, match="holds 3 volumes"):
        prokd.segment(shared_data / "real/prostate158")


def test_segment_takes_a_phantom_series_and_its_image_alike(phantom_study):
    import prokd

    from_series = prokd.segment(phantom_study.folder)
    from_image = prokd.segment(phantom_study.image)
    mask = sitk.GetArrayFromImage(from_series.mask)
    assert mask.sum() > 1000
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(from_image.mask))
    assert_same_grid(from_series.mask, phantom_study.image)


def test_segment_refuses_an_image_with_nan_voxels(phantom_study):
    import prokd

    array = sitk.GetArrayFromImage(phantom_study.image).astype(np.float32)
    array[3, 10, 10] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(phantom_study.image)
    with pytest.raises(DataError, match="<image>: contains 1 NaN/Inf voxels"):
        prokd.segment(image)
