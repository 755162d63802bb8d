"""Preparing a run's data: the localiser that places ``crop_centre: gland`` grids."""

import shutil

import pytest

from prokd.data.io import file_sha256
from prokd.errors import ConfigError
from prokd.inference.bundled import bundled_path
from prokd.training.config import config_from_dict
from prokd.training.runs import prepare_data
from tests.conftest import ball_case, write


def _config(tmp_path, localiser):
    for i in range(3):
        image, mask = ball_case(shape=(6, 32, 32), seed=i)
        write(tmp_path / "data" / "S1" / f"Case{i:02d}.nii.gz", image)
        write(tmp_path / "data" / "S1" / f"Case{i:02d}_segmentation.nii.gz", mask)
    return config_from_dict(
        {
            "data": {"root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
            "preprocess": {"size": 32, "crop_centre": "gland", "localiser": localiser},
        }
    )


def test_gland_grids_are_placed_by_the_configured_localiser(tmp_path):
    localiser = tmp_path / "fold-localiser.onnx"
    shutil.copyfile(bundled_path("prostate-localiser"), localiser)
    data = prepare_data(_config(tmp_path, str(localiser)))
    assert data.cache.locator.spec == str(localiser)
    assert data.cache.locator.fingerprint == file_sha256(localiser)
    volumes = data.volumes(data.split.train)
    assert volumes and all(v.image.shape[1:] == (32, 32) for v in volumes)


def test_a_missing_localiser_stops_before_any_preprocessing(tmp_path):
    with pytest.raises(
        ConfigError, match="preprocess.localiser: .*gone.onnx: model file not found"
    ):
        prepare_data(_config(tmp_path, str(tmp_path / "gone.onnx")))
    assert not (tmp_path / "cache").exists()
