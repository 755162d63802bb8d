"""Checkpoints: atomic saving, and loading a trained network with its preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prokd.data.preprocess import PreprocessSettings
from prokd.errors import DataError, error_summary
from prokd.io_atomic import atomic_path
from prokd.models import build_model

BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename: never a half-written checkpoint."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def model_payload(
    model: nn.Module, name: str, settings: PreprocessSettings, **extra: Any
) -> dict[str, Any]:
    """What a deployable checkpoint holds: network name, weights and preprocessing."""
    return {
        "model": name,
        "state_dict": model.state_dict(),
        "preprocess": asdict(settings),
        "in_channels": 1,
        "out_channels": 2,
        **extra,
    }


@dataclass
class TrainedModel:
    """A network in eval mode with the preprocessing it was trained with."""

    name: str
    network: nn.Module
    settings: PreprocessSettings
    path: Path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the best checkpoint of a run folder.

    Raises:
        DataError: nothing loadable at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise DataError(path, "checkpoint not found (give a .pt file or a finished run folder)")
    return path


def load_trained_model(path: str | Path) -> TrainedModel:
    """Load a checkpoint written by training (file or run folder).

    Raises:
        DataError: missing or unreadable checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        network = build_model(payload["model"], payload["in_channels"], payload["out_channels"])
        network.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, EOFError, OSError) as err:
        raise DataError(path, f"not a prokd checkpoint ({error_summary(err)})") from None
    settings = PreprocessSettings.from_dict(payload["preprocess"])
    return TrainedModel(payload["model"], network.eval(), settings, path)
