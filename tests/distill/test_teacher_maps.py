import math

import torch

from prokd.distill.teacher_maps import entropy, others_mean, stack_probabilities


def test_maps_against_hand_computed_values():
    # Two teachers on one pixel: gland probabilities 0.8 and 0.5.
    logits = [torch.log(torch.tensor([0.2, 0.8])).view(1, 2, 1, 1)]
    logits.append(torch.zeros(1, 2, 1, 1))
    probs = stack_probabilities(logits)
    assert probs.shape == (1, 2, 2, 1, 1)
    torch.testing.assert_close(probs[0, :, 1, 0, 0], torch.tensor([0.8, 0.5]))
    expected = [-(0.2 * math.log(0.2) + 0.8 * math.log(0.8)), math.log(2)]
    torch.testing.assert_close(entropy(probs)[0, :, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(others_mean(probs[:, :, 1])[0, :, 0, 0], torch.tensor([0.5, 0.8]))


def test_others_mean_of_three_and_of_one():
    gland = torch.tensor([0.9, 0.3, 0.6]).view(1, 3, 1, 1)
    torch.testing.assert_close(others_mean(gland).flatten(), torch.tensor([0.45, 0.75, 0.6]))
    alone = gland[:, :1]
    assert torch.equal(others_mean(alone), alone)
