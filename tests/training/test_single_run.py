"""``prokd train`` refuses a run folder before writing into it, and resumes only the same run."""

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.io import read_volume
from prokd.distill.volume_teachers import to_slice_grid
from prokd.errors import ConfigError, ProkdError
from prokd.training.config import config_from_dict
from prokd.training.runs import prepare_data
from prokd.training.single_run import train_single
from tests.conftest import tiny_phantom
from tests.training.test_experiment import TINY as EXPERIMENT_TINY

TINY = {
    **EXPERIMENT_TINY,
    "model": "unet-w4",
    "split": {"val_fraction": 0.0, "test_fraction": 0.0},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp("phantom"), sites=1, cases_per_site=2, seed=2)


def _config(data, tmp_path, **train):
    values = {**TINY, "data": {"root": str(data), "cache_dir": str(tmp_path / "cache")}}
    values["train"] = {**TINY["train"], **train}
    return config_from_dict(values)


def test_an_existing_checkpoint_is_refused_before_anything_is_written(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"old")
    with pytest.raises(ProkdError, match="already holds a checkpoint"):
        train_single(_config(data, tmp_path), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_resume_needs_the_same_config(data, tmp_path):
    out = tmp_path / "run"
    config = _config(data, tmp_path, epochs=1)
    train_single(config, out, progress=False)
    changed = _config(data, tmp_path, epochs=1, lr=0.5)
    with pytest.raises(ConfigError, match="config.yaml: the run was started with another config"):
        train_single(changed, out, resume=True, progress=False)
    summary = train_single(config, out, resume=True, progress=False)
    assert summary["epochs_run"] == 1  # nothing left to do: the run was complete


def test_resume_without_a_checkpoint_is_refused(data, tmp_path):
    with pytest.raises(ProkdError, match="nothing to resume"):
        train_single(_config(data, tmp_path), tmp_path / "new", resume=True, progress=False)
    assert not (tmp_path / "new").exists()


def gland_probabilities(image: sitk.Image) -> np.ndarray:
    """A callable volume teacher: the brightest tenth of the voxels is gland."""
    array = sitk.GetArrayFromImage(image)
    return np.where(array > np.percentile(array, 90), 0.95, 0.05).astype(np.float32)


def test_a_volume_teacher_distils_through_kl_only(data, tmp_path):
    spec = f"{__name__}:gland_probabilities"
    config = _config(data, tmp_path, epochs=1).replace(
        distill={"teachers": (spec,)}, loss={"feature": 1.0}
    )
    summary = train_single(config, tmp_path / "run", progress=False)
    assert summary["volume_teachers"] == [spec] and summary["teachers"] == []
    assert summary["weighting"] == "uniform"
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["kl"]) > 0 and "feature" not in rows[0]  # a black box: no features
    cached = sorted((tmp_path / "cache" / "volume-teachers").glob("*.npy"))
    assert len(cached) == len(summary["train_cases"]) == 2
    case = prepare_data(config).case(summary["train_cases"][0])
    image = read_volume(case.image)
    expected = to_slice_grid(gland_probabilities(image), image, config.preprocess)
    stored = [np.load(p).astype(np.float32) for p in cached]
    assert any(s.shape == expected.shape and np.abs(s - expected).max() < 1e-3 for s in stored)
