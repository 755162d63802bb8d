"""Inference: slices of a preprocessed volume -> gland probabilities -> original grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from prokd.data.preprocess import PreprocessSettings, preprocess_volume, to_original_grid


def predict_slices(network: nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Gland probability of every slice, (z, H, W) float32, slices batched."""
    network.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            out.append(torch.softmax(network(batch[:, None].float()), 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.float32)


def predict_volume(
    network: nn.Module, image: sitk.Image, settings: PreprocessSettings, batch_size: int = 32
) -> np.ndarray:
    """Gland probabilities of a whole volume on its original grid, (z, y, x) float32."""
    slices, _, grid = preprocess_volume(image, None, settings)
    return to_original_grid(predict_slices(network, slices, batch_size), grid, image)
