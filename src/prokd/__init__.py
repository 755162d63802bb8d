"""prokd: knowledge distillation for fast CPU prostate segmentation in T2-weighted MRI.

Re-implements and extends Ben Loussaief et al., "Knowledge Distillation for Adaptive
MRI Prostate Segmentation Based on Limit-Trained Multi-Teacher Models" (arXiv 2303.09494).

``prokd.segment(image_or_path)`` segments one volume with the bundled model (see
:mod:`prokd.api`); it is imported on first use, so ``import prokd`` stays light.
"""

from __future__ import annotations

from typing import Any

from prokd.version import __version__

__all__ = ["segment", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("segment", "SegmentResult"):
        from prokd import api

        return getattr(api, name)
    raise AttributeError(f"module 'prokd' has no attribute {name!r}")
