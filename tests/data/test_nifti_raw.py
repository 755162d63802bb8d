"""NIfTI facts ITK hides, read without nibabel, held to nibabel's reading of the same files."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.nifti_raw import check_nifti_length, nifti_non_finite_voxels
from prokd.errors import DataError


def _save(path, data, dtype, order="<", slope=None, inter=None):
    header = nib.Nifti1Header(endianness=order)
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(data.astype(dtype), np.diag([0.5, 0.5, 3.0, 1.0]), header)
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, str(path))
    return path


def _nibabel_count(path, channel=None):
    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.ndim == 4:
        data = data[..., channel or 0]
    return int(data.size - np.count_nonzero(np.isfinite(data)))


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("order", ["<", ">"])
def test_non_finite_voxels_are_counted_as_nibabel_counts_them(tmp_path, name, dtype, order):
    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, (6, 5, 4, 3))
    if np.issubdtype(dtype, np.floating):
        data[1, 2, 3, 0] = np.nan
        data[0, 0, 0, 0] = np.inf
        data[2, 2, 2, 2] = -np.inf  # another channel
    path = _save(tmp_path / name, data, dtype, order)
    for channel in (None, 1, 2):
        assert nifti_non_finite_voxels(path, channel) == _nibabel_count(path, channel)
    assert nifti_non_finite_voxels(path) == (2 if np.issubdtype(dtype, np.floating) else 0)


@pytest.mark.parametrize("slope,inter", [(2.0, 1.0), (0.0, 5.0), (np.nan, 0.0), (np.inf, 0.0)])
def test_scaled_integers_are_finite_as_itk_reads_them(tmp_path, slope, inter):
    """Whatever the scaling, ITK reads integers as finite numbers (an infinite slope is
    ignored, as a slope of 0 or NaN is by the standard). The header's scl_slope and
    scl_inter are set in the file's bytes (112 and 116): nibabel refuses to write some."""
    path = _save(tmp_path / "s.nii", np.ones((4, 3, 2)), np.int16)
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([slope, inter], "<f4").tobytes()
    path.write_bytes(bytes(raw))
    assert nifti_non_finite_voxels(path) == 0
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()
    if np.isfinite(slope):
        assert _nibabel_count(path) == 0


@pytest.mark.parametrize("name", ["c.nii", "c.nii.gz"])
def test_the_length_check_needs_nibabel_s_data_size(tmp_path, name):
    """Intact files pass; a file one byte short of what nibabel's header says is refused."""
    path = _save(tmp_path / name, np.ones((5, 4, 3)), np.float32)
    check_nifti_length(path)
    image = nib.load(str(path))
    needed = int(image.dataobj.offset) + 5 * 4 * 3 * image.get_data_dtype().itemsize
    raw = nib.openers.ImageOpener(str(path)).read()
    assert len(raw) == needed
    (tmp_path / "cut.nii").write_bytes(raw[:-1])
    with pytest.raises(DataError, match=rf"cut.nii: truncated file: {needed - 1} bytes"):
        check_nifti_length(tmp_path / "cut.nii")
