"""``prokd train`` refuses a run folder before writing into it, and resumes only the same run."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from prokd.cli import main
from prokd.data.io import read_volume
from prokd.errors import ConfigError, ProkdError
from prokd.evaluation.bench import bench_model, bench_subject
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import predict_volume
from prokd.training.config import config_from_dict
from prokd.training.runs import prepare_data
from prokd.training.single_run import train_single
from tests.conftest import TINY_EXPERIMENT, tiny_phantom

TINY = {
    **TINY_EXPERIMENT,
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
    expected = gland_probabilities(image)  # cached on the volume's own grid
    stored = [np.load(p).astype(np.float32) for p in cached]
    assert any(s.shape == expected.shape and np.abs(s - expected).max() < 1e-3 for s in stored)


def test_a_25d_model_trains_exports_predicts_and_benches(data, tmp_path):
    """preprocess.context_slices: 1 gives 3-channel networks end to end: the checkpoint and
    its ONNX export give the same probabilities, and the bench times 3-channel input."""
    config = _config(data, tmp_path, epochs=1).replace(
        preprocess={"context_slices": 1}, model="unet-w4"
    )
    train_single(config, tmp_path / "run", progress=False)
    loaded = load_model_file(tmp_path / "run")
    first_conv = next(m for m in loaded.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert loaded.settings.channels == 3 and first_conv.in_channels == 3
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(onnx)]) == 0
    case = prepare_data(config).cases[0]
    image = read_volume(case.image)
    expected = predict_volume(loaded.slice_model, image, loaded.settings).probabilities
    exported = load_model_file(onnx)
    got = predict_volume(exported.slice_model, image, exported.settings).probabilities
    assert float(np.abs(got - expected).max()) < 1e-4
    row = bench_model(bench_subject(str(onnx)), 32, threads=1, runs=1)
    assert row["params"] > 0 and row["onnx_volume"]["median_ms"] > 0
    with pytest.raises(ConfigError, match="preprocess.context_slices must be in 0..3"):
        config_from_dict({"preprocess": {"context_slices": 4}})


def test_site_teacher_workflow_from_files(tmp_path_factory, tmp_path, capsys):
    """The documented workflow: each site trains and exports a teacher file with its taps
    from its own data; the centre trains a student from the files, on its own labels and the
    other site's scans without masks, weighing the teachers by site."""
    phantom = tiny_phantom(tmp_path_factory.mktemp("sites"), sites=2, cases_per_site=2, seed=4)
    files = []
    for site in ("SiteA", "SiteB"):
        (tmp_path / "sites" / site).mkdir(parents=True)
        (tmp_path / "sites" / site / site).symlink_to(phantom / site)  # one site's own folder
        config = tmp_path / f"{site}.yaml"
        config.write_text(yaml.safe_dump({**TINY, "data": {"cache_dir": str(tmp_path / "c")}}))
        run = tmp_path / "runs" / site
        assert (
            main(
                ["train", str(config), "--data", str(tmp_path / "sites" / site), "--out", str(run)]
            )
            == 0
        )
        files.append(tmp_path / f"{site}.onnx")
        assert (
            main(["export", str(run), "--format", "onnx", "--with-taps", "--out", str(files[-1])])
            == 0
        )
    centre = {
        **TINY,
        "data": {
            "root": str(tmp_path / "sites" / "SiteA"),
            "unlabelled": [str(tmp_path / "sites" / "SiteB")],
            "cache_dir": str(tmp_path / "c"),
        },
        "distill": {
            "teachers": [str(f) for f in files],
            "teacher_sites": ["SiteA", "SiteB"],
            "weighting": "site",
        },
    }
    config = tmp_path / "centre.yaml"
    config.write_text(yaml.safe_dump(centre))
    out = tmp_path / "runs" / "centre"
    assert main(["train", str(config), "--out", str(out)]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["unlabelled_cases"] and all(
        c.startswith("SiteB/") for c in summary["unlabelled_cases"]
    )
    log = (out / "log.csv").read_text()
    assert "kl" in log.splitlines()[0] and "feature" in log.splitlines()[0]  # features taught
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**centre, "distill": {**centre["distill"], "teacher_sites": ["SiteA"]}})
    )
    assert main(["train", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "distill.teacher_sites: 1 sites for 2 teachers" in capsys.readouterr().err
    # The learned gate needs two teachers new to the centre's labelled slices: with two
    # sites there is one, and training stops before writing anything.
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        yaml.safe_dump({**centre, "distill": {**centre["distill"], "weighting": "gate"}})
    )
    assert main(["train", str(gate), "--out", str(tmp_path / "gate")]) == 2
    assert "no labelled slice on which two teachers are held out" in capsys.readouterr().err
    assert not (tmp_path / "gate").exists()
