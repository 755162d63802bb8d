"""Volume models: a tiny ONNX model made here, callables, TAPS against `taps segment`, and
slice model files run as prokd predicts."""

from dataclasses import asdict

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from scipy import ndimage

from prokd.cli import main
from prokd.data.io import read_volume
from prokd.data.preprocess import PreprocessSettings
from prokd.errors import ConfigError, DataError
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import predict_volume
from prokd.inference.trained import model_payload
from prokd.inference.volume_models import (
    TAPS_THRESHOLD,
    VolumePreprocessing,
    is_volume_model,
    load_volume_model,
)
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import (
    FLIPPED,
    export_scaling_model,
    intensities,
    make_volume,
    volume_model_file,
)


def test_onnx_volume_model_maps_voxel_to_voxel_through_reorientation(tmp_path):
    array = intensities()
    image = make_volume(array, spacing=(0.5, 0.5, 3.0), direction=FLIPPED)
    teacher = load_volume_model(str(volume_model_file(tmp_path)))
    probabilities = teacher.probabilities(image)
    expected = 1 / (1 + np.exp(-(0.02 * array - 1.0)))
    assert probabilities.shape == array.shape
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_softmax_and_sigmoid_activations_with_normalisation(tmp_path):
    """One logit channel through a sigmoid; two through a softmax whose channel 1 is the
    gland: p = sigmoid(z1 - z0). Both after z-scoring the volume."""
    array = intensities(seed=1)
    image = make_volume(array, spacing=(0.5, 0.5, 3.0))
    z = (array - array.mean()) / array.std()
    sigmoid = load_volume_model(str(volume_model_file(tmp_path, 1.0, 0.0, normalise="zscore")))
    np.testing.assert_allclose(sigmoid.probabilities(image), 1 / (1 + np.exp(-z)), atol=1e-4)
    two = volume_model_file(
        tmp_path, 1.0, 0.0, channels=2, normalise="zscore", activation="softmax"
    )
    softmax = load_volume_model(str(two))
    # channel 0's logit is z, channel 1's is 2 z: the gland's probability is sigmoid(z)
    np.testing.assert_allclose(softmax.probabilities(image), 1 / (1 + np.exp(-z)), atol=1e-4)
    assert not np.allclose(1 / (1 + np.exp(-2 * z)), 1 / (1 + np.exp(-z)), atol=1e-2)


def half(image: sitk.Image) -> np.ndarray:
    """A callable teacher: 0.5 everywhere on the image's grid."""
    return np.full(tuple(reversed(image.GetSize())), 0.5, np.float32)


def wrong_shape(image: sitk.Image) -> np.ndarray:
    """A callable teacher that returns the wrong shape."""
    return np.zeros((1, 2, 3), np.float32)


def test_callable_model_and_its_shape_check():
    image = make_volume(intensities())
    teacher = load_volume_model(f"{__name__}:half")
    assert np.all(teacher.probabilities(image) == 0.5)
    with pytest.raises(ConfigError, match="wrong_shape: returned probabilities of shape"):
        load_volume_model(f"{__name__}:wrong_shape").probabilities(image)


@pytest.mark.parametrize(
    ("spec", "values", "message"),
    [
        ("missing.yaml", None, "missing.yaml: volume model file not found"),
        ("t.yaml", {"spacing_mm": [1, 1, 1]}, "t.yaml: onnx: missing"),
        ("t.yaml", {"onnx": "scale.onnx", "patch": 3}, "t.yaml: patch: unknown key"),
        ("t.yaml", {"onnx": "scale.onnx", "roi_size": [8, 8]}, "roi_size: expected a list of 3"),
        ("t.yaml", {"onnx": "scale.onnx", "normalise": "minmax"}, "normalise: must be one of"),
        ("t.yaml", {"onnx": "nope.onnx"}, "nope.onnx: ONNX model file not found"),
        ("no_such_module:f", None, "cannot import module 'no_such_module'"),
        (f"{__name__}:nothing", None, "has no function 'nothing'"),
    ],
)
def test_bad_volume_models_are_refused(tmp_path, monkeypatch, spec, values, message):
    monkeypatch.chdir(tmp_path)
    export_scaling_model(tmp_path / "scale.onnx", 1.0, 0.0)
    if values is not None:
        (tmp_path / spec).write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=message):
        load_volume_model(spec)


def test_a_missing_model_file_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="model.pt"):
        load_volume_model("model.pt")


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
    teacher = load_volume_model("taps")
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
    image = make_volume(intensities(), spacing=(0.5, 0.5, 3.0), direction=FLIPPED)
    expected = predict_volume(
        load_model_file(checkpoint).slice_model, image, settings
    ).probabilities
    for teacher_spec in (str(exported), str(spec)):
        assert is_volume_model(teacher_spec)
        teacher = load_volume_model(teacher_spec)
        np.testing.assert_allclose(teacher.probabilities(image), expected, atol=1e-4)
    spec.write_text(yaml.safe_dump({"slice_onnx": "bare.onnx"}))
    with pytest.raises(ConfigError, match="bare.yaml: preprocess: missing"):
        load_volume_model(str(spec))
    assert not is_volume_model(str(checkpoint))  # a checkpoint teaches with its features


def test_slice_models_sharing_preprocessing_preprocess_a_volume_once(monkeypatch):
    """Two slice models of one evaluation: one preprocessing per volume, the probabilities
    of an unshared model, and each model's seconds counting that preprocessing."""
    import prokd.inference.volume_models as volume_models

    settings = PreprocessSettings(size=32, fov_mm=16.0)
    calls = []
    original = volume_models.place

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(volume_models, "place", counted)
    torch.manual_seed(0)
    networks = [build_model("unet-w4").eval() for _ in range(2)]
    shared = volume_models.SharedSlices()
    models = [
        volume_models.SliceVolumeModel(f"m{k}", n, settings, "", "checkpoint", shared)
        for k, n in enumerate(networks)
    ]
    image = make_volume(intensities(), spacing=(0.5, 0.5, 3.0), direction=FLIPPED)
    outputs = [m.probabilities(image) for m in models]
    assert len(calls) == 1
    preprocess_seconds = shared.slices(image, settings)[1]  # the stored cost, not recomputed
    assert len(calls) == 1 and preprocess_seconds > 0
    assert all(m.last_seconds > preprocess_seconds for m in models)  # both count it
    alone = volume_models.SliceVolumeModel("alone", networks[1], settings, "", "checkpoint")
    np.testing.assert_array_equal(alone.probabilities(image), outputs[1])
    assert len(calls) == 2
    np.testing.assert_allclose(
        outputs[0], predict_volume(networks[0], image, settings).probabilities
    )


def test_mirror_averaging_is_the_mean_of_both_passes():
    """A network that is not left-right symmetric: averaged probabilities are the mean of
    the plain pass and the mirrored pass mirrored back, and differ from the plain pass."""
    import prokd.inference.volume_models as volume_models

    settings = PreprocessSettings(size=32, fov_mm=16.0)
    torch.manual_seed(1)
    network = build_model("unet-w4").eval()
    image = make_volume(intensities(), spacing=(0.5, 0.5, 3.0))
    both = predict_volume(network, image, settings, mirrored=True)
    averaged = volume_models.SliceVolumeModel(
        "tta", network, settings, "", "checkpoint", mirror_average=True
    ).probabilities(image)
    np.testing.assert_allclose(averaged, 0.5 * (both.probabilities + both.mirrored), atol=1e-6)
    assert not np.allclose(averaged, both.probabilities, atol=1e-4)
