"""Export a trained network alone (no adapters, no teachers) to ONNX or TorchScript.

Both formats are one self-contained file with the preprocessing settings embedded, so
``prokd predict`` and ``prokd evaluate`` accept the exported file directly:
- ONNX: TorchScript-based exporter (``dynamo=False``), weights inside the ``.onnx`` file,
  opset 17, dynamic batch; settings in the model's ``metadata_props`` under ``prokd``.
- TorchScript: ``torch.jit.trace``; settings in the archive's extra file ``prokd.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import onnx
import torch

from prokd.inference.model_files import METADATA_KEY, TORCHSCRIPT_EXTRA, initializer_elements
from prokd.inference.trained import TrainedModel
from prokd.io_atomic import atomic_path

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


def export_metadata(model: TrainedModel, parameters: int | None = None) -> str:
    """JSON stored with an exported model: network name, preprocessing settings and, for
    ONNX, the parameters the graph stores (so listing a model needs no ``onnx`` package)."""
    metadata = {"model": model.name, "preprocess": asdict(model.settings)}
    if parameters is not None:
        metadata["parameters"] = parameters
    return json.dumps(metadata)


def export_model(model: TrainedModel, fmt: str, out: str | Path) -> Path:
    """Write ``model.network`` to ``out`` in ``fmt`` (atomically).

    Raises:
        ValueError: unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    size = model.settings.size
    example = torch.zeros(1, model.settings.channels, size, size)
    network = model.network.eval()
    out = Path(out)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                opset_version=ONNX_OPSET,
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
            proto = onnx.load(str(tmp))
            metadata = export_metadata(model, initializer_elements(proto))
            onnx.helper.set_model_props(proto, {METADATA_KEY: metadata})
            onnx.save(proto, str(tmp))
        else:
            with torch.no_grad():
                traced = torch.jit.trace(network, example)
            torch.jit.save(
                traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: export_metadata(model)}
            )
    return out
