"""Trained prokd networks: the deployable checkpoint format and loading it back.

A deployable checkpoint (``best.pt``) holds the network's registry name, its weights and the
preprocessing it was trained with. Training writes it (:func:`model_payload`); inference,
export, evaluation and the teacher ensemble load it (:func:`load_trained_model`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prokd.data.preprocess import PreprocessSettings
from prokd.errors import DataError, ProkdError, error_summary
from prokd.inference.bundled import BEST
from prokd.models import build_model

MODEL_KEYS = {"model", "state_dict", "preprocess", "in_channels", "out_channels"}


def model_payload(
    model: nn.Module, name: str, settings: PreprocessSettings, **extra: Any
) -> dict[str, Any]:
    """What a deployable checkpoint holds: network name, weights and preprocessing."""
    return {
        "model": name,
        "state_dict": model.state_dict(),
        "preprocess": asdict(settings),
        "in_channels": settings.channels,
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


def load_trained_model(path: str | Path, device: torch.device | None = None) -> TrainedModel:
    """Load a checkpoint written by training (file or run folder), on ``device`` if given.

    Raises:
        DataError: missing or unreadable checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle, zip and torch raise many types for a foreign file
        raise DataError(path, f"not a prokd checkpoint ({error_summary(err)})") from None
    if not isinstance(payload, dict) or not MODEL_KEYS <= set(payload):
        found = sorted(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise DataError(
            path,
            f"not a prokd checkpoint (holds {found}; give best.pt of a prokd run, not last.pt "
            "or a bare state_dict)",
        )
    try:
        network = build_model(payload["model"], payload["in_channels"], payload["out_channels"])
        network.load_state_dict(payload["state_dict"])
        settings = PreprocessSettings.from_dict(payload["preprocess"])
    except ProkdError as err:
        raise DataError(path, str(err)) from None
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"damaged prokd checkpoint ({error_summary(err)})") from None
    return TrainedModel(payload["model"], network.to(device).eval(), settings, path)
