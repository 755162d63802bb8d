"""3D volume teachers: a tiny ONNX model made here, callables, TAPS against `taps segment`,
resampling onto the slice grid, and the per-volume cache."""

from dataclasses import asdict

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from scipy import ndimage

from prokd.cli import main
from prokd.data.io import read_volume
from prokd.data.layouts import Case
from prokd.data.preprocess import PreprocessSettings, target_grid
from prokd.distill.volume_teachers import (
    TAPS_THRESHOLD,
    VolumePreprocessing,
    is_volume_teacher,
    load_volume_teacher,
    slice_grid_probabilities,
    to_slice_grid,
)
from prokd.errors import ConfigError
from prokd.inference.model_files import load_model_file
from prokd.inference.predict import predict_volume
from prokd.inference.trained import model_payload
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import make_volume, write

FLIPPED = (-1, 0, 0, 0, 1, 0, 0, 0, 1)  # not RAS: the teacher must reorient and map back


def _export_scaling_model(path, weight: float, bias: float):
    """A 1x1x1 Conv3d (logit = weight * intensity + bias) exported to ONNX."""
    model = torch.nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 8, 8, 4),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        dynamo=False,
    )
    return path


def _teacher_file(tmp_path, weight=0.02, bias=-1.0, **preprocessing):
    model = _export_scaling_model(tmp_path / "scale.onnx", weight, bias)
    values = {
        "onnx": model.name,
        "spacing_mm": [0.5, 0.5, 3.0],
        "normalise": "none",
        "roi_size": [16, 16, 4],
        "blend": "constant",
        **preprocessing,
    }
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _intensities(shape=(5, 12, 10), seed=0):
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def test_onnx_volume_teacher_maps_voxel_to_voxel_through_reorientation(tmp_path):
    array = _intensities()
    image = make_volume(array, spacing=(0.5, 0.5, 3.0), direction=FLIPPED)
    teacher = load_volume_teacher(str(_teacher_file(tmp_path)))
    probabilities = teacher.probabilities(image)
    expected = 1 / (1 + np.exp(-(0.02 * array - 1.0)))
    assert probabilities.shape == array.shape
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_softmax_activation_and_normalisation(tmp_path):
    array = _intensities(seed=1)
    image = make_volume(array, spacing=(0.5, 0.5, 3.0))
    teacher = load_volume_teacher(str(_teacher_file(tmp_path, 1.0, 0.0, normalise="zscore")))
    sigmoid = teacher.probabilities(image)
    z = (array - array.mean()) / array.std()
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-z)), atol=1e-4)


def half(image: sitk.Image) -> np.ndarray:
    """A callable teacher: 0.5 everywhere on the image's grid."""
    return np.full(tuple(reversed(image.GetSize())), 0.5, np.float32)


def wrong_shape(image: sitk.Image) -> np.ndarray:
    """A callable teacher that returns the wrong shape."""
    return np.zeros((1, 2, 3), np.float32)


def test_callable_teacher_and_its_shape_check():
    image = make_volume(_intensities())
    teacher = load_volume_teacher(f"{__name__}:half")
    assert np.all(teacher.probabilities(image) == 0.5)
    with pytest.raises(ConfigError, match="wrong_shape: returned probabilities of shape"):
        load_volume_teacher(f"{__name__}:wrong_shape").probabilities(image)


@pytest.mark.parametrize(
    ("spec", "values", "message"),
    [
        ("missing.yaml", None, "missing.yaml: volume teacher file not found"),
        ("t.yaml", {"spacing_mm": [1, 1, 1]}, "t.yaml: onnx: missing"),
        ("t.yaml", {"onnx": "scale.onnx", "patch": 3}, "t.yaml: patch: unknown key"),
        ("t.yaml", {"onnx": "scale.onnx", "roi_size": [8, 8]}, "roi_size: expected a list of 3"),
        ("t.yaml", {"onnx": "scale.onnx", "normalise": "minmax"}, "normalise: must be one of"),
        ("t.yaml", {"onnx": "nope.onnx"}, "nope.onnx: ONNX model file not found"),
        ("no_such_module:f", None, "cannot import module 'no_such_module'"),
        (f"{__name__}:nothing", None, "has no function 'nothing'"),
        ("model.pt", None, "model.pt: not a volume teacher"),
    ],
)
def test_bad_volume_teachers_are_refused(tmp_path, monkeypatch, spec, values, message):
    monkeypatch.chdir(tmp_path)
    _export_scaling_model(tmp_path / "scale.onnx", 1.0, 0.0)
    if values is not None:
        (tmp_path / spec).write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=message):
        load_volume_teacher(spec)


def test_resampling_onto_the_slice_grid_matches_a_direct_computation():
    """Linear interpolation reproduces a field linear in physical space exactly: the
    resampled probabilities equal the field evaluated at the slice grid's voxel centres."""
    shape = (6, 40, 36)
    image = make_volume(
        np.zeros(shape, np.float32), spacing=(0.7, 0.6, 3.0), origin=(5, -3, 2), direction=FLIPPED
    )

    def field(point):
        return 0.5 + 0.004 * point[0] - 0.003 * point[1] + 0.01 * point[2]

    index = np.indices(shape).reshape(3, -1).T  # (z, y, x)
    native = np.array(
        [field(image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))) for z, y, x in index]
    ).reshape(shape)
    settings = PreprocessSettings(size=16, fov_mm=16.0)
    on_grid = to_slice_grid(native, image, settings)
    grid = target_grid(image, settings)
    reference = make_volume(
        np.zeros(tuple(reversed(grid.size)), np.float32), grid.spacing, grid.origin, grid.direction
    )
    assert on_grid.shape == (6, 16, 16)
    for z, y, x in [(0, 0, 0), (2, 7, 9), (5, 15, 15), (3, 8, 1)]:
        point = reference.TransformIndexToPhysicalPoint((x, y, z))
        assert on_grid[z, y, x] == pytest.approx(field(point), abs=1e-4)


