"""Model size and cost: parameters, FLOPs per slice, measured forward latency."""

from __future__ import annotations

import statistics
import time

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


def forward_latency_ms(
    model: nn.Module,
    height: int,
    width: int,
    batch: int = 1,
    runs: int = 20,
    warmup: int = 3,
    in_channels: int = 1,
) -> list[float]:
    """Wall-clock forward times in ms (eval mode, inference mode), after warm-up."""
    model.eval()
    x = torch.randn(batch, in_channels, height, width)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return times


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))
