"""Load any model a user can pass: checkpoint, run folder, ONNX or TorchScript file.

An ONNX model loads without importing torch or MONAI (a fast cold start); torch comes in
only for checkpoints, run folders and TorchScript files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from prokd.data.io import file_sha256
from prokd.data.preprocess import PreprocessSettings
from prokd.errors import DataError, error_summary
from prokd.inference.bundled import (
    BUNDLED,
    BUNDLED_DIR,
    bundled_path,
    model_file,
    resolve_model_path,
)
from prokd.inference.postprocess import GLAND_THRESHOLD
from prokd.inference.predict import SliceModel

if TYPE_CHECKING:
    import onnx
    import torch

METADATA_KEY = "prokd"  # ONNX metadata_props key of the embedded settings
LOCALISER_KEY = "localiser_sha256"  # the metadata's digest of the localiser file
TORCHSCRIPT_EXTRA = "prokd.json"  # TorchScript extra file of the embedded settings
TAP_OUTPUT = "tap:"  # ONNX output name prefix of an exported feature tap


@dataclass
class LoadedModel:
    """A ready-to-run model with the preprocessing it expects."""

    name: str
    kind: str  # "checkpoint", "onnx" or "torchscript"
    slice_model: SliceModel
    settings: PreprocessSettings
    path: Path
    network: torch.nn.Module | None = None  # the torch module, for checkpoints and TorchScript
    parameters: int | None = None  # as an ONNX export's metadata states them
    threshold: float = GLAND_THRESHOLD  # the probability its mask is cut at
    qc_limits: dict[str, float] | None = None  # its QC limits (None: the calibrated level's)

    @property
    def label(self) -> str:
        """How outputs name the model: a bundled model's name with its network
        (``prostate-t2 (unet-w8)``), otherwise the network's name."""
        bundled = self.path.parent == BUNDLED_DIR and self.path.stem in BUNDLED
        return f"{self.path.stem} ({self.name})" if bundled else self.name


def prokd_metadata(session: ort.InferenceSession) -> str | None:
    """The prokd metadata an exported ONNX model carries (``None``: not a prokd export)."""
    return session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


@dataclass(frozen=True)
class ModelPlan:
    """What an export carries besides its weights (nnU-Net's rule: a model carries its
    whole plan): network name, preprocessing, parameter count, the probability its mask is
    cut at, and the QC limits it was calibrated with (``None``: the registry's level)."""

    name: str
    settings: PreprocessSettings
    parameters: int | None = None
    threshold: float = GLAND_THRESHOLD
    qc_level: int | None = None
    qc_limits: dict[str, float] | None = None


def parse_metadata(metadata: str, path: Path) -> ModelPlan:
    """The plan of an export, after :func:`check_localiser` on the localiser it names.

    Raises:
        DataError: metadata that is not a prokd export's, or a localiser that is not the
            one the export was made with.
    """
    try:
        data = json.loads(metadata)
        plan = ModelPlan(
            data["model"],
            PreprocessSettings.from_dict(data["preprocess"]),
            data.get("parameters"),
            float(data.get("threshold", GLAND_THRESHOLD)),
            data.get("qc_level"),
            {str(k): float(v) for k, v in data["qc_limits"].items()}
            if "qc_limits" in data
            else None,
        )
        digest = data.get(LOCALISER_KEY)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise DataError(path, f"no valid prokd metadata in the exported model ({err})") from None
    check_localiser(plan.settings.localiser, digest, path)
    return plan


def localiser_digest(spec: str) -> str | None:
    """SHA-256 of the localiser file ``spec`` stands for (``None``: no such file)."""
    path = model_file(spec)
    return file_sha256(path) if path.is_file() else None


def check_localiser(spec: str, expected: str | None, model_path: Path) -> None:
    """Refuse a model whose localiser (``spec``: a bundled name or a file) is not the one
    it was exported with (``expected``: that file's SHA-256; ``None``: not recorded, as in
    exports made before digests were).

    Raises:
        DataError: naming the model file, the localiser and both digests.
    """
    if expected is None:
        return
    actual = localiser_digest(spec)
    if actual != expected:
        found = "missing" if actual is None else f"sha256 {actual[:12]}"
        raise DataError(
            model_path,
            f"its localiser {spec!r} ({model_file(spec)}: {found}) is not the one it was made "
            f"with (sha256 {expected[:12]}); reinstall prokd, or put that localiser back",
        )


# onnxruntime's exception classes by name -> what they mean for a user's file.
ONNX_LOAD_ERRORS = {
    "InvalidProtobuf": "not an ONNX model (corrupt, truncated or another file type)",
    "NoSuchFile": "ONNX model file not found",
    "InvalidGraph": "invalid ONNX graph",
    "NotImplemented": "uses an operator or type onnxruntime cannot run",
    "InvalidArgument": "invalid ONNX model",
}


