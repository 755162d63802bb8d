from dataclasses import replace

import numpy as np
import pytest
import torch

from prokd.distill.gate import PixelGate, fit_gate, held_out, mixture_loss, teacher_inputs
from prokd.distill.teacher_maps import stack_probabilities
from prokd.distill.weighting import TeacherFacts, build_weighting
from prokd.errors import ConfigError
from tests.conftest import slice_volume


def _gland_logits(gland: torch.Tensor, sharpness: float = 4.0) -> torch.Tensor:
    """Two-class logits (B, 2, H, W) from a 0/1 gland map (B, 1, H, W)."""
    return torch.cat([-sharpness * (gland - 0.5), sharpness * (gland - 0.5)], dim=1)


def _right(images: torch.Tensor) -> torch.Tensor:
    """A teacher that finds the bright square (the phantom's gland)."""
    return _gland_logits((images[:, :1] > 0.75).float())


def _shifted(images: torch.Tensor) -> torch.Tensor:
    """A confident teacher whose gland is the bright square moved 10 pixels."""
    return _gland_logits((images[:, :1].roll(10, dims=-1) > 0.75).float())


def _volumes(sites: str, first_seed: int = 0):
    return [
        replace(slice_volume(first_seed + i), case_id=f"{site}{i}", site=site)
        for i, site in enumerate(sites)
    ]


def test_teacher_inputs_are_slice_gland_others_and_entropy():
    images = torch.randn(2, 3, 4, 4)  # three context channels: the centre one is read
    logits = [torch.randn(2, 2, 4, 4) for _ in range(3)]
    inputs = teacher_inputs(stack_probabilities(logits), images)
    assert inputs.shape == (2, 3, 4, 4, 4)
    gland = torch.stack([torch.softmax(z, 1)[:, 1] for z in logits], 1)
    torch.testing.assert_close(inputs[:, 0, 0], images[:, 1])
    torch.testing.assert_close(inputs[:, :, 1], gland)
    torch.testing.assert_close(inputs[:, 0, 2], (gland[:, 1] + gland[:, 2]) / 2)
    p = torch.softmax(logits[2], 1)
    torch.testing.assert_close(inputs[:, 2, 3], -(p * p.log()).sum(1))


def test_a_masked_teacher_takes_no_part_in_the_others_mean():
    images = torch.randn(2, 1, 4, 4)
    logits = [torch.randn(2, 2, 4, 4) for _ in range(3)]
    allowed = torch.tensor([[False, True, True], [True, True, True]])
    inputs = teacher_inputs(stack_probabilities(logits), images, allowed)
    gland = torch.stack([torch.softmax(z, 1)[:, 1] for z in logits], 1)
    # slice 0: teacher 0 trained on it, so teachers 1 and 2 see only each other
    torch.testing.assert_close(inputs[0, 1, 2], gland[0, 2])
    torch.testing.assert_close(inputs[0, 2, 2], gland[0, 1])
    torch.testing.assert_close(inputs[1, 1, 2], (gland[1, 0] + gland[1, 2]) / 2)
    # whatever the masked teacher predicts there changes no other teacher's input
    logits[0][0] = 10 * torch.randn(2, 4, 4)
    changed = teacher_inputs(stack_probabilities(logits), images, allowed)
    torch.testing.assert_close(changed[0, 1:], inputs[0, 1:])


def test_gate_is_shared_by_teachers_so_reordering_them_reorders_the_weights():
    torch.manual_seed(0)
    gate = PixelGate()
    probs = stack_probabilities([torch.randn(2, 2, 8, 8) for _ in range(3)])
    inputs = teacher_inputs(probs, torch.randn(2, 1, 8, 8))
    order = [2, 0, 1]
    torch.testing.assert_close(gate(inputs[:, order]), gate(inputs)[:, order])


