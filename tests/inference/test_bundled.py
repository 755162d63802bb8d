"""The bundled model, used by name on a fresh install: no training, no download."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.cli import main
from prokd.errors import ProkdError
from prokd.evaluation.metrics import dice_score
from prokd.inference.bundled import BUNDLED, bundled_path, resolve_model_path
from tests.conftest import assert_same_grid, make_volume

MAX_BYTES = 5_000_000


def test_every_bundled_model_ships_and_is_small():
    for name in BUNDLED:
        assert 0 < bundled_path(name).stat().st_size <= MAX_BYTES


def test_models_lists_the_bundled_model(capsys):
    assert main(["models", "prostate-t2"]) == 0
    out = capsys.readouterr().out
    assert "prostate-t2" in out and "parameters" in out and "MB" in out
    assert "centred on the gland" in out and "prostate-localiser" not in out
    assert "unet" not in out.splitlines()[0]  # only the bundled model was asked for
    assert main(["models", "prostate-localiser"]) == 0
    assert "480 mm centred on the image" in capsys.readouterr().out
    with pytest.raises(ProkdError, match="bundled: prostate-t2, prostate-localiser"):
        bundled_path("prostate-t1")


def test_a_bundled_name_is_never_shadowed_by_a_local_folder(tmp_path, monkeypatch):
    """A folder named like a bundled model in the working directory (a run of that name)
    does not replace the bundled file; ``./NAME`` reaches the folder."""
    from prokd.inference.bundled import model_kind

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prostate-localiser").mkdir()
    (tmp_path / "prostate-t2").mkdir()
    assert resolve_model_path("prostate-localiser") == bundled_path("prostate-localiser")
    assert resolve_model_path("prostate-t2") == bundled_path("prostate-t2")
    assert resolve_model_path("./prostate-t2").resolve() == (tmp_path / "prostate-t2").resolve()
    kinds = {
        "prostate-t2": "bundled",
        "taps": "taps",
        "teacher.yaml": "declared",
        "SiteB.onnx": "export",
        "model.ts": "export",
        "tests.training.test_experiment:bright_gland": "callable",
        "runs/teacher": "checkpoint",
        "runs/teacher/best.pt": "checkpoint",
    }
    assert {spec: model_kind(spec) for spec in kinds} == kinds


def test_predict_by_name_keeps_the_input_geometry_without_torch(tmp_path):
    """`prokd predict prostate-t2` on an oblique, anisotropic volume: a 0/1 mask with the
    input's exact grid, in a process that never imports torch, nor the view bank's code or
    YAML (0.1 s of cold start that prediction does not need), nibabel (0.2 s) or
    scipy.ndimage (0.3 s)."""
    rng = np.random.default_rng(0)
    image = make_volume(
        rng.normal(300, 50, (7, 90, 80)).astype(np.float32),
        (0.6, 0.7, 3.3),
        origin=(-20, 13, 7),
        direction=(0, 1, 0, -0.8, 0, 0.6, 0.6, 0, 0.8),
    )
    source, out = tmp_path / "in.nii.gz", tmp_path / "mask.nii.gz"
    sitk.WriteImage(image, str(source))
    quiet = ("torch", "prokd.distill.view_bank", "yaml", "nibabel", "scipy.ndimage")
    script = (
        f"import sys; from prokd.cli import main; QUIET = {quiet!r}; "
        f"code = main(['predict', 'prostate-t2', {str(source)!r}, {str(out)!r}]); "
        "print(code, *(m in sys.modules for m in QUIET))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.stdout.split()[-6:] == ["0"] + ["False"] * len(quiet), run.stderr
    assert_same_grid(sitk.ReadImage(str(out)), image)


def test_predict_a_real_scan_by_name(shared_data, tmp_path):
    """On a real Prostate158 scan (one of the bundled model's training cases: a check that
    the shipped file segments a gland, not a held-out score) the mask overlaps the reader's,
    and the QC at the shipped strictness raises no false alarm on it."""
    case = shared_data / "real/prostate158/002"
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "prostate-t2", str(case / "t2.nii.gz"), str(out)]) == 0
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t2_anatomy_reader1.nii.gz"))) > 0
    assert mask.shape == truth.shape and dice_score(mask, truth) > 0.7
    qc = json.loads((tmp_path / "mask.qc.json").read_text())
    assert qc["reliable"] and qc["reasons"] == [], qc["reasons"]


def test_evaluate_and_bench_by_name(shared_data, tmp_path, capsys):
    out = tmp_path / "evaluation"
    data = shared_data / "real/prostate158"
    assert main(["evaluate", "prostate-t2", "--data", str(data), "--out", str(out)]) == 0
    assert (out / "metrics.csv").read_text().count("\n") == 4  # header and 3 cases
    stem = tmp_path / "bench"
    argv = ["bench", "prostate-t2", "--size", "128", "--runs", "2", "--out", str(stem)]
    assert main(argv) == 0
    assert "prostate-t2" in stem.with_suffix(".md").read_text()


def test_a_folder_is_predicted_with_one_model_load(tmp_path, monkeypatch):
    import prokd.inference.segment as segment

    loads = []
    original = segment.load_model_file
    monkeypatch.setattr(
        segment, "load_model_file", lambda *a, **k: loads.append(a) or original(*a, **k)
    )
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        image = make_volume(rng.normal(300, 50, (4, 40, 40)).astype(np.float32), (0.8, 0.8, 3))
        sitk.WriteImage(image, str(tmp_path / "in" / f"{name}.nii.gz"))
    assert main(["predict", "prostate-t2", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert len(loads) == 1 and len(list((tmp_path / "out").glob("*.nii.gz"))) == 3


def test_localiser_and_body_find_the_gland_of_an_off_centre_wide_scan(shared_data, tmp_path):
    """A real scan padded with air into a 433 x 353 mm field of view, its centre 157 mm
    (x) and 94 mm (y) off the new centre: centred on the image the grid misses the gland;
    placed by the localiser (the default) or on the body it finds it again."""
    case = shared_data / "real/prostate158/002"
    image = sitk.ReadImage(str(case / "t2.nii.gz"))
    truth = sitk.ReadImage(str(case / "t2_anatomy_reader1.nii.gz"))
    pad = ([680, 60, 0], [12, 460, 0])  # 0.47 mm pixels: the scan sits off-centre in x and y
    wide = tmp_path / "wide.nii.gz"
    sitk.WriteImage(sitk.ConstantPad(image, *pad, 0.0), str(wide))
    wide_truth = sitk.GetArrayFromImage(sitk.ConstantPad(truth, *pad, 0)) > 0
    dice = {}
    for centre in ("image", "body", None):
        out = tmp_path / f"{centre}.nii.gz"
        placement = ["--crop-centre", centre] if centre else []
        assert main(["predict", "prostate-t2", str(wide), str(out), *placement]) == 0
        dice[centre] = dice_score(sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0, wide_truth)
    assert dice["image"] < 0.3 and dice["body"] > 0.6 and dice[None] > 0.8, dice


def test_a_bundled_model_beside_another_localiser_is_refused(tmp_path, monkeypatch, capsys):
    """prostate-t2 records its localiser's SHA-256: with another localiser file in its place
    (here a copy with one byte changed) it is refused in one line, before any prediction."""
    import shutil

    import prokd.inference.bundled as bundled
    from prokd.inference.model_files import load_model_file

    swapped = tmp_path / "bundled"
    shutil.copytree(bundled.BUNDLED_DIR, swapped)
    localiser = swapped / "prostate-localiser.onnx"
    data = bytearray(localiser.read_bytes())
    data[-1] ^= 1
    localiser.write_bytes(bytes(data))
    assert load_model_file("prostate-t2").name == "unet-w8"  # the shipped pair loads
    monkeypatch.setattr(bundled, "BUNDLED_DIR", swapped)
    volume = tmp_path / "in.nii.gz"
    sitk.WriteImage(make_volume(np.zeros((4, 8, 8), np.float32)), str(volume))
    assert main(["predict", "prostate-t2", str(volume), str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its localiser 'prostate-localiser'" in err[0]
    assert "is not the one it was made with" in err[0]
    assert not (tmp_path / "out.nii.gz").exists()


def test_onnx_sessions_sleep_between_runs():
    """Every ONNX model runs in a session whose threads do not spin between the many small
    batches of a prediction (spinning cost a volume a third more CPU; see onnx_session)."""
    from prokd.inference.model_files import onnx_session

    for name in BUNDLED:
        options = onnx_session(bundled_path(name)).get_session_options()
        for pool in ("intra_op", "inter_op"):
            assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == "0"
