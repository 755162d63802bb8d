import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.cli import main
from prokd.data.dicom import find_series, read_series, series_at
from tests.conftest import ball_case, write


def test_phantom_then_inspect(tmp_path, capsys):
    out, dicom = tmp_path / "ph", tmp_path / "dicom"
    argv = ["phantom", str(out), "--sites", "2", "--cases-per-site", "1", "--workers", "1"]
    assert main([*argv, "--preview", "--dicom", str(dicom)]) == 0
    assert (out / "preview.png").stat().st_size > 1000
    assert "DICOM: 2 studies" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layout: six-site" in text and "SiteA 1, SiteB 1" in text
    assert "2 of 2 cases usable" in text
    # each case is also a DICOM study of one axial T2 series holding the same voxels
    series = find_series(dicom)
    assert len({s.study_uid for s in series}) == 2 and all(s.is_t2 for s in series)
    nifti = sitk.ReadImage(str(out / "SiteA" / "Case00.nii.gz"))
    read = read_series(series_at(dicom / "SiteA" / "Case00" / "t2"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(nifti))


def test_inspect_real_prostate158_prints_gland_volumes(shared_data, capsys):
    assert main(["inspect", str(shared_data / "real" / "prostate158")]) == 0
    text = capsys.readouterr().out
    assert "layout: prostate158" in text and "3 of 3 cases usable" in text
    line = next(row for row in text.splitlines() if row.startswith("001 "))
    volumes = [float(v) for v in line.split()[-3::2]]  # "70.7 / 76.4": both readers
    assert all(40 < v < 100 for v in volumes)


def test_inspect_reports_every_problem_and_fails(tmp_path, capsys):
    image, mask = ball_case()
    write(tmp_path / "S" / "Case00.nii.gz", image)
    write(tmp_path / "S" / "Case00_segmentation.nii.gz", mask)
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    write(tmp_path / "S" / "Case01.nii.gz", bad)
    write(tmp_path / "S" / "Case01_segmentation.nii.gz", mask)
    write(tmp_path / "S" / "Case02.nii.gz", image)
    write(tmp_path / "S" / "Case02_segmentation.nii.gz", np.zeros_like(mask))
    assert main(["inspect", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "2 of 3 cases usable" in text
    assert "error:" in text and "Case01.nii.gz: contains 1 NaN/Inf voxels" in text
    assert "warning:" in text and "Case02_segmentation.nii.gz: empty mask" in text


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "prokd.cli", "inspect", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope: data folder not found" in result.stderr and "Traceback" not in result.stderr


def test_abbreviated_options_are_refused(tmp_path, capsys):
    """``--out`` is not silently read as ``--output-format`` (or any other option)."""
    image = write(tmp_path / "scan.nii.gz", ball_case()[0])
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "prostate-t2", str(image), str(tmp_path / "masks"), "--out", "x"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --out" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()
