"""Load any model a user can pass: checkpoint, run folder, ONNX or TorchScript file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from prokd.data.preprocess import PreprocessSettings
from prokd.errors import DataError, error_summary
from prokd.inference.export import METADATA_KEY, TORCHSCRIPT_EXTRA
from prokd.inference.predict import SliceModel, torch_slice_model
from prokd.inference.trained import load_trained_model


@dataclass
class LoadedModel:
    """A ready-to-run model with the preprocessing it expects."""

    name: str
    kind: str  # "checkpoint", "onnx" or "torchscript"
    slice_model: SliceModel
    settings: PreprocessSettings
    path: Path


def _settings(metadata: str, path: Path) -> tuple[str, PreprocessSettings]:
    try:
        data = json.loads(metadata)
        return data["model"], PreprocessSettings.from_dict(data["preprocess"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(path, f"no valid prokd metadata in the exported model ({err})") from None


def _onnx(path: Path) -> LoadedModel:
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise DataError(path, f"cannot load ONNX model ({error_summary(err)})") from None
    metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if metadata is None:
        raise DataError(path, "ONNX model without prokd metadata (export it with prokd export)")
    name, settings = _settings(metadata, path)
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return LoadedModel(name, "onnx", run, settings, path)


def _torchscript(path: Path) -> LoadedModel:
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise DataError(path, f"cannot load TorchScript model ({error_summary(err)})") from None
    name, settings = _settings(extra[TORCHSCRIPT_EXTRA], path)
    return LoadedModel(name, "torchscript", torch_slice_model(module), settings, path)


def load_model_file(path: str | Path) -> LoadedModel:
    """A checkpoint (``.pt``), run folder, ONNX (``.onnx``) or TorchScript (``.ts``/``.pt``) file.

    Raises:
        DataError: missing or unreadable model.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise DataError(path, "model file not found")
        return _onnx(path)
    if path.suffix in (".ts", ".torchscript"):
        if not path.is_file():
            raise DataError(path, "model file not found")
        return _torchscript(path)
    trained = load_trained_model(path)
    return LoadedModel(
        trained.name,
        "checkpoint",
        torch_slice_model(trained.network),
        trained.settings,
        trained.path,
    )
