import numpy as np
import pytest
import torch
from monai.losses import DiceLoss

from prokd.distill.ensemble import pseudo_labelled
from prokd.losses.composite import CompositeLoss, LossWeights
from prokd.losses.distillation import FeatureDistillation, kl_distillation, soft_targets
from prokd.losses.lovasz import lovasz_softmax
from prokd.models import build_model, get_spec
from prokd.models.taps import FeatureTaps


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(2, 1, 8, 8, generator=g) > 0.6).long()
    teacher = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)
    return student, labels, teacher


def test_supervised_only_has_dice_and_lovasz():
    student, labels, _ = _batch()
    out = CompositeLoss()(student, labels)
    assert set(out.parts) == {"dice", "lovasz"}
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    expected = dice(student, labels) + lovasz_softmax(student.softmax(1), labels)
    assert float(out.total) == pytest.approx(float(expected))


def test_terms_are_weighted_from_the_config():
    student, labels, teacher = _batch()
    weights = LossWeights(dice=0.5, lovasz=2.0, kl=3.0, feature=0.0)
    out = CompositeLoss(weights, temperature=2.0)(student, labels, teacher_logits=[teacher])
    unit = CompositeLoss(LossWeights(1, 1, 1, 0), temperature=2.0)(
        student, labels, teacher_logits=[teacher]
    )
    for name, w in (("dice", 0.5), ("lovasz", 2.0), ("kl", 3.0)):
        assert float(out.parts[name]) == pytest.approx(w * float(unit.parts[name]))
    assert float(out.total) == pytest.approx(sum(float(v) for v in out.parts.values()))
    assert set(out.parts) == {"dice", "lovasz", "kl"}  # a zero-weight term is left out


def test_single_teacher_with_unit_weights_reduces_to_single_teacher_loss():
    student, labels, teacher = _batch()
    loss = CompositeLoss(temperature=3.0)
    plain = loss(student, labels, teacher_logits=[teacher])
    for weights in (torch.ones(1), torch.ones(2, 1), torch.ones(2, 1, 8, 8)):
        weighted = loss(student, labels, teacher_logits=[teacher], teacher_weights=weights)
        assert float(weighted.total) == float(plain.total)
    direct = kl_distillation(student, (teacher / 3.0).softmax(1), 3.0)
    assert float(plain.parts["kl"]) == pytest.approx(float(direct))


def test_identical_teachers_equal_one_teacher_whatever_the_weights():
    student, labels, teacher = _batch()
    loss = CompositeLoss()
    one = loss(student, labels, teacher_logits=[teacher])
    weights = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    weights = weights / weights.sum(1, keepdim=True)
    three = loss(student, labels, teacher_logits=[teacher] * 3, teacher_weights=weights)
    assert float(three.total) == pytest.approx(float(one.total), rel=1e-9)


def test_gradients_reach_student_and_adapters_not_teachers():
    torch.manual_seed(0)
    student, teachers = build_model("unet-w4"), [build_model("unet-w8"), build_model("unet-w8")]
    s_taps, t_taps = get_spec("unet-w4").taps, get_spec("unet-w8").taps
    feature = FeatureDistillation(
        {"bottleneck": 64, "decoder": 8}, [{"bottleneck": 128, "decoder": 16}] * 2
    )
    loss = CompositeLoss(feature_loss=feature)
    x = torch.randn(2, 1, 32, 32)
    labels = (torch.rand(2, 1, 32, 32) > 0.5).long()
    teacher_logits, teacher_features = [], []
    for teacher in teachers:  # teachers run with autograd on: the loss must still cut them off
        with FeatureTaps(teacher, t_taps) as taps:
            teacher_logits.append(teacher(x))
        teacher_features.append(dict(taps.features))
    with FeatureTaps(student, s_taps) as taps:
        logits = student(x)
    out = loss(
        logits, labels, taps.features, teacher_logits, teacher_features, torch.tensor([0.3, 0.7])
    )
    assert set(out.parts) == {"dice", "lovasz", "kl", "feature"}
    out.total.backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters() if p.dim() > 1
    )
    assert all(p.grad is not None for p in feature.parameters())
    assert all(p.grad is None for t in teachers for p in t.parameters())