def onnx_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``path`` (the one builder every ONNX model goes
    through); onnxruntime logs errors only, so a user's terminal shows prokd's own lines.
    Its worker threads sleep between runs instead of spinning: prediction runs many small
    batches, and spinning cost a volume a third more CPU for no gain in wall time
    (0.76 s against 0.50 s of CPU, prokd predict's stages on a Prostate158 scan, 2 cores).

    Raises:
        DataError: naming the file and saying why onnxruntime refused it.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for pool in ("intra_op", "inter_op"):
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        meaning = ONNX_LOAD_ERRORS.get(type(err).__name__, "cannot load ONNX model")
        raise DataError(path, f"{meaning} ({error_summary(err)})") from None


def _check_slice_model(session: ort.InferenceSession, path: Path, channels: int) -> None:
    """A prokd slice model takes (B, C, H, W) (C: 1, or the neighbouring slices of a 2.5D
    model) and returns (B, 2, H, W) logits."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape_in = inputs[0].shape if len(inputs) == 1 else None
    shape_out = outputs[0].shape if outputs else None
    if (
        shape_in is None
        or len(shape_in) != 4
        or shape_in[1] != channels
        or shape_out is None
        or len(shape_out) != 4
        or shape_out[1] != 2
    ):
        raise DataError(
            path,
            f"not a prokd slice model (inputs {[i.shape for i in inputs]}, outputs "
            f"{[o.shape for o in outputs]}; expected one (B, {channels}, H, W) input and "
            "(B, 2, H, W) logits)",
        )


def _onnx(path: Path, declared: PreprocessSettings | None = None) -> LoadedModel:
    session = onnx_session(path)
    if declared is None:
        metadata = prokd_metadata(session)
        if metadata is None:
            raise DataError(path, "ONNX model without prokd metadata (export it with prokd export)")
        plan = parse_metadata(metadata, path)
    else:
        plan = ModelPlan(path.stem, declared)
    settings = plan.settings
    _check_slice_model(session, path, settings.channels)
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return LoadedModel(
        plan.name,
        "onnx",
        run,
        settings,
        path,
        parameters=plan.parameters,
        threshold=plan.threshold,
        qc_limits=plan.qc_limits,
    )


def _torch_device(device: torch.device | str | None) -> torch.device:
    import torch

    from prokd.devices import resolve_device

    if isinstance(device, str):
        return resolve_device(device)
    return device or torch.device("cpu")


def _torchscript(path: Path, device: torch.device) -> LoadedModel:
    import torch

    from prokd.inference.predict import torch_slice_model

    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as err:
        raise DataError(path, f"cannot load TorchScript model ({error_summary(err)})") from None
    plan = parse_metadata(extra[TORCHSCRIPT_EXTRA], path)
    return LoadedModel(
        plan.name,
        "torchscript",
        torch_slice_model(module),
        plan.settings,
        path,
        module,
        threshold=plan.threshold,
        qc_limits=plan.qc_limits,
    )


def load_onnx_slice_model(path: str | Path, settings: PreprocessSettings) -> LoadedModel:
    """A 2D ONNX slice model that carries no prokd metadata, run with the declared
    preprocessing ``settings``: one (B, 1, H, W) input, (B, 2, H, W) logits.

    Raises:
        DataError: missing, unreadable, or not a slice model of that shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "model file not found")
    return _onnx(path, settings)


def load_model_file(path: str | Path, device: torch.device | str | None = None) -> LoadedModel:
    """A checkpoint (``.pt``), run folder, ONNX (``.onnx``) or TorchScript (``.ts``) file,
    or a bundled model.

    Torch models run on ``device`` (a device, or a ``--device`` choice; default CPU); ONNX
    models on onnxruntime's CPU provider.

    A bundled model's name (``prostate-t2``, see :mod:`prokd.inference.bundled`) stands for
    its file.

    Raises:
        DataError: missing or unreadable model.
    """
    path = resolve_model_path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise DataError(path, "model file not found")
        return _onnx(path)
    if path.suffix in (".ts", ".torchscript"):
        if not path.is_file():
            raise DataError(path, "model file not found")
        return _torchscript(path, _torch_device(device))
    from prokd.inference.predict import torch_slice_model
    from prokd.inference.trained import load_trained_model

    trained = load_trained_model(path, _torch_device(device))
    return LoadedModel(
        trained.name,
        "checkpoint",
        torch_slice_model(trained.network),
        trained.settings,
        trained.path,
        trained.network,
    )


def onnx_taps(path: str | Path) -> list[str]:
    """The feature taps a prokd ONNX export outputs after its logits (none: ``[]``; also
    for a file that is missing or not a prokd export)."""
    path = Path(path)
    if path.suffix != ".onnx" or not path.is_file():
        return []
    try:
        metadata = prokd_metadata(onnx_session(path))
    except DataError:
        return []
    try:
        return list(json.loads(metadata).get("taps", [])) if metadata else []
    except (json.JSONDecodeError, AttributeError, TypeError):
        return []


def onnx_parameters(path: str | Path) -> int | None:
    """Parameters of an ONNX model: as a prokd export's metadata states them, else counted
    from the graph's initializers where the ``onnx`` package is installed, else ``None``."""
    session = onnx_session(Path(path))
    metadata = prokd_metadata(session)
    if metadata is not None:
        stated = json.loads(metadata).get("parameters")
        if stated is not None:
            return int(stated)
    try:
        import onnx
    except ModuleNotFoundError:
        return None
    return initializer_elements(onnx.load(str(path)))


def initializer_elements(proto: onnx.ModelProto) -> int:
    """Parameters stored in an ONNX graph: the elements of its initializers."""
    return sum(math.prod(tensor.dims) for tensor in proto.graph.initializer)


def bundled_table(names: list[str] | None = None) -> str:
    """``prokd models``: the bundled models, with their network, input, size and parameters.

    Raises:
        ProkdError: an unknown name or a missing file.
    """
    lines = ["bundled models (use the name as MODEL in predict, evaluate, bench):"]
    for name in names or list(BUNDLED):
        loaded = load_model_file(bundled_path(name))
        pre = loaded.settings
        parameters = "?" if loaded.parameters is None else f"{loaded.parameters:,}"
        lines.append(
            f"{name:<12} {loaded.name}, {parameters} parameters, "
            f"{loaded.path.stat().st_size / 1e6:.1f} MB; slices {pre.size}x{pre.size} over "
            f"{pre.fov_mm:g} mm centred on the {pre.crop_centre}, {pre.channels} input "
            f"channel(s), {pre.normalise} intensities"
        )
        lines.append(f"{'':<12} {BUNDLED[name]}")
    return "\n".join(lines)
