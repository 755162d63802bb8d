"""Which torch device a ``--device`` choice means (torch is imported only when asked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prokd.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` fails clearly without a GPU.

    Raises:
        ConfigError: unknown choice, or ``cuda`` on a machine without one.
    """
    import torch

    if choice not in DEVICES:
        raise ConfigError(f"device: must be one of {', '.join(DEVICES)}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but torch sees no CUDA device")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
