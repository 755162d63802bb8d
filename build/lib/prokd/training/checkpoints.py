"""Training checkpoints: atomic saving of the resumable state and the deployable network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prokd.io_atomic import atomic_path

LAST = "last.pt"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename: never a half-written checkpoint."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
