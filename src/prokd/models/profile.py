"""Model size and cost: parameters and FLOPs per slice (latency: see ``prokd.evaluation.bench``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prokd.models.registry import MODELS, build_model, get_spec
from prokd.models.taps import tap_shapes

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


def models_table(names: list[str] | None = None, size: int = 128) -> str:
    """``prokd models``: parameters, FLOPs and feature-tap shapes of registered networks.

    Raises:
        ConfigError: an unknown name.
    """
    names = list(names or MODELS)
    specs = [get_spec(name) for name in names]
    header = f"{'model':<12} {'role':<8} {'params':>10} {'GFLOPs':>8}"
    lines = [f"{header}  feature taps (C x H x W) at {size}x{size}"]
    for name, spec in zip(names, specs, strict=True):
        model = build_model(name)
        gflops = count_flops(model, size, size) / 1e9
        shapes = tap_shapes(model, spec.taps, size, size)
        taps = ", ".join(f"{t} {'x'.join(map(str, s))}" for t, s in shapes.items())
        lines.append(
            f"{name:<12} {spec.role:<8} {count_parameters(model):>10,} {gflops:>8.3f}  {taps}"
        )
    lines.append(f"GFLOPs per {size}x{size} slice, batch 1; {FLOP_CONVENTION}.")
    return "\n".join(lines)
