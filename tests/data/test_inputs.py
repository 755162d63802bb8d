"""What ``prokd predict`` is pointed at: volume files, DICOM files and folders, folders of
volumes (masks skipped) and of DICOM studies; unusable inputs named in one line."""

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.dicom_write import StudyIdentity, write_series
from prokd.data.inputs import find_inputs
from prokd.errors import DataError
from tests.conftest import make_volume, write


def _volume(value=100.0):
    return make_volume(np.full((4, 8, 8), value, np.float32))


def test_a_volume_file_a_dicom_file_and_folders(tmp_path):
    volume = write(tmp_path / "scans" / "a.nii.gz", np.ones((4, 8, 8), np.float32))
    write(tmp_path / "scans" / "a_segmentation.nii.gz", np.ones((4, 8, 8), np.uint8))
    write(tmp_path / "scans" / "sub" / "b.mha", np.ones((4, 8, 8), np.float32))
    assert [v.path for v in find_inputs(volume)] == [volume]
    found = sorted(v.path.name for v in find_inputs(tmp_path / "scans"))
    assert found == ["a.nii.gz", "b.mha"]  # the mask is skipped
    files = write_series(_volume(), tmp_path / "dicom" / "P1" / "t2", StudyIdentity.named("P1"))
    write_series(_volume(), tmp_path / "dicom" / "P2" / "t2", StudyIdentity.named("P2"))
    (single,) = find_inputs(files[2])  # a file stands for its series
    assert single.series is not None and single.series.folder == files[0].parent
    studies = find_inputs(tmp_path / "dicom")
    assert [v.series.patient_id for v in studies] == ["P1", "P2"]
    assert studies[0].output_stem(tmp_path / "dicom").as_posix() == "P1/t2"


def test_unusable_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        find_inputs(tmp_path / "gone.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.txt: unsupported file type"):
        find_inputs(text)
    nan = np.ones((4, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    (volume,) = find_inputs(write(tmp_path / "nan.nrrd", nan))
    with pytest.raises(DataError, match="nan.nrrd: contains 1 NaN/Inf voxels"):
        volume.read()


def test_a_4d_channel_is_read_as_asked(tmp_path):
    channels = [sitk.GetImageFromArray(np.full((4, 8, 8), c, np.float32)) for c in (1.0, 2.0)]
    path = tmp_path / "mp.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(channels), str(path))
    (volume,) = find_inputs(path)
    second = replace(volume, channel=1).read()
    assert second.GetDimension() == 3
    assert float(sitk.GetArrayViewFromImage(second).max()) == 2.0
