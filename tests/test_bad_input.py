"""Bad input on every command: one line naming the file or key, a non-zero exit, no
traceback, and no file left behind. Valid but unusual inputs work."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from prokd.cli import main
from prokd.data.preprocess import PreprocessSettings
from prokd.inference.export import export_model
from prokd.inference.trained import load_trained_model, model_payload
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import ball_case, write

SETTINGS = PreprocessSettings(size=32, fov_mm=32.0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint, its ONNX export, a good volume and a tiny labelled dataset."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        model_payload(build_model("unet-w4"), "unet-w4", SETTINGS), root / "run" / "best.pt"
    )
    onnx_file = export_model(load_trained_model(checkpoint), "onnx", root / "model.onnx")
    image, mask = ball_case()
    for case in ("Case00", "Case01"):
        write(root / "data" / "S" / f"{case}.nii.gz", image)
        write(root / "data" / "S" / f"{case}_segmentation.nii.gz", mask)
    return {
        "checkpoint": checkpoint,
        "onnx": onnx_file,
        "image": write(root / "good.nii.gz", image),
        "data": root / "data",
    }


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _dataset(w: Path, image: np.ndarray, mask: np.ndarray) -> Path:
    write(w / "ds" / "S" / "Case00.nii.gz", image)
    write(w / "ds" / "S" / "Case00_segmentation.nii.gz", mask)
    return w / "ds"


def _mhd_with_spacing(w: Path, spacing: str) -> Path:
    path = write(w / "vol.mhd", ball_case()[0])
    header = re.sub(r"ElementSpacing = .*", f"ElementSpacing = {spacing}", path.read_text())
    path.write_text(header)
    return path


def _config(w: Path, text: str) -> Path:
    (w / "c.yaml").write_text(text)
    return w / "c.yaml"


def _train(w: Path, config_text: str) -> list[str]:
    return ["train", str(_config(w, config_text)), "--out", str(w / "r")]


def _predict(model: Path, source: Path, w: Path, out: str = "out.nii.gz") -> list[str]:
    return ["predict", str(model), str(source), str(w / out)]


def _truncated(w: Path, a: dict[str, Path]) -> Path:
    raw = a["image"].read_bytes()
    (w / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    return w / "cut.nii.gz"


def _other_onnx(w: Path) -> Path:
    torch.onnx.export(
        torch.nn.Conv2d(1, 3, 3), (torch.zeros(1, 1, 8, 8),), str(w / "o.onnx"), dynamo=False
    )
    return w / "o.onnx"


def _foreign_state_dict(w: Path) -> Path:
    torch.save(build_model("unet-w4").state_dict(), w / "sd.pt")
    return w / "sd.pt"


def _unknown_network(w: Path) -> Path:
    payload = model_payload(build_model("unet-w4"), "unet-w4", SETTINGS)
    torch.save({**payload, "model": "resnet-9000"}, w / "unknown.pt")
    return w / "unknown.pt"


def _image(array: np.ndarray, w: Path, name: str = "in.nii.gz") -> Path:
    return write(w / name, array)


def _nonfinite(value: float) -> np.ndarray:
    image = ball_case()[0]
    image[2, 3, 3] = value
    return image


def _teacher_at_other_size(w: Path, a: dict[str, Path]) -> Path:
    other = PreprocessSettings(size=64, fov_mm=32.0)
    save_checkpoint(model_payload(build_model("unet-w4"), "unet-w4", other), w / "t" / "best.pt")
    return _config(
        w,
        f"data: {{root: '{a['data']}'}}\npreprocess: {{size: 32, fov_mm: 32.0}}\n"
        f"split: {{val_fraction: 0.0, test_fraction: 0.0}}\n"
        f"model: unet-w4\ndistill: {{teachers: ['{w / 't'}']}}\n",
    )


Case = Callable[[Path, dict[str, Path]], list[str]]

# id -> (argv builder, text the one error line must contain)
CASES: dict[str, tuple[Case, str]] = {
    # inspect
    "inspect missing folder": (lambda w, a: ["inspect", str(w / "nope")], "nope: data folder"),
    "inspect plain folder": (
        lambda w, a: ["inspect", str(_image(ball_case()[0], w).parent)],
        "no known dataset layout",
    ),
    "inspect mask-only folder": (
        lambda w, a: [
            "inspect",
            str(_image(ball_case()[1], w / "S", "Case0_segmentation.nii").parent.parent),
        ],
        "work: no cases found for layout 'six-site'",
    ),
    # predict: the volume
    "truncated archive": (
        lambda w, a: _predict(a["checkpoint"], _truncated(w, a), w),
        "cut.nii.gz: truncated or corrupt file",
    ),
    "zero-byte file": (
        lambda w, a: _predict(a["checkpoint"], _image_bytes(w, b""), w),
        "x.nii.gz: cannot read",
    ),
    "non-image file with a volume suffix": (
        lambda w, a: _predict(a["checkpoint"], _image_bytes(w, b"hello"), w),
        "x.nii.gz: cannot read",
    ),
    "directory named like a volume": (
        lambda w, a: _predict(a["checkpoint"], _mkdir(w / "dir.nii.gz"), w, "o"),
        "dir.nii.gz: no image volumes",
    ),
    "2D image": (
        lambda w, a: _predict(a["checkpoint"], _raw_image(w, np.zeros((16, 16), "f4")), w),
        "in.nii.gz: expected a 3D volume",
    ),
    "4D without the T2 channel": (
        lambda w, a: _predict(a["checkpoint"], _raw_image(w, np.zeros((2, 6, 8, 8), "f4")), w),
        "in.nii.gz: 4D volume with 2 channels",
    ),
    "NaN voxel": (
        lambda w, a: _predict(a["checkpoint"], _image(_nonfinite(np.nan), w), w),
        "in.nii.gz: contains 1 NaN/Inf",
    ),
    "Inf voxel": (
        lambda w, a: _predict(a["checkpoint"], _image(_nonfinite(np.inf), w), w),
        "in.nii.gz: contains 1 NaN/Inf",
    ),
    "zero spacing": (
        lambda w, a: _predict(a["checkpoint"], _mhd_with_spacing(w, "0 0.5 3"), w),
        "vol.mhd: voxel spacing must be positive",
    ),
    "negative spacing": (
        lambda w, a: _predict(a["checkpoint"], _mhd_with_spacing(w, "-0.5 0.5 3"), w),
        "vol.mhd: voxel spacing must be positive",
    ),
    "mask-only plain folder": (
        lambda w, a: _predict(
            a["checkpoint"], _image(ball_case()[1], w / "m", "c_segmentation.nii.gz").parent, w, "o"
        ),
        "m: no image volumes found",
    ),
    "output folder is a file": (
        lambda w, a: _predict(a["checkpoint"], a["image"], _touch(w / "blocker")),
        "blocker/out.nii.gz: cannot write",
    ),
    "output without a volume suffix": (
        lambda w, a: _predict(a["checkpoint"], a["image"], w, "out.txt"),
        "out.txt: output must end in",
    ),
    # predict: the model
    "corrupt checkpoint": (
        lambda w, a: _predict(_bytes(w / "c.pt", random.Random(0).randbytes(2000)), a["image"], w),
        "c.pt: not a prokd checkpoint",
    ),
    "foreign checkpoint (bare state_dict)": (
        lambda w, a: _predict(_foreign_state_dict(w), a["image"], w),
        "sd.pt: not a prokd checkpoint",
    ),
    "checkpoint of an unknown network": (
        lambda w, a: _predict(_unknown_network(w), a["image"], w),
        "unknown.pt: unknown model 'resnet-9000'",
    ),
    "ONNX file of another model": (
        lambda w, a: _predict(_other_onnx(w), a["image"], w),
        "o.onnx: ONNX model without prokd metadata",
    ),
    "corrupt ONNX file": (
        lambda w, a: _predict(_bytes(w / "c.onnx", os.urandom(600)), a["image"], w),
        "c.onnx: not an ONNX model",
    ),
    "missing model file": (
        lambda w, a: _predict(w / "none.onnx", a["image"], w),
        "none.onnx: model file not found",
    ),
    # evaluate
    "evaluate missing data": (
        lambda w, a: ["evaluate", str(a["checkpoint"]), "--data", str(w / "none"), "--out", str(w)],
        "none: data folder not found",
    ),
    "evaluate labels outside the set": (
        lambda w, a: [
            "evaluate",
            str(a["checkpoint"]),
            "--data",
            str(_dataset(w, ball_case()[0], ball_case()[1] * 7)),
            "--out",
            str(w / "ev"),
        ],
        "Case00_segmentation.nii.gz: mask labels [7]",
    ),
    "evaluate mask of another shape": (
        lambda w, a: [
            "evaluate",
            str(a["checkpoint"]),
            "--data",
            str(_dataset(w, ball_case()[0], ball_case(shape=(5, 16, 16))[1])),
            "--out",
            str(w / "ev"),
        ],
        "Case00_segmentation.nii.gz: mask does not match",
    ),
    # train
    "bad YAML syntax": (
        lambda w, a: _train(w, "train: [1,\n"),
        "c.yaml: invalid YAML (line 2)",
    ),
    "wrong type": (
        lambda w, a: _train(w, "train:\n  epochs: ten\n"),
        "c.yaml: train.epochs: expected an integer",
    ),
    "unknown key": (
        lambda w, a: _train(w, "train:\n  epoch: 3\n"),
        "c.yaml: train.epoch: unknown key",
    ),
    "unknown model name": (
        lambda w, a: _train(w, "model: resnet\n"),
        "c.yaml: model: unknown model",
    ),
    "config is not a mapping": (
        lambda w, a: _train(w, "- 1\n"),
        "c.yaml: config: expected a mapping",
    ),
    "missing config file": (
        lambda w, a: ["train", str(w / "none.yaml"), "--out", str(w / "r")],
        "none.yaml: config file not found",
    ),
    "no data folder": (
        lambda w, a: _train(w, "model: unet-w4\n"),
        "data.root is not set",
    ),
    "teacher trained with other preprocessing": (
        lambda w, a: ["train", str(_teacher_at_other_size(w, a)), "--out", str(w / "r")],
        "teacher preprocessing differs from the config's (size: teacher 64, student 32)",
    ),
    "resume without a checkpoint": (
        lambda w, a: [
            "train",
            str(_config(w, f"data: {{root: '{a['data']}'}}\n")),
            "--out",
            str(w / "r"),
            "--resume",
        ],
        "r: nothing to resume",
    ),
    # experiment
    "unknown weighting strategy": (
        lambda w, a: [
            "experiment",
            str(_config(w, "experiment: {strategies: [uniform, magic]}\n")),
            "--data",
            str(a["data"]),
            "--out",
            str(w / "e"),
        ],
        "c.yaml: experiment.strategies: unknown teacher weighting",
    ),
    "experiment without a test case": (
        lambda w, a: [
            "experiment",
            str(_config(w, "split: {test_fraction: 0.0}\n")),
            "--data",
            str(a["data"]),
            "--out",
            str(w / "e"),
        ],
        "split.test_fraction gives no test case",
    ),
    # export
    "export a corrupt checkpoint": (
        lambda w, a: [
            "export",
            str(_bytes(w / "c.pt", b"\x00" * 50)),
            "--format",
            "onnx",
            "--out",
            str(w / "m.onnx"),
        ],
        "c.pt: not a prokd checkpoint",
    ),
    "export into a file's place": (
        lambda w, a: [
            "export",
            str(a["checkpoint"]),
            "--format",
            "onnx",
            "--out",
            str(_touch(w / "blocker") / "m.onnx"),
        ],
        "blocker/m.onnx: cannot write",
    ),
    "export over an existing file": (
        lambda w, a: [
            "export",
            str(a["checkpoint"]),
            "--format",
            "torchscript",
            "--out",
            str(_touch(w / "m.ts")),
        ],
        "m.ts: output exists",
    ),
    # bench
    "bench an unknown name": (
        lambda w, a: ["bench", "resnet", "--out", str(w / "b")],
        "unknown model 'resnet'",
    ),
    "bench a corrupt ONNX file": (
        lambda w, a: ["bench", str(_bytes(w / "c.onnx", b"xx")), "--out", str(w / "b")],
        "c.onnx: invalid ONNX model",
    ),
    # report
    "report of a folder without runs": (
        lambda w, a: ["report", str(_mkdir(w / "empty"))],
        "empty: no results.json or log.csv",
    ),
    "report with a corrupt results.json": (
        lambda w, a: ["report", str(_bytes(w / "x" / "results.json", b"{bad").parent)],
        "results.json: unreadable run file",
    ),
}


def _bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _image_bytes(w: Path, data: bytes) -> Path:
    return _bytes(w / "x.nii.gz", data)


def _raw_image(w: Path, array: np.ndarray) -> Path:
    """A 2D or 4D NIfTI file (any dimension, no vector pixels)."""
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(w / "in.nii.gz"))
    return w / "in.nii.gz"


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_it(name, assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROKD_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    build, expected = CASES[name]
    argv = build(work, assets)
    before = _files(work)
    code = main(argv)
    # a progress bar cleared with carriage returns is not an error line
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines()]
    err = [line for line in err if line.strip() and "%|" not in line]
    assert code != 0
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"prokd {argv[0]}: error: ") and expected in err[0], err[0]
    assert _files(work) == before, "partial output left behind"


def test_inspect_names_a_truncated_case_and_fails(assets, tmp_path, capsys):
    raw = assets["image"].read_bytes()
    data = tmp_path / "ds"
    write(data / "S" / "Case00_segmentation.nii.gz", ball_case()[1])
    (data / "S" / "Case00.nii.gz").write_bytes(raw[: len(raw) // 2])
    assert main(["inspect", str(data)]) == 1
    assert "Case00.nii.gz: truncated or corrupt file" in capsys.readouterr().out


def test_full_disk_leaves_nothing(assets, tmp_path, capsys, monkeypatch):
    """A write that fails half-way (disk full) leaves neither the output nor a temp file."""

    def full_disk(image, path, *args, **kwargs):
        Path(path).write_bytes(b"\x00" * 100)  # half a file, then the failure
        raise RuntimeError("ITK ERROR: NiftiImageIO: No space left on device")

    monkeypatch.setattr("prokd.data.io.sitk.WriteImage", full_disk)
    out = tmp_path / "out"
    code = main(["predict", str(assets["checkpoint"]), str(assets["image"]), str(out / "m.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "m.nii.gz: cannot write volume" in err[0] and "No space left" in err[0]
    assert _files(out) == set()


def _oblique() -> tuple[float, ...]:
    angle = 0.3
    c, s = np.cos(angle), np.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "dtype, folder, direction",
    [
        ("int16", "plain", (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        ("uint16", "with spaces in it", (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        ("float32", "oblique", _oblique()),
    ],
)
def test_valid_unusual_inputs_work(dtype, folder, direction, assets, tmp_path, capsys):
    image = ball_case()[0].astype(dtype)
    source = write(tmp_path / folder / "scan 1.nii.gz", image, direction=direction)
    out = tmp_path / folder / "mask out.nii.gz"
    assert main(["predict", str(assets["checkpoint"]), str(source), str(out)]) == 0
    mask, reference = sitk.ReadImage(str(out)), sitk.ReadImage(str(source))
    assert mask.GetSize() == reference.GetSize()
    assert np.allclose(mask.GetDirection(), reference.GetDirection())
    assert np.allclose(mask.GetOrigin(), reference.GetOrigin())


def test_values_near_the_float_limits_are_normalised_without_overflow(assets, tmp_path):
    from prokd.data.preprocess import normalise_intensity

    image, _ = ball_case()
    huge = (image / image.max() * 3.0e38).astype(np.float32)
    normalised = normalise_intensity(huge, SETTINGS)
    assert np.isfinite(normalised).all()
    assert np.allclose(normalised, normalise_intensity(image, SETTINGS), atol=1e-4)