def test_feature_term_needs_features():
    student, labels, teacher = _batch()
    loss = CompositeLoss(feature_loss=FeatureDistillation({"b": 2}, [{"b": 2}]))
    with pytest.raises(ValueError, match="needs student and teacher features"):
        loss(student, labels, teacher_logits=[teacher])


def test_soft_targets_are_distributions():
    _, _, teacher = _batch()
    mix = soft_targets([teacher, -teacher], torch.full((2, 2, 8, 8), 0.5, dtype=torch.float64), 2.0)
    torch.testing.assert_close(mix.sum(1), torch.ones(2, 8, 8, dtype=torch.float64))


def test_fractional_weights_mix_probabilities_not_logits():
    """Two different teachers, weights 0.3/0.7 per pixel: the KL target is the mixture of their
    softened probabilities, which differs from the softmax of the mixed logits."""
    torch.manual_seed(1)
    student, labels, _ = _batch()
    a, b = torch.randn(2, 2, 8, 8, dtype=torch.float64) * 3, torch.randn(2, 2, 8, 8) * 3
    b = b.to(torch.float64)
    weights = torch.stack([torch.full((2, 8, 8), w, dtype=torch.float64) for w in (0.3, 0.7)], 1)
    loss = CompositeLoss(temperature=2.0)
    mixed = loss(student, labels, teacher_logits=[a, b], teacher_weights=weights)
    probabilities = 0.3 * (a / 2.0).softmax(1) + 0.7 * (b / 2.0).softmax(1)
    expected = kl_distillation(student, probabilities, 2.0)
    assert float(mixed.parts["kl"]) == pytest.approx(float(expected), rel=1e-9)
    logit_mix = kl_distillation(student, ((0.3 * a + 0.7 * b) / 2.0).softmax(1), 2.0)
    assert abs(float(mixed.parts["kl"]) - float(logit_mix)) > 1e-3


def test_unlabelled_slices_add_no_gradient_through_dice_or_lovasz():
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, requires_grad=True)
    labels = (torch.rand(4, 1, 8, 8) > 0.5).long()
    labelled = torch.tensor([True, False, True, False])
    loss = CompositeLoss()
    parts = loss.supervised_parts(logits, labels, labelled)
    total = parts["dice"] + parts["lovasz"]
    total.backward()
    assert torch.count_nonzero(logits.grad[~labelled]) == 0
    assert torch.count_nonzero(logits.grad[labelled]) > 0
    # The terms equal those of the labelled slices alone.
    alone = loss.supervised_parts(logits.detach()[labelled], labels[labelled])
    for key in ("dice", "lovasz"):
        torch.testing.assert_close(parts[key].detach(), alone[key])
    # Labels of unlabelled slices are never read: changing them changes nothing.
    changed = labels.clone()
    changed[~labelled] = 1 - changed[~labelled]
    again = loss.supervised_parts(logits.detach(), changed, labelled)
    assert all(torch.equal(again[k], parts[k].detach()) for k in ("dice", "lovasz"))
    # A batch of unlabelled slices only: zero terms, zero gradient.
    logits.grad = None
    none = loss.supervised_parts(logits, labels, torch.zeros(4, dtype=torch.bool))
    (none["dice"] + none["lovasz"]).backward()
    assert float(none["dice"]) == 0 and torch.count_nonzero(logits.grad) == 0


def test_pseudo_labels_score_unlabelled_slices_against_the_teachers_mean():
    torch.manual_seed(0)
    labels = (torch.rand(4, 1, 8, 8) > 0.5).long()
    labelled = torch.tensor([True, False, True, False])
    teachers = [torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)]
    mixed = pseudo_labelled(labels, teachers, labelled)
    assert torch.equal(mixed[labelled], labels[labelled])
    gland = np.mean([torch.softmax(z, 1)[:, 1:2].numpy() for z in teachers], axis=0)
    np.testing.assert_array_equal(mixed[~labelled].numpy(), (gland[~labelled.numpy()] > 0.5))
    logits = torch.randn(4, 2, 8, 8, requires_grad=True)
    parts = CompositeLoss().supervised_parts(logits, mixed, torch.ones(4, dtype=torch.bool))
    (parts["dice"] + parts["lovasz"]).backward()
    assert torch.count_nonzero(logits.grad[~labelled]) > 0  # now they teach through Dice too
