"""Inference: slices of a preprocessed volume -> gland probabilities -> original grid.

Any model a user can pass (checkpoint, run folder, ONNX, TorchScript) becomes a
:data:`SliceModel`: a function from a (B, 1, H, W) float32 batch to (B, C, H, W) logits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from prokd.data.preprocess import PreprocessSettings, preprocess_volume, to_original_grid

SliceModel = Callable[[np.ndarray], np.ndarray]


def torch_slice_model(network: nn.Module) -> SliceModel:
    """A torch network (eval mode, inference mode) as a :data:`SliceModel`.

    Batches go to the network's device and the logits come back to the CPU.
    """
    network.eval()
    device = next(network.parameters()).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def predict_slices(
    model: nn.Module | SliceModel, images: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """Gland probability of every slice, (z, H, W) float32, slices batched."""
    run = torch_slice_model(model) if isinstance(model, nn.Module) else model
    out = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size, None], dtype=np.float32)
        logits = torch.from_numpy(np.asarray(run(batch), dtype=np.float32))
        out.append(torch.softmax(logits, 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.float32)


def predict_volume(
    model: nn.Module | SliceModel,
    image: sitk.Image,
    settings: PreprocessSettings,
    batch_size: int = 32,
) -> np.ndarray:
    """Gland probabilities of a whole volume on its original grid, (z, y, x) float32."""
    slices, _, grid = preprocess_volume(image, None, settings)
    return to_original_grid(predict_slices(model, slices, batch_size), grid, image)
