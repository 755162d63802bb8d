"""Shared model test: every registered network goes through the same checks."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from prokd.cli import main
from prokd.errors import ConfigError
from prokd.models import MODELS, build_model, get_spec
from prokd.models.profile import count_flops, count_parameters
from prokd.models.taps import FeatureTaps, tap_shapes

HEIGHT, WIDTH = 96, 112  # non-square, not a power of two
NAMES = sorted(MODELS)


def _model(name, seed=0):
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, out_channels=2)


@pytest.mark.parametrize("name", NAMES)
class TestEveryNetwork:
    def test_forward_backward_on_odd_size(self, name):
        assert (
            HEIGHT % get_spec(name).size_multiple == 0 and WIDTH % get_spec(name).size_multiple == 0
        )
        model = _model(name).train()
        x = torch.randn(2, 1, HEIGHT, WIDTH)
        out = model(x)
        assert out.shape == (2, 2, HEIGHT, WIDTH)
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def test_eval_mode_is_deterministic(self, name):
        model = _model(name).eval()
        x = torch.randn(1, 1, HEIGHT, WIDTH)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)

    def test_torchscript_trace_matches_eager(self, name):
        model = _model(name).eval()
        x = torch.randn(1, 1, HEIGHT, WIDTH)
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
            torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-4)

    def test_onnx_export_matches_torch(self, name, tmp_path):
        model = _model(name).eval()
        x = torch.randn(2, 1, HEIGHT, WIDTH)
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(
            model,
            (x[:1],),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (onnx_out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-4, rtol=0)

    def test_feature_taps_have_declared_shapes(self, name, capsys):
        spec = get_spec(name)
        model = _model(name).eval()
        shapes = tap_shapes(model, spec.taps, HEIGHT, WIDTH)
        assert set(shapes) == {"bottleneck", "decoder"}
        with FeatureTaps(model, spec.taps) as taps, torch.no_grad():
            model(torch.randn(1, 1, HEIGHT, WIDTH))
        for tap, shape in shapes.items():
            assert tuple(taps.features[tap].shape[1:]) == shape
        assert shapes["bottleneck"][1] < shapes["decoder"][1] <= HEIGHT // 2
        # prokd models prints the same shapes (at a square size).
        assert main(["models", name, "--size", "64"]) == 0
        printed = capsys.readouterr().out
        for tap, shape in tap_shapes(model, spec.taps, 64, 64).items():
            assert f"{tap} {'x'.join(map(str, shape))}" in printed


def test_taps_removed_after_context():
    model = _model("unet-w4").eval()
    with FeatureTaps(model, get_spec("unet-w4").taps) as taps:
        model(torch.zeros(1, 1, 32, 32))
    taps.features.clear()
    model(torch.zeros(1, 1, 32, 32))
    assert taps.features == {}


def test_bad_tap_path():
    model = _model("unet-w4")
    with pytest.raises(ValueError, match="no submodule 'model.9'"):
        with FeatureTaps(model, {"x": "model.9"}):
            pass


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet")


def test_students_are_small_and_teachers_large():
    params = {name: count_parameters(_model(name)) for name in NAMES}
    assert 300_000 < params["enet"] < 400_000
    assert 6_000_000 < params["unet-large"] < 7_000_000
    for name, spec in MODELS.items():
        if spec.role == "student":
            assert params[name] < 1_000_000
    assert params["unet-w4"] < params["unet-w8"] < params["unet-w16"]


def test_flops_follow_a_direct_count_for_a_single_conv():
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert count_flops(conv, 10, 12) == 2 * 4 * 9 * 10 * 12  # one multiply-add = 2 FLOPs
    assert count_flops(_model("unet-w8"), 128, 128) * 4 == pytest.approx(
        count_flops(_model("unet-w8"), 256, 256), rel=0.01
    )
