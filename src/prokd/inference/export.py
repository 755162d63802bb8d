"""Export a trained network alone (no adapters, no teachers) to ONNX or TorchScript.

Both formats are one self-contained file with the preprocessing settings embedded, so
``prokd predict`` and ``prokd evaluate`` accept the exported file directly:
- ONNX: TorchScript-based exporter (``dynamo=False``), weights inside the ``.onnx`` file,
  opset 17, dynamic batch; settings in the model's ``metadata_props`` under ``prokd``.
  ``with_taps``: the network's feature taps (:mod:`prokd.models.taps`) become extra outputs
  ``tap:<name>`` after ``logits``, and the metadata lists them: a site teacher file from
  which a student learns KL and feature targets without the site's code or data.
- TorchScript: ``torch.jit.trace``; settings in the archive's extra file ``prokd.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import onnx
import torch

from prokd.errors import ConfigError
from prokd.inference.model_files import (
    LOCALISER_KEY,
    METADATA_KEY,
    TAP_OUTPUT,
    TORCHSCRIPT_EXTRA,
    initializer_elements,
    localiser_digest,
)
from prokd.inference.postprocess import GLAND_THRESHOLD
from prokd.inference.reliability import CALIBRATED_LEVEL, LEVELS
from prokd.inference.trained import TrainedModel
from prokd.io_atomic import atomic_path
from prokd.models import get_spec
from prokd.models.taps import FeatureTaps

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


def export_metadata(
    model: TrainedModel, parameters: int | None = None, taps: list[str] | None = None
) -> str:
    """JSON stored with an exported model, its whole plan: network name, preprocessing
    settings, the probability its mask is cut at, the QC level and limits it is judged
    with (the calibrated ones at export), the SHA-256 of the localiser that placed its
    training grids (``crop_centre: gland``: the
    model is refused beside another) and, for ONNX, the parameters the graph stores (so
    listing a model needs no ``onnx`` package) and the feature taps it outputs, if any."""
    metadata: dict[str, object] = {
        "model": model.name,
        "preprocess": asdict(model.settings),
        "threshold": GLAND_THRESHOLD,
        "qc_level": CALIBRATED_LEVEL,
        "qc_limits": LEVELS[CALIBRATED_LEVEL],
    }
    if model.settings.crop_centre == "gland":
        digest = localiser_digest(model.settings.localiser)
        if digest is not None:
            metadata[LOCALISER_KEY] = digest
    if parameters is not None:
        metadata["parameters"] = parameters
    if taps:
        metadata["taps"] = taps
    return json.dumps(metadata)


class _WithTaps(torch.nn.Module):
    """A network that returns its logits and then its tapped features, in ``taps`` order."""

    def __init__(self, network: torch.nn.Module, taps: dict[str, str]) -> None:
        super().__init__()
        self.network, self.taps = network, taps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with FeatureTaps(self.network, self.taps) as tapped:
            logits = self.network(x)
        return (logits, *(tapped.features[name] for name in self.taps))


def export_model(model: TrainedModel, fmt: str, out: str | Path, with_taps: bool = False) -> Path:
    """Write ``model.network`` to ``out`` in ``fmt`` (atomically); ``with_taps`` (ONNX
    only) adds the feature taps as outputs.

    Raises:
        ValueError: unknown format.
        ConfigError: taps asked of TorchScript.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    if with_taps and fmt != "onnx":
        raise ConfigError("--with-taps: feature taps are exported to ONNX only")
    size = model.settings.size
    example = torch.zeros(1, model.settings.channels, size, size)
    network = model.network.eval()
    taps = dict(get_spec(model.name).taps) if with_taps else {}
    out = Path(out)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            outputs = ["logits", *(f"{TAP_OUTPUT}{name}" for name in taps)]
            torch.onnx.export(
                _WithTaps(network, taps) if taps else network,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=outputs,
                opset_version=ONNX_OPSET,
                dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]},
                dynamo=False,
            )
            proto = onnx.load(str(tmp))
            metadata = export_metadata(model, initializer_elements(proto), list(taps))
            onnx.helper.set_model_props(proto, {METADATA_KEY: metadata})
            onnx.save(proto, str(tmp))
        else:
            with torch.no_grad():
                traced = torch.jit.trace(network, example)
            torch.jit.save(
                traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: export_metadata(model)}
            )
    return out
