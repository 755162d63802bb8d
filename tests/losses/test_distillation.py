import numpy as np
import pytest
import torch

from prokd.distill.ensemble import logits_from_probabilities
from prokd.losses.distillation import (
    FeatureDistillation,
    expand_teacher_weights,
    kl_distillation,
    soft_targets,
)


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _kl_reference(student, teacher, temperature, mask=None):
    p = _softmax(teacher / temperature)
    q = _softmax(student / temperature)
    per_pixel = (p * (np.log(p) - np.log(q))).sum(1)
    if mask is not None:
        return per_pixel[mask].mean() * temperature**2
    return per_pixel.mean() * temperature**2


def _targets(teacher, temperature):
    return soft_targets(
        [teacher],
        expand_teacher_weights(None, 1, *teacher.shape[:1], *teacher.shape[2:]),
        temperature,
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    mask = rng.random((2, 4, 5)) < 0.5
    st, tt = torch.from_numpy(s), torch.from_numpy(t)
    assert float(kl_distillation(st, _targets(tt, temperature), temperature)) == pytest.approx(
        _kl_reference(s, t, temperature), rel=1e-9
    )
    masked = kl_distillation(st, _targets(tt, temperature), temperature, torch.from_numpy(mask))
    assert float(masked) == pytest.approx(_kl_reference(s, t, temperature, mask), rel=1e-9)


def test_kl_is_zero_for_equal_logits():
    z = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    assert float(kl_distillation(z, _targets(z, 3.0), 3.0)) == pytest.approx(0.0, abs=1e-12)


def test_t_squared_keeps_gradient_scale():
    """With the T^2 factor the student gradient tends to a T-independent limit."""
    torch.manual_seed(0)
    t = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    norms = {}
    for temperature in (8.0, 16.0, 32.0):
        s = torch.randn(1, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        s.requires_grad_(True)
        kl_distillation(s, _targets(t, temperature), temperature).backward()
        norms[temperature] = float(s.grad.norm())
    assert norms[16.0] / norms[8.0] == pytest.approx(1.0, abs=0.05)
    assert norms[32.0] / norms[16.0] == pytest.approx(1.0, abs=0.02)


def test_weights_expand_and_validate():
    w = expand_teacher_weights(torch.tensor([0.25, 0.75]), 2, 3, 4, 5)
    assert w.shape == (3, 2, 4, 5) and torch.allclose(w.sum(1), torch.ones(3, 4, 5))
    per_sample = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert expand_teacher_weights(per_sample, 2, 2, 1, 1)[0, :, 0, 0].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="sum to 1"):
        expand_teacher_weights(torch.tensor([0.5, 0.6]), 2, 1, 1, 1)
    with pytest.raises(ValueError, match="do not fit 3 teachers"):
        expand_teacher_weights(torch.tensor([0.5, 0.5]), 3, 1, 1, 1)


def test_soft_targets_mix_teachers_per_pixel():
    a, b = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    w = torch.zeros(1, 2, 2, 2)
    w[:, 0, 0] = 1.0  # top row from teacher a
    w[:, 1, 1] = 1.0  # bottom row from teacher b
    mix = soft_targets([a, b], w, 2.0)
    torch.testing.assert_close(mix[..., 0, :], (a / 2).softmax(1)[..., 0, :])
    torch.testing.assert_close(mix[..., 1, :], (b / 2).softmax(1)[..., 1, :])


def _identity_adapter(loss, k, tap):
    adapter = loss.adapters[k][tap]
    with torch.no_grad():
        adapter[0].weight.copy_(torch.eye(adapter[0].weight.shape[0])[:, :, None, None])
    adapter.eval()  # BatchNorm with fresh running stats: identity up to sqrt(1 + eps)


@pytest.mark.parametrize("normalise", ["pixel", "channel"])
def test_feature_loss_zero_for_matching_features(normalise):
    loss = FeatureDistillation({"b": 4}, [{"b": 4}], normalise)
    _identity_adapter(loss, 0, "b")
    f = torch.randn(2, 4, 6, 6)
    out = loss({"b": f}, [{"b": f * 3.0}], torch.ones(2, 1, 6, 6))
    assert float(out["b"]) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("normalise", ["pixel", "channel"])
def test_feature_loss_matches_numpy_with_resizing(normalise):
    torch.manual_seed(0)
    loss = FeatureDistillation({"b": 3}, [{"b": 5}], normalise).eval()
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 8, 8)
    out = float(loss({"b": s}, [{"b": t}], torch.ones(2, 1, 16, 16))["b"])
    with torch.no_grad():
        adapted = torch.nn.functional.interpolate(
            loss.adapters[0]["b"](s), size=(8, 8), mode="bilinear", align_corners=False
        ).numpy()
    t = t.numpy()
    axis = 1 if normalise == "pixel" else (2, 3)
    a_n = adapted / np.linalg.norm(adapted, axis=axis, keepdims=True)
    t_n = t / np.linalg.norm(t, axis=axis, keepdims=True)
    assert out == pytest.approx(((a_n - t_n) ** 2).mean(), rel=1e-5)


def test_feature_loss_mixes_teachers_with_weights():
    torch.manual_seed(0)
    two = FeatureDistillation({"b": 3}, [{"b": 4}, {"b": 4}]).eval()
    one = FeatureDistillation({"b": 3}, [{"b": 4}]).eval()
    one.adapters[0].load_state_dict(two.adapters[0].state_dict())
    s = torch.randn(2, 3, 4, 4)
    t0, t1 = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    only_first = torch.zeros(2, 2, 8, 8)
    only_first[:, 0] = 1.0
    mixed = two({"b": s}, [{"b": t0}, {"b": t1}], only_first)["b"]
    single = one({"b": s}, [{"b": t0}], torch.ones(2, 1, 8, 8))["b"]
    assert float(mixed) == pytest.approx(float(single), rel=1e-6)


def test_a_teacher_without_taps_adds_no_feature_error():
    """A black-box teacher (a volume teacher) has no adapters; the tapped teacher's error is
    weighted by its own share of the per-pixel weights."""
    torch.manual_seed(0)
    mixed = FeatureDistillation({"b": 3}, [{"b": 4}, {}]).eval()
    one = FeatureDistillation({"b": 3}, [{"b": 4}]).eval()
    one.adapters[0].load_state_dict(mixed.adapters[0].state_dict())
    assert len(mixed.adapters[1]) == 0
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4)
    half = torch.full((2, 2, 8, 8), 0.5)
    out = mixed({"b": s}, [{"b": t}, {}], half)["b"]
    single = one({"b": s}, [{"b": t}], torch.ones(2, 1, 8, 8))["b"]
    assert float(out) == pytest.approx(0.5 * float(single), rel=1e-6)


def test_logits_from_probabilities_soften_like_the_teacher_probabilities():
    p = torch.tensor([0.1, 0.5, 0.93]).view(1, 1, 3, 1)
    logits = logits_from_probabilities(p)
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1:], p)
    softened = torch.softmax(logits / 2.0, 1)[0, 1, :, 0]
    root = p.flatten().sqrt()
    torch.testing.assert_close(softened, root / (root + (1 - p.flatten()).sqrt()))
