import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.io import Geometry, image_from_array, read_volume, write_volume
from prokd.errors import DataError
from tests.conftest import make_volume, write

OBLIQUE = (1, 0, 0, 0, 0.8, -0.6, 0, 0.6, 0.8)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
def test_read_write_read_keeps_array_and_geometry(tmp_path, suffix):
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    original = make_volume(array, spacing=(0.4, 0.6, 3.5), origin=(-10, 20.5, 3), direction=OBLIQUE)
    first = write_volume(original, tmp_path / f"a{suffix}")
    image = read_volume(first)
    second = write_volume(image, tmp_path / f"b{suffix}")
    again = read_volume(second)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), array)
    assert Geometry.of(original).mismatch(Geometry.of(again), tolerance=1e-5) is None


def test_a_mask_written_on_a_reference_grid_keeps_its_geometry(tmp_path):
    reference = make_volume(
        np.zeros((3, 4, 5), np.float32),
        spacing=(0.7, 0.7, 4.0),
        origin=(1, 2, 3),
        direction=OBLIQUE,
    )
    mask = np.zeros((3, 4, 5), np.uint8)
    mask[1, 2, 3] = 1
    out = read_volume(write_volume(image_from_array(mask, reference), tmp_path / "m.nii.gz"))
    assert Geometry.of(out).mismatch(Geometry.of(reference), tolerance=1e-6) is None
    assert out.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), mask)


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "x.nii.gz"
    with pytest.raises(TypeError):
        write_volume("not an image", target)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        read_volume(tmp_path / "missing.nii.gz")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="scan.png: unsupported file type"):
        read_volume(path)


def test_truncated_archive(tmp_path):
    path = write(tmp_path / "full.nii.gz", np.ones((8, 16, 16), np.float32))
    data = path.read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read volume"):
        read_volume(truncated)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"definitely not nifti"))
    with pytest.raises(DataError, match="junk.nii.gz: cannot read volume"):
        read_volume(path)


def test_2d_image_is_rejected(tmp_path):
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5), np.float32)), str(path))
    with pytest.raises(DataError, match="flat.nii.gz: expected a 3D volume, got 2D"):
        read_volume(path)


def _write_4d(path, channels):
    array = np.stack([np.full((3, 4, 5), c, np.float32) for c in range(channels)])
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    return path


def test_4d_channel_selection(tmp_path):
    path = _write_4d(tmp_path / "mp.nii.gz", 2)
    t2 = read_volume(path, channel=0)
    adc = read_volume(path, channel=1)
    assert t2.GetDimension() == 3 and t2.GetSize() == (5, 4, 3)
    assert sitk.GetArrayFromImage(t2).max() == 0 and sitk.GetArrayFromImage(adc).min() == 1


def test_4d_without_channel_or_out_of_range(tmp_path):
    path = _write_4d(tmp_path / "mp.nii.gz", 2)
    with pytest.raises(DataError, match="mp.nii.gz: 4D volume with 2 channels"):
        read_volume(path)
    with pytest.raises(DataError, match="mp.nii.gz: 4D volume has 2 channels, channel 5"):
        read_volume(path, channel=5)


def _cut(path, keep):
    """Keep the first ``keep`` bytes (negative: drop the last ``-keep``)."""
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "name,compress,data_file,keep",
    [
        ("cut.nii.gz", True, "cut.nii.gz", 2000),  # a broken download
        ("cut.nii", False, "cut.nii", -1000),
        ("cut.mha", False, "cut.mha", -1000),
        ("cut.mha", True, "cut.mha", -1000),
        ("cut.mhd", False, "cut.raw", -1000),
        ("cut.nrrd", False, "cut.nrrd", -1000),
        ("cut.nrrd", True, "cut.nrrd", -1000),
        ("cut.nhdr", False, "cut.raw", -1000),
    ],
)
def test_a_truncated_integer_volume_is_refused(tmp_path, name, compress, data_file, keep):
    """ITK fills the missing voxels of a truncated integer NIfTI with zeros silently: every
    format, whatever its voxel type, is refused instead."""
    array = (np.random.default_rng(0).random((12, 48, 40)) * 900).astype(np.int16)
    sitk.WriteImage(make_volume(array), str(tmp_path / name), useCompression=compress)
    assert read_volume(tmp_path / name).GetSize() == (40, 48, 12)  # intact: read
    _cut(tmp_path / data_file, keep)
    with pytest.raises(DataError, match=rf"{name}: (truncated|cannot read volume: truncated)"):
        read_volume(tmp_path / name)


def test_volume_hash_covers_every_data_file(tmp_path):
    """A detached header's data file and every file of a DICOM folder are in the hash, so
    an edited .raw file or slice never reuses a stale cache entry."""
    from prokd.data.io import file_sha256, volume_sha256

    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sitk.WriteImage(make_volume(array), str(tmp_path / "a.mhd"), useCompression=False)
    before = volume_sha256(tmp_path / "a.mhd")
    raw = tmp_path / "a.raw"
    raw.write_bytes(raw.read_bytes()[:-1] + b"\x07")
    assert volume_sha256(tmp_path / "a.mhd") != before
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"one")
    (folder / "2.dcm").write_bytes(b"two")
    before = volume_sha256(folder)
    (folder / "2.dcm").write_bytes(b"TWO")
    assert volume_sha256(folder) != before
    assert volume_sha256(raw) == file_sha256(raw)  # a single file: its own bytes
