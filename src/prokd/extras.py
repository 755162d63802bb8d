"""What the predict-only base install leaves out: the ``train`` extra."""

from __future__ import annotations

import importlib.util

# What `pip install 'prokd[train]'` adds to the predict-only base install.
TRAIN_EXTRA_MODULES = ("torch", "monai", "matplotlib", "onnx", "onnxscript")
TRAIN_EXTRA_HINT = "install the training extra: pip install 'prokd[train]'"


def train_extra_installed() -> bool:
    """Whether the ``train`` extra (torch, MONAI ...) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in TRAIN_EXTRA_MODULES)