def test_mixture_loss_is_lower_for_the_right_teacher():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, 1:3, 1:3] = 1
    probs = torch.stack(
        [torch.softmax(_gland_logits(labels[:, None].float()), 1), torch.full((1, 2, 4, 4), 0.5)],
        dim=1,
    )
    on_right = torch.zeros(1, 2, 4, 4)
    on_right[:, 0] = 1
    assert mixture_loss(on_right, probs, labels) < mixture_loss(1 - on_right, probs, labels)


def test_held_out_reads_training_cases_then_sites():
    volume = _volumes("A")[0]
    cases = [frozenset({"A0"}), frozenset({"B0"})]
    assert held_out(volume, ["A", "B"], cases, 2) == [False, True]
    assert held_out(volume, ["B", "A"], None, 2) == [True, False]
    assert held_out(volume, None, None, 3) == [True, True, True]


def _fitted_gate(teachers, volumes, sites):
    """The ``gate`` weighting of ``teachers`` (functions of the images), fitted when first
    called, and a function running the teachers."""

    def run(images):
        return [teacher(images) for teacher in teachers]

    facts = TeacherFacts(sites=sites, volumes=volumes, teacher_logits=run)
    return build_weighting("gate", facts), run


def test_fitted_gate_trusts_the_teacher_that_finds_the_gland_in_either_order():
    """Teachers of sites A, B and C, one right and two confidently wrong; each labelled
    slice holds out the teachers of the other sites, so the right one is seen on half of
    them. On new slices the gate weighs the right teacher where they disagree."""
    volumes = _volumes("ABAB")
    images = torch.from_numpy(slice_volume(50).image[1:3, None])
    no_labels = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    disagree = _right(images).argmax(1) != _shifted(images).argmax(1)
    assert disagree.sum() > 50
    for right in range(3):
        teachers = [_shifted, _shifted, _shifted]
        teachers[right] = _right
        weighting, run = _fitted_gate(teachers, volumes, ["A", "B", "C"])
        weights = weighting(run(images), no_labels, images=images)
        torch.testing.assert_close(weights.sum(1), torch.ones(2, 32, 32))
        assert weights[:, right][disagree].mean() > 0.75, right  # 0.89-0.90 measured


def test_fit_needs_two_held_out_teachers_and_trained_teachers_only():
    volumes = _volumes("AA")

    def run(images):
        return [_right(images), _shifted(images)]

    with pytest.raises(ConfigError, match="no labelled slice on which two teachers"):
        fit_gate(run, volumes, 0, 2, sites=["A", "B"])
    with pytest.raises(ConfigError, match="cannot weigh volume teachers"):
        fit_gate(run, volumes, 0, 3, sites=["B", "C", "D"])
    gate = fit_gate(run, volumes, 0, 2, sites=["B", "C"])
    assert not any(p.requires_grad for p in gate.parameters())


def test_gate_build_needs_teachers_and_labels():
    volumes = _volumes("AB")
    with pytest.raises(ConfigError, match="no labelled slice on which two teachers"):
        # Two site teachers and labels from their own sites only: refused when built,
        # before any training step.
        build_weighting("gate", TeacherFacts(sites=["A", "B"], volumes=volumes, teacher_logits=len))
    with pytest.raises(ConfigError, match="needs the teachers"):
        build_weighting("gate", TeacherFacts(volumes=volumes))
    unlabelled = [v.without_mask() for v in volumes]
    with pytest.raises(ConfigError, match="needs labelled slices"):
        build_weighting("gate", TeacherFacts(volumes=unlabelled, teacher_logits=lambda x: []))


def test_gate_fit_is_deterministic_and_leaves_the_global_generator_alone():
    volumes = _volumes("AB")

    def run(images):
        return [_right(images), _shifted(images), _right(images)]

    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = fit_gate(run, volumes, 0, 3)
    assert torch.equal(torch.rand(1), before)
    second = fit_gate(run, volumes, 0, 3)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert np.isfinite([float(p.abs().sum()) for p in first.parameters()]).all()
