"""A site teacher exported to ONNX with its feature taps teaches as its checkpoint does."""

import pytest
import torch

from prokd.cli import main
from prokd.distill.ensemble import TeacherEnsemble
from prokd.errors import DataError
from prokd.inference.teacher_files import OnnxNetwork, load_teacher
from prokd.inference.trained import model_payload
from prokd.inference.volume_models import is_volume_model
from prokd.losses.composite import CompositeLoss
from prokd.losses.distillation import FeatureDistillation
from prokd.models import build_model, get_spec
from prokd.models.taps import FeatureTaps, tap_shapes
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import SLICE_SETTINGS


@pytest.fixture(scope="module")
def site_teacher(tmp_path_factory):
    """A unet-w8 checkpoint with trained-looking (random, not default) batch-norm statistics,
    and its ONNX export with taps, made by ``prokd export --with-taps``."""
    root = tmp_path_factory.mktemp("site")
    torch.manual_seed(0)
    network = build_model("unet-w8")
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(4, 1, 32, 32))
    checkpoint = save_checkpoint(
        model_payload(network.eval(), "unet-w8", SLICE_SETTINGS), root / "siteA" / "best.pt"
    )
    onnx_file = root / "siteA.onnx"
    argv = ["export", str(checkpoint), "--format", "onnx", "--with-taps", "--out", str(onnx_file)]
    assert main(argv) == 0
    return checkpoint, onnx_file


def test_onnx_site_teacher_gives_the_checkpoints_kl_and_feature_targets(site_teacher):
    checkpoint, onnx_file = site_teacher
    assert not is_volume_model(str(onnx_file))  # its features teach: not a volume teacher
    from_checkpoint, from_file = load_teacher(checkpoint), load_teacher(onnx_file)
    assert isinstance(from_file.network, OnnxNetwork)
    assert from_file.name == "unet-w8" and from_file.settings == from_checkpoint.settings
    images = torch.randn(3, 1, 32, 32)
    ensembles = [TeacherEnsemble([t]) for t in (from_checkpoint, from_file)]
    (logits_a, features_a), (logits_b, features_b) = (e(images) for e in ensembles)
    assert set(features_b[0]) == set(get_spec("unet-w8").taps) == set(features_a[0])
    torch.testing.assert_close(logits_b[0], logits_a[0], atol=1e-4, rtol=1e-4)
    for tap in features_a[0]:
        torch.testing.assert_close(features_b[0][tap], features_a[0][tap], atol=1e-4, rtol=1e-4)
    assert ensembles[1].feature_channels(32) == ensembles[0].feature_channels(32)
    # The same student then gets the same KL and feature loss terms from either teacher.
    student = build_model("unet-w4")
    taps = get_spec("unet-w4").taps
    channels = {t: s[0] for t, s in tap_shapes(student, taps, 32, 32).items()}
    torch.manual_seed(1)
    adapters = FeatureDistillation(channels, ensembles[0].feature_channels(32))
    loss = CompositeLoss(feature_loss=adapters)
    with FeatureTaps(student, taps) as tapped:
        student_logits = student(images)
    parts = [
        loss.teacher_parts(student_logits, tapped.features, z, f)
        for z, f in ((logits_a, features_a), (logits_b, features_b))
    ]
    assert set(parts[0]) == {"kl", "feature"}
    for term in parts[0]:
        torch.testing.assert_close(parts[1][term], parts[0][term], atol=1e-5, rtol=1e-4)


def test_an_onnx_teacher_without_taps_is_refused_as_a_feature_teacher(site_teacher, tmp_path):
    checkpoint, _ = site_teacher
    plain = tmp_path / "plain.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(plain)]) == 0
    assert is_volume_model(str(plain))  # KL targets only, as before
    with pytest.raises(DataError, match="without feature taps"):
        load_teacher(plain)
    with pytest.raises(DataError, match="teacher file not found"):
        load_teacher(tmp_path / "missing.onnx")


def test_taps_export_to_onnx_only(site_teacher, tmp_path, capsys):
    checkpoint, _ = site_teacher
    out = tmp_path / "t.ts"
    argv = ["export", str(checkpoint), "--format", "torchscript", "--with-taps", "--out", str(out)]
    assert main(argv) == 2
    assert "--with-taps: feature taps are exported to ONNX only" in capsys.readouterr().err
    assert not out.exists()
