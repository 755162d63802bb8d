"""Predict, export and evaluate: what a user deploys."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from prokd.cli import main
from prokd.data.layouts import find_cases
from prokd.data.phantom import SITES, generate_case
from prokd.data.preprocess import PreprocessSettings
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import predict_volume
from prokd.inference.trained import model_payload
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import assert_same_grid, ball_case, make_volume, tiny_phantom, write

SETTINGS = PreprocessSettings(size=64, fov_mm=128.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "best.pt"
    return save_checkpoint(model_payload(build_model("unet-w4"), "unet-w4", SETTINGS), path)


@pytest.fixture(scope="module")
def phantom_volume(tmp_path_factory):
    image, _, spacing, origin = generate_case(SITES[4], 0, 4, 0)
    path = tmp_path_factory.mktemp("vol") / "case.nii.gz"
    sitk.WriteImage(make_volume(image, spacing, origin), str(path))
    return path


def test_predict_writes_mask_with_exact_input_geometry_oblique(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = make_volume(
        rng.normal(100, 20, (9, 70, 50)).astype(np.float32),
        (0.7, 0.55, 3.6),
        origin=(-20, 13, 7),
        direction=(0, 1, 0, -0.8, 0, 0.6, 0.6, 0, 0.8),
    )
    source = tmp_path / "in.nii.gz"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "out" / "mask.nii.gz"
    assert main(["predict", str(checkpoint), str(source), str(out), "--probabilities"]) == 0
    assert_same_grid(sitk.ReadImage(str(out)), image)
    probabilities = sitk.ReadImage(str(tmp_path / "out" / "mask_probabilities.nii.gz"))
    assert probabilities.GetSize() == image.GetSize()
    qc = json.loads((tmp_path / "out" / "mask.qc.json").read_text())
    assert {"gland_ml", "components", "touches_border", "slice_gaps", "warnings"} <= set(qc)
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"{re.escape(str(out))}: \d+\.\d ml, \d+\.\d\d s", printed), printed


def test_predict_refuses_to_overwrite(checkpoint, phantom_volume, tmp_path, capsys):
    out = tmp_path / "m.nii.gz"
    assert main(["predict", str(checkpoint), str(phantom_volume), str(out)]) == 0
    stamp = out.stat().st_mtime_ns
    assert main(["predict", str(checkpoint), str(phantom_volume), str(out)]) == 2
    assert "output exists; pass --overwrite" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp
    assert main(["predict", str(checkpoint), str(phantom_volume), str(out), "--overwrite"]) == 0


def test_predict_real_case_keeps_geometry(checkpoint, shared_data, tmp_path):
    source = shared_data / "real" / "prostate158" / "020" / "t2.nii.gz"
    out = tmp_path / "020.nii.gz"
    assert main(["predict", str(checkpoint), str(source), str(out), "--no-postprocess"]) == 0
    a, b = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_folder_of_a_known_layout_predicts_images_only(checkpoint, shared_data, tmp_path):
    out = tmp_path / "masks"
    assert (
        main(["predict", str(checkpoint), str(shared_data / "real" / "prostate158"), str(out)]) == 0
    )
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == ["001/t2.nii.gz", "002/t2.nii.gz", "020/t2.nii.gz"]


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".ts")])
def test_exported_model_gives_the_checkpoint_masks(
    checkpoint, phantom_volume, tmp_path, fmt, suffix
):
    exported = tmp_path / f"model{suffix}"
    assert main(["export", str(checkpoint), "--format", fmt, "--out", str(exported)]) == 0
    assert main(["export", str(checkpoint), "--format", fmt, "--out", str(exported)]) == 2
    image = sitk.ReadImage(str(phantom_volume))
    reference = load_model_file(checkpoint)
    loaded = load_model_file(exported)
    assert loaded.kind == fmt and loaded.settings == SETTINGS and loaded.name == "unet-w4"
    p_ref = predict_volume(reference.slice_model, image, reference.settings).probabilities
    p_exp = predict_volume(loaded.slice_model, image, loaded.settings).probabilities
    assert float(np.abs(p_ref - p_exp).max()) <= 1e-4
    np.testing.assert_array_equal(p_ref >= 0.5, p_exp >= 0.5)
    assert list(tmp_path.iterdir()) == [exported]  # one self-contained file


def test_evaluate_real_cases_with_reader_ceiling(checkpoint, shared_data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(checkpoint),
                "--data",
                str(shared_data / "real" / "prostate158"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["case"] for r in rows] == ["001", "002", "020"]
    for row in rows:
        assert row["site"] == "Prostate158"
        assert all(np.isfinite(float(row[k])) for k in ("dice", "iou", "hd95", "assd"))
    ceiling = [float(r["reader2_dice"]) for r in rows[:2]]
    assert all(0.8 < d < 1.0 for d in ceiling) and rows[2]["reader2_dice"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["dice"]["n"] == 3
    assert summary["overall"]["reader2_dice"]["n"] == 2
    assert "reader2 dice" in capsys.readouterr().out


def test_bad_model_file_is_a_one_line_error(tmp_path, capsys):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not onnx")
    assert main(["evaluate", str(bogus), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model.onnx: not an ONNX model (corrupt" in err and err.count("\n") == 1


def test_predict_rejects_an_output_without_volume_suffix(
    checkpoint, phantom_volume, tmp_path, capsys
):
    out = tmp_path / "mask.txt"
    assert main(["predict", str(checkpoint), str(phantom_volume), str(out)]) == 2
    assert "mask.txt: output must end in one of .nii.gz" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_plain_folder_predicts_images_and_skips_masks(checkpoint, tmp_path):
    image, mask = ball_case()
    source = tmp_path / "scans"
    write(source / "a.nii.gz", image)
    write(source / "a_segmentation.nii.gz", mask)
    write(source / "b" / "scan.mha", image)
    write(source / "b" / "scan_mask.mha", mask)
    write(source / "labelsTr" / "c.nii.gz", mask)
    out = tmp_path / "masks"
    assert main(["predict", str(checkpoint), str(source), str(out)]) == 0
    written = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "qc" not in p.name
    )
    assert written == ["a.nii.gz", "b/scan.mha"]


def test_evaluate_reports_an_empty_reference_mask(checkpoint, tmp_path, capsys):
    image, mask = ball_case()
    write(tmp_path / "d" / "S" / "Case00.nii.gz", image)
    write(tmp_path / "d" / "S" / "Case00_segmentation.nii.gz", mask * 0)
    code = main(
        ["evaluate", str(checkpoint), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e")]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "prokd evaluate: warning: " in err and "Case00_segmentation.nii.gz: empty mask" in err


def test_an_onnx_model_predicts_without_importing_torch_or_monai(
    checkpoint, phantom_volume, tmp_path
):
    """The cold-start path: `prokd predict model.onnx` never imports torch or MONAI, and its
    mask equals the one the checkpoint gives."""
    exported = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(exported)]) == 0
    out = tmp_path / "mask.nii.gz"
    script = (
        "import sys; from prokd.cli import main; "
        f"code = main(['predict', {str(exported)!r}, {str(phantom_volume)!r}, {str(out)!r}]); "
        "print(code, 'torch' in sys.modules, 'monai' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.stdout.split()[-3:] == ["0", "False", "False"], run.stderr
    reference = tmp_path / "reference.nii.gz"
    assert main(["predict", str(checkpoint), str(phantom_volume), str(reference)]) == 0
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(reference))),
    )


def everywhere(image: sitk.Image) -> np.ndarray:
    """A volume model that calls every voxel gland."""
    return np.ones(tuple(reversed(image.GetSize())), np.float32)


def test_evaluate_a_volume_model(tmp_path, capsys):
    """`prokd evaluate module:function` scores a volume model (as for `taps`): calling
    everything gland gives Dice 2|T| / (|T| + N) per case."""
    data = tiny_phantom(tmp_path, sites=1, cases_per_site=2, seed=1)
    out = tmp_path / "eval"
    spec = f"{__name__}:everywhere"
    argv = ["evaluate", spec, "--data", str(data), "--out", str(out), "--no-postprocess"]
    assert main(argv) == 0
    assert "(volume model)" in capsys.readouterr().out
    _, cases = find_cases(data)
    with open(out / "metrics.csv", newline="") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    for case in cases:
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.masks[0]))) > 0
        expected = 2 * truth.sum() / (truth.sum() + truth.size)
        assert float(rows[case.case_id]["dice"]) == pytest.approx(expected, rel=1e-6)


def test_an_export_records_its_localiser_and_is_refused_beside_another(tmp_path, capsys):
    import shutil

    from prokd.data.io import file_sha256
    from prokd.inference.bundled import bundled_path
    from prokd.inference.export import export_model
    from prokd.inference.trained import load_trained_model

    localiser = tmp_path / "fold-localiser.onnx"
    shutil.copyfile(bundled_path("prostate-localiser"), localiser)
    gland = PreprocessSettings(size=64, fov_mm=128.0, crop_centre="gland", localiser=str(localiser))
    for settings, name in ((SETTINGS, "image"), (gland, "gland")):
        payload = model_payload(build_model("unet-w4"), "unet-w4", settings)
        save_checkpoint(payload, tmp_path / name / "best.pt")
        export_model(load_trained_model(tmp_path / name), "onnx", tmp_path / f"{name}.onnx")
    import onnx

    def metadata(path):
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props["prokd"])

    assert "localiser_sha256" not in metadata(tmp_path / "image.onnx")  # no localiser placed it
    assert metadata(tmp_path / "gland.onnx")["localiser_sha256"] == file_sha256(localiser)
    assert load_model_file(tmp_path / "gland.onnx").settings.localiser == str(localiser)
    shutil.copyfile(bundled_path("prostate-t2"), localiser)  # another model in its place
    volume = tmp_path / "in.nii.gz"
    sitk.WriteImage(make_volume(np.zeros((4, 8, 8), np.float32)), str(volume))
    argv = ["predict", str(tmp_path / "gland.onnx"), str(volume), str(tmp_path / "out.nii.gz")]
    assert main(argv) == 2
    assert "is not the one it was made with" in capsys.readouterr().err


def _with_plan(tmp_path, name, **plan):
    """The bundled prostate-t2 with some of its plan (metadata) changed, as a new file."""
    import onnx

    from prokd.inference.bundled import bundled_path

    proto = onnx.load(str(bundled_path("prostate-t2")))
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(
        proto, {**props, "prokd": json.dumps({**json.loads(props["prokd"]), **plan})}
    )
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))
    return path


def test_a_model_file_carries_its_threshold_and_qc_limits(phantom_study, tmp_path):
    """The mask is cut at the file's threshold and judged at the file's QC limits."""
    from prokd.inference.pipeline import segment_image
    from prokd.inference.segment import with_crop_centre

    shipped = load_model_file("prostate-t2")
    assert shipped.threshold == 0.5 and shipped.qc_limits["mirror_dice"] == 0.8
    lenient = {k: 0.0 if k == "mirror_dice" else 1e6 for k in shipped.qc_limits}
    strict = {**lenient, "mirror_dice": 0.999}
    results = {}
    for name, plan in (
        ("lenient", {"qc_limits": lenient}),
        ("strict", {"qc_limits": strict}),
        ("high", {"threshold": 0.95, "qc_limits": lenient}),
    ):
        model = with_crop_centre(load_model_file(_with_plan(tmp_path, name, **plan)), "gland")
        results[name] = segment_image(model, phantom_study.image)
    assert results["lenient"].qc.reliable and not results["strict"].qc.reliable
    assert any("mirrored image" in r for r in results["strict"].qc.reasons)
    assert 0 < results["high"].qc.gland_ml < results["lenient"].qc.gland_ml
    np.testing.assert_array_equal(results["lenient"].probabilities, results["high"].probabilities)
