"""Registry of segmentation networks by name, for configs and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from prokd.errors import ConfigError

Builder = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    Attributes:
        name: registry key.
        role: ``"teacher"`` or ``"student"`` (a hint; any network can play either role).
        description: one line for ``prokd models``.
        build: ``build(in_channels, out_channels)`` -> module returning (B, C, H, W) logits.
        taps: feature-tap name -> module path whose output is the tapped feature map.
        size_multiple: H and W of the input must be multiples of this.
    """

    name: str
    role: str
    description: str
    build: Builder
    taps: dict[str, str]
    size_multiple: int


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str, role: str, description: str, taps: dict[str, str], size_multiple: int = 16
) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to :data:`MODELS` under ``name``."""

    def wrap(build: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelSpec(name, role, description, build, dict(taps), size_multiple)
        return build

    return wrap


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered network.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def build_model(name: str, in_channels: int = 1, out_channels: int = 2) -> nn.Module:
    """Instantiate a registered network (random initialisation, seeded by the caller)."""
    return get_spec(name).build(in_channels, out_channels)
