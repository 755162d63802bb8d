"""Inference: slices of a preprocessed volume -> gland probabilities.

Any model a user can pass (checkpoint, run folder, ONNX, TorchScript) becomes a
:data:`SliceModel`: a function from a (B, 1, H, W) float32 batch to (B, C, H, W) logits.
torch is imported only for torch models: an ONNX model runs without it (cold start).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from prokd.data.preprocess import slice_stack

if TYPE_CHECKING:
    from torch import nn

SliceModel = Callable[[np.ndarray], np.ndarray]


def _is_torch_module(model: object) -> bool:
    """Whether ``model`` is a torch module (it cannot be unless torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def gland_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of class 1 over axis 1 of (B, C, H, W) logits, float32."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float64)
    return (exp[:, 1] / exp.sum(axis=1)).astype(np.float32)


def torch_slice_model(network: nn.Module) -> SliceModel:
    """A torch network (eval mode, inference mode) as a :data:`SliceModel`.

    Batches go to the network's device and the logits come back to the CPU.
    """
    import torch

    network.eval()
    device = next(network.parameters()).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def predict_slices(
    model: nn.Module | SliceModel,
    images: np.ndarray,
    batch_size: int = 32,
    context_slices: int = 0,
) -> np.ndarray:
    """Gland probability of every slice, (z, H, W) float32, slices batched; with
    ``context_slices`` each slice goes in with its neighbours as channels (2.5D)."""
    run = torch_slice_model(model) if _is_torch_module(model) else model
    out = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        stacks = [slice_stack(images, z, context_slices) for z in range(start, stop)]
        batch = np.ascontiguousarray(np.stack(stacks), dtype=np.float32)
        out.append(gland_probability(np.asarray(run(batch), dtype=np.float32)))
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.float32)
