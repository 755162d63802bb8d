"""Feature taps: intermediate feature maps pulled with forward hooks by module path.

Networks need no surgery to be distilled (as in torchdistill's forward-hook design).
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn


class FeatureTaps:
    """Record the outputs of named submodules during forward passes.

    Use as a context manager; ``features`` maps tap name -> the latest output tensor::

        with FeatureTaps(model, {"bottleneck": "model.1.submodule"}) as taps:
            logits = model(x)
        taps.features["bottleneck"]
    """

    def __init__(self, model: nn.Module, taps: dict[str, str]) -> None:
        self.model = model
        self.taps = dict(taps)
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _recorder(self, name: str):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.features[name] = output

        return record

    def __enter__(self) -> FeatureTaps:
        for name, path in self.taps.items():
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"feature tap {name!r}: no submodule {path!r}") from None
            self._handles.append(module.register_forward_hook(self._recorder(name)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def tap_shapes(
    model: nn.Module, taps: dict[str, str], height: int, width: int, in_channels: int = 1
) -> dict[str, tuple[int, ...]]:
    """Shapes (C, H, W) of every tapped feature for one input of the given size."""
    was_training = model.training
    model.eval()
    with FeatureTaps(model, taps) as tapped, torch.inference_mode():
        model(torch.zeros(1, in_channels, height, width))
    model.train(was_training)
    return {name: tuple(tapped.features[name].shape[1:]) for name in taps}
