"""Model size and cost: parameters and FLOPs per slice (latency: see ``prokd.evaluation.bench``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOP_CONVENTION = "FLOPs as counted by torch FlopCounterMode: one multiply-add = 2 FLOPs"


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included: a frozen teacher keeps its size)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, height: int, width: int, in_channels: int = 1) -> int:
    """Forward FLOPs for one slice (batch 1), see :data:`FLOP_CONVENTION`."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, in_channels, height, width))
    model.train(was_training)
    return int(counter.get_total_flops())