def test_cache_is_keyed_by_the_model_file_the_volume_and_the_grid(tmp_path):
    settings = PreprocessSettings(size=16, fov_mm=8.0)
    volume = write(tmp_path / "a" / "t2.nii.gz", _intensities(), spacing=(0.5, 0.5, 3.0))
    case = Case("a", "site", volume, ())
    spec = str(_teacher_file(tmp_path))
    cache = tmp_path / "cache"
    first = slice_grid_probabilities(load_volume_teacher(spec), case, settings, cache)
    assert first.shape == (5, 16, 16) and len(list(cache.rglob("*.npy"))) == 1
    again = slice_grid_probabilities(load_volume_teacher(spec), case, settings, cache)
    np.testing.assert_allclose(again, first, atol=1e-3)  # read back (float16)
    assert len(list(cache.rglob("*.npy"))) == 1
    robust = PreprocessSettings(size=16, fov_mm=8.0, clip_percentiles=(1, 99), normalise="robust")
    slice_grid_probabilities(load_volume_teacher(spec), case, robust, cache)
    assert len(list(cache.rglob("*.npy"))) == 1  # same grid, other intensity settings
    _export_scaling_model(tmp_path / "scale.onnx", 0.05, -2.0)  # same path, new weights
    changed = slice_grid_probabilities(load_volume_teacher(spec), case, settings, cache)
    assert len(list(cache.rglob("*.npy"))) == 2
    assert np.abs(changed - first).max() > 0.05
    write(volume, _intensities(seed=3), spacing=(0.5, 0.5, 3.0))  # same path, new volume
    slice_grid_probabilities(load_volume_teacher(spec), case, settings, cache)
    assert len(list(cache.rglob("*.npy"))) == 3
    slice_grid_probabilities(load_volume_teacher(spec), case, PreprocessSettings(8, 8.0), cache)
    assert len(list(cache.rglob("*.npy"))) == 4  # another grid
    body = PreprocessSettings(size=16, fov_mm=8.0, crop_centre="body")
    slice_grid_probabilities(load_volume_teacher(spec), case, body, cache)
    assert len(list(cache.rglob("*.npy"))) == 5  # another grid placement


def test_taps_preset_matches_taps_segment(tmp_path, shared_data):
    """TAPS through prokd's adapter, thresholded and reduced to its largest component as
    `taps segment` does, equals the mask `taps segment` writes (a real Prostate158 volume,
    cropped in-plane to keep the test fast)."""
    cli = pytest.importorskip("taps.cli", reason="lavlab-taps is installed by `make test`")
    image = read_volume(shared_data / "real/prostate158/001/t2.nii.gz")
    size = image.GetSize()
    cropped = sitk.RegionOfInterest(image, (150, 150, size[2]), (41, 41, 0))
    source = tmp_path / "t2.nii.gz"
    sitk.WriteImage(cropped, str(source))
    reference = tmp_path / "taps.nii.gz"
    argv = ["segment", str(source), str(reference), "--device", "cpu", "--exact"]
    assert cli.main(argv) == 0
    teacher = load_volume_teacher("taps")
    assert teacher.name == "taps" and isinstance(teacher.preprocessing, VolumePreprocessing)
    mask = teacher.probabilities(read_volume(source)) > TAPS_THRESHOLD
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count > 1:
        mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    expected = sitk.GetArrayFromImage(read_volume(reference)) > 0
    assert expected.sum() > 1000  # the gland is in the crop
    dice = 2 * (mask & expected).sum() / (mask.sum() + expected.sum())
    assert dice >= 0.99


def test_slice_model_files_teach_as_prokd_predicts(tmp_path):
    """prokd's own ONNX export, and a bare ONNX file with declared preprocessing, give the
    probabilities `prokd predict` computes with the checkpoint."""
    torch.manual_seed(0)
    settings = PreprocessSettings(size=32, fov_mm=16.0)
    network = build_model("unet-w4").eval()
    checkpoint = save_checkpoint(model_payload(network, "unet-w4", settings), tmp_path / "best.pt")
    exported = tmp_path / "student.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(exported)]) == 0
    bare = tmp_path / "bare.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        network,
        torch.zeros(1, 1, 32, 32),
        str(bare),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        dynamo=False,
    )
    spec = tmp_path / "bare.yaml"
    spec.write_text(yaml.safe_dump({"slice_onnx": "bare.onnx", "preprocess": asdict(settings)}))
    image = make_volume(_intensities(), spacing=(0.5, 0.5, 3.0), direction=FLIPPED)
    expected = predict_volume(load_model_file(checkpoint).slice_model, image, settings)
    for teacher_spec in (str(exported), str(spec)):
        assert is_volume_teacher(teacher_spec)
        teacher = load_volume_teacher(teacher_spec)
        np.testing.assert_allclose(teacher.probabilities(image), expected, atol=1e-4)
    spec.write_text(yaml.safe_dump({"slice_onnx": "bare.onnx"}))
    with pytest.raises(ConfigError, match="bare.yaml: preprocess: missing"):
        load_volume_teacher(str(spec))
    assert not is_volume_teacher(str(checkpoint))  # a checkpoint teaches with its features
