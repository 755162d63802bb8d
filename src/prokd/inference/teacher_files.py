"""Teachers a student learns features from: a prokd checkpoint or run folder, or a site
teacher file (an ONNX export with its feature taps, ``prokd export --with-taps``).

A site teacher file runs in onnxruntime behind a frozen torch module (:class:`OnnxNetwork`),
so a student distils its logits and tapped features exactly as a checkpoint's, without the
site's code, weights format or data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from prokd.errors import DataError
from prokd.inference.model_files import TAP_OUTPUT, onnx_session, parse_metadata, prokd_metadata
from prokd.inference.trained import TrainedModel, load_trained_model


class OnnxNetwork(nn.Module):
    """An exported slice network with feature taps, run by onnxruntime on the CPU.

    ``forward`` gives the logits; :meth:`run` gives the logits and the tapped features.
    Frozen: it has no parameters and no gradient flows through it.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.session = onnx_session(path)
        outputs = [o.name for o in self.session.get_outputs()]
        self.taps = {o[len(TAP_OUTPUT) :]: o for o in outputs if o.startswith(TAP_OUTPUT)}
        self.input_name = self.session.get_inputs()[0].name
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self.channels = {tap: int(shapes[output][1]) for tap, output in self.taps.items()}

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and every tapped feature of a batch, on the batch's device."""
        batch = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        names = ["logits", *self.taps.values()]
        outputs = self.session.run(names, {self.input_name: batch})
        tensors = [torch.from_numpy(o).to(images.device) for o in outputs]
        return tensors[0], dict(zip(self.taps, tensors[1:], strict=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]


def load_teacher(spec: str | Path, device: torch.device | None = None) -> TrainedModel:
    """A teacher whose features teach: a checkpoint or run folder (on ``device``), or an
    ONNX export with feature taps (on the CPU).

    Raises:
        DataError: unreadable file, or an ONNX file without feature taps (a teacher of KL
            targets only: give it as a volume teacher).
    """
    path = Path(spec)
    if path.suffix != ".onnx":
        return load_trained_model(path, device)
    if not path.is_file():
        raise DataError(path, "teacher file not found")
    network = OnnxNetwork(path)
    metadata = prokd_metadata(network.session)
    if metadata is None or not network.taps:
        raise DataError(path, "ONNX teacher without feature taps (export it with --with-taps)")
    plan = parse_metadata(metadata, path)
    name, settings = plan.name, plan.settings
    return TrainedModel(name, network, settings, path)
