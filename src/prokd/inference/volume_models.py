"""Models prokd did not train, and trained slice models, behind one front door:
:class:`VolumeModel` (a name, a threshold, a fingerprint, and the gland probabilities of a
whole volume on its own grid). :func:`load_volume_model` loads any of them by name.

Four kinds:

- an ONNX file with declared preprocessing (:class:`VolumePreprocessing`: orientation,
  target spacing, intensity normalisation, foreground crop, patch size), run patch-wise with
  MONAI's ``sliding_window_inference``, its output mapped back with MONAI's inverse
  transforms; declared in a YAML file (``onnx: model.onnx`` plus preprocessing keys);
- a Python callable named ``module:function`` that takes a ``SimpleITK.Image`` and returns
  probabilities as a (z, y, x) array on the image's grid;
- a 2D slice model run slice by slice as ``prokd predict`` does: prokd's own ONNX or
  TorchScript export, a checkpoint, a run folder or a bundled model (preprocessing
  embedded), an ONNX file with declared preprocessing (``slice_onnx: model.onnx`` and
  ``preprocess:`` settings in a YAML file), or a torch network in memory;
- ``taps``: TAPS (lavlab-taps 1.1.2, a MONAI SegResNetDS shipped as ONNX) with its own
  preprocessing, so that its probabilities thresholded as ``taps segment`` does give the mask
  ``taps segment`` writes (install it with ``make taps``).

The ONNX and callable kinds need the ``train`` extra (MONAI, torch); slice models exported
to ONNX run on onnxruntime alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import SimpleITK as sitk

from prokd.data.io import file_sha256
from prokd.data.preprocess import PreprocessSettings
from prokd.errors import ConfigError
from prokd.inference.bank_model import BankVolumeModel
from prokd.inference.bundled import BANK_PREFIX, model_kind
from prokd.inference.model_files import (
    LoadedModel,
    load_model_file,
    load_onnx_slice_model,
    onnx_session,
    onnx_taps,
)
from prokd.inference.pipeline import Placement, place, predict_volume
from prokd.inference.postprocess import GLAND_THRESHOLD
from prokd.inference.predict import SliceModel
from prokd.yaml_files import read_yaml

if TYPE_CHECKING:
    import torch


class VolumeModel(Protocol):
    """Anything that segments a whole volume: what evaluation and distillation take."""

    name: str
    kind: str  # how reports describe it: "onnx", "checkpoint", "volume model" ...
    threshold: float  # probability at which its masks are cut
    last_seconds: float  # what the last ``probabilities`` call cost, preprocessing included

    def fingerprint(self) -> str:
        """What its outputs depend on (model file contents, preprocessing)."""

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        """Gland probabilities (z, y, x) float32 on ``image``'s grid."""


TAPS_VERSION = "1.1.2"
NORMALISATIONS = ("zscore", "nonzero-zscore", "none")
ACTIVATIONS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class VolumePreprocessing:
    """How a 3D ONNX teacher expects its input, and how its output becomes probabilities.

    Attributes:
        orientation: axis codes the volume is reoriented to (MONAI ``Orientation``).
        spacing_mm: voxel spacing it is resampled to (bilinear).
        normalise: ``zscore`` over the volume, over its non-zero voxels, or ``none``.
        crop_margin: crop to the non-zero foreground with this margin (voxels); ``None``:
            no crop.
        roi_size: patch size of the sliding window.
        overlap: overlap of neighbouring windows.
        blend: ``gaussian`` or ``constant`` weighting of overlapping windows.
        blur_sigma: Gaussian blur (voxels) of the logits before the activation; 0: none.
        activation: ``sigmoid`` (one output channel) or ``softmax`` (channel 1 is the gland).
    """

    orientation: str = "RAS"
    spacing_mm: tuple[float, float, float] = (0.8, 0.8, 3.0)
    normalise: str = "nonzero-zscore"
    crop_margin: int | None = None
    roi_size: tuple[int, int, int] = (128, 128, 32)
    overlap: float = 0.5
    blend: str = "gaussian"
    blur_sigma: float = 0.0
    activation: str = "sigmoid"


TAPS_PREPROCESSING = VolumePreprocessing(crop_margin=5, blur_sigma=2.5)  # taps.inference's
TAPS_THRESHOLD = 0.55  # taps segment's probability threshold


def _lps_to_ras_affine(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel-to-RAS affine of a SimpleITK image (whose physical space is LPS)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


class OnnxVolumeModel:
    """A 3D ONNX segmentation model with declared preprocessing (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        preprocessing: VolumePreprocessing,
        name: str = "",
        threshold: float = GLAND_THRESHOLD,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: ONNX model file not found")
        self.preprocessing = preprocessing
        self.name = name or self.path.stem
        self.kind = "volume model"
        self.threshold = threshold  # probability at which its own masks are cut
        self.last_seconds = 0.0
        self._session = None

    def fingerprint(self) -> str:
        """Contents of the model file and the preprocessing: what its outputs depend on."""
        return f"{file_sha256(self.path)}:{json.dumps(asdict(self.preprocessing))}"

    def _transforms(self):
        from monai.transforms import (
            Compose,
            CropForegroundd,
            NormalizeIntensityd,
            Orientationd,
            Spacingd,
        )

        p = self.preprocessing
        steps = [
            Orientationd(keys="image", axcodes=p.orientation, labels=None),
            Spacingd(keys="image", pixdim=p.spacing_mm, mode="bilinear"),
        ]
        if p.normalise != "none":
            nonzero = p.normalise == "nonzero-zscore"
            steps.append(NormalizeIntensityd(keys="image", nonzero=nonzero, channel_wise=True))
        if p.crop_margin is not None:
            steps.append(CropForegroundd(keys="image", source_key="image", margin=p.crop_margin))
        return Compose(steps)

    def _predictor(self) -> Callable:
        import torch

        if self._session is None:
            self._session = onnx_session(self.path, threads=torch.get_num_threads())
        session = self._session
        input_name = session.get_inputs()[0].name

        def run(patch: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {input_name: patch.numpy()})[0])

        return run

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        """Gland probabilities (z, y, x) float32 on ``image``'s grid."""
        import torch
        from monai.data import MetaTensor
        from monai.inferers import sliding_window_inference
        from scipy import ndimage

        start = time.perf_counter()

        p = self.preprocessing
        array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
        tensor = MetaTensor(
            torch.from_numpy(np.ascontiguousarray(array))[None],
            affine=torch.as_tensor(_lps_to_ras_affine(image)),
        )
        transforms = self._transforms()
        data = transforms({"image": tensor})
        with torch.inference_mode():
            logits = sliding_window_inference(
                data["image"][None].as_tensor(),
                roi_size=p.roi_size,
                sw_batch_size=1,
                predictor=self._predictor(),
                overlap=p.overlap,
                mode=p.blend,
            )[0]
        if p.blur_sigma > 0:
            sigma = (0.0, p.blur_sigma, p.blur_sigma, p.blur_sigma)
            blurred = ndimage.gaussian_filter(logits.numpy(), sigma, mode="nearest")
            logits = torch.from_numpy(blurred)
        prediction = MetaTensor(
            logits, meta=data["image"].meta, applied_operations=data["image"].applied_operations
        )
        back = transforms.inverse({"image": prediction})["image"].as_tensor()
        if p.activation == "sigmoid":
            gland = torch.sigmoid(back[0])
        else:
            gland = torch.softmax(back, dim=0)[1]
        result = np.ascontiguousarray(gland.numpy().transpose(2, 1, 0), dtype=np.float32)
        self.last_seconds = time.perf_counter() - start
        return result


class CallableVolumeModel:
    """A Python function ``module:function`` mapping a ``SimpleITK.Image`` to probabilities
    (z, y, x) on its grid."""

    def __init__(self, spec: str) -> None:
        module_name, _, function_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(f"{spec}: cannot import module {module_name!r} ({err})") from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ConfigError(f"{spec}: module {module_name!r} has no function {function_name!r}")
        self.name, self.function = spec, function
        self.kind = "volume model"
        self.threshold = GLAND_THRESHOLD
        self.last_seconds = 0.0
        self.source = Path(module.__file__) if getattr(module, "__file__", None) else None

    def fingerprint(self) -> str:
        """The function's name and the contents of its module's file."""
        return f"{self.name}:{file_sha256(self.source) if self.source else ''}"

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        """The function's probabilities, checked against the image's shape.

        Raises:
            ConfigError: the function returned another shape than the image's (z, y, x).
        """
        start = time.perf_counter()
        result = np.asarray(self.function(image), dtype=np.float32)
        self.last_seconds = time.perf_counter() - start
        expected = tuple(reversed(image.GetSize()))
        if result.shape != expected:
            raise ConfigError(
                f"{self.name}: returned probabilities of shape {result.shape}; "
                f"the image's (z, y, x) shape is {expected}"
            )
        return result


class SharedSlices:
    """The preprocessed slices of the volume last seen, per preprocessing settings, with
    what computing them cost: slice models that share settings preprocess a volume once
    when they segment it one after the other (an experiment evaluates ten models a case)."""

    def __init__(self) -> None:
        self._image: sitk.Image | None = None
        self._slices: dict[PreprocessSettings, tuple[Placement, float]] = {}

    def slices(self, image: sitk.Image, settings: PreprocessSettings) -> tuple[Placement, float]:
        """The slices of ``image`` under ``settings``
        (:func:`~prokd.inference.localise.place`), and their seconds."""
        if image is not self._image:
            self._image, self._slices = image, {}
        if settings not in self._slices:
            start = time.perf_counter()
            placement = place(image, settings)
            self._slices[settings] = (placement, time.perf_counter() - start)
        return self._slices[settings]


class SliceVolumeModel:
    """A 2D slice model run slice by slice on its own preprocessing, as ``prokd predict``
    runs it: a loaded model file, or a torch network in memory with its settings.
    ``shared`` lets models of one evaluation preprocess each volume once; each still counts
    the preprocessing in its ``last_seconds``. ``mirror_average``: the probabilities are
    the mean of the slices' and of their left-right mirror's (test-time augmentation; the
    mirrored pass QC runs anyway)."""

    def __init__(
        self,
        name: str,
        slice_model: SliceModel | torch.nn.Module,
        settings: PreprocessSettings,
        fingerprint: str,
        kind: str,
        shared: SharedSlices | None = None,
        threshold: float = GLAND_THRESHOLD,
        mirror_average: bool = False,
    ) -> None:
        self.name, self.kind, self.threshold = name, kind, threshold
        self.slice_model, self.settings, self._fingerprint = slice_model, settings, fingerprint
        self.shared = shared or SharedSlices()
        self.mirror_average = mirror_average
        self.last_seconds = 0.0

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, name: str | None = None, mirror_average: bool = False
    ) -> SliceVolumeModel:
        """A model file loaded by :func:`~prokd.inference.model_files.load_model_file`, cut
        at the threshold its plan carries."""
        fingerprint = f"{file_sha256(loaded.path)}:{loaded.settings.fingerprint()}"
        if mirror_average:
            fingerprint += ":mirror-average"
        return cls(
            name or loaded.name,
            loaded.slice_model,
            loaded.settings,
            fingerprint,
            loaded.kind,
            threshold=loaded.threshold,
            mirror_average=mirror_average,
        )

    def fingerprint(self) -> str:
        """Contents of the model file and the preprocessing it runs with."""
        return self._fingerprint

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        """Gland probabilities (z, y, x) on ``image``'s grid."""
        placement, preprocess_seconds = self.shared.slices(image, self.settings)
        start = time.perf_counter()
        prediction = predict_volume(
            self.slice_model,
            image,
            self.settings,
            mirrored=self.mirror_average,
            placement=placement,
        )
        result = prediction.probabilities
        if prediction.mirrored is not None:
            result = 0.5 * (result + prediction.mirrored)
        self.last_seconds = preprocess_seconds + time.perf_counter() - start
        return result


def taps_model_file() -> Path:
    """The ONNX file inside the installed lavlab-taps package.

    Raises:
        ConfigError: lavlab-taps is not installed.
    """
    spec = importlib.util.find_spec("taps")
    model = Path(spec.origin).parent / "resources" / "model_v1.onnx" if spec else None
    if model is None or not model.is_file():
        raise ConfigError(
            f"taps: lavlab-taps {TAPS_VERSION} is not installed; run `make taps` "
            f"(pip install --no-deps lavlab-taps=={TAPS_VERSION})"
        )
    return model


def _slice_model_from(values: dict[str, Any], path: Path) -> SliceVolumeModel:
    unknown = sorted(set(values) - {"slice_onnx", "preprocess"})
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (known: slice_onnx, preprocess)")
    preprocess = values.get("preprocess")
    if not isinstance(preprocess, dict):
        raise ConfigError(f"{path}: preprocess: missing (the settings the model expects)")
    try:
        settings = PreprocessSettings.from_dict(preprocess)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: preprocess: {err}") from None
    model = path.parent / str(values["slice_onnx"])
    if not model.is_file():
        raise ConfigError(f"{model}: model file not found")
    return SliceVolumeModel.from_loaded(load_onnx_slice_model(model, settings), model.stem)


def _preprocessing_from(values: dict[str, Any], path: Path) -> VolumePreprocessing:
    known = {f.name for f in fields(VolumePreprocessing)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (known: onnx, {', '.join(known)})")
    for key in ("spacing_mm", "roi_size"):
        if key in values:
            value = values[key]
            if not (isinstance(value, list) and len(value) == 3):
                raise ConfigError(f"{path}: {key}: expected a list of 3 numbers, got {value!r}")
            values[key] = tuple(value)
    p = VolumePreprocessing(**values)
    if p.normalise not in NORMALISATIONS:
        raise ConfigError(f"{path}: normalise: must be one of {', '.join(NORMALISATIONS)}")
    if p.activation not in ACTIVATIONS:
        raise ConfigError(f"{path}: activation: must be one of {', '.join(ACTIVATIONS)}")
    if p.blend not in ("gaussian", "constant"):
        raise ConfigError(f"{path}: blend: must be gaussian or constant")
    return p


def is_volume_model(spec: str) -> bool:
    """Whether a ``distill.teachers`` entry names a model whose outputs alone teach
    (``taps``, a ``.yaml`` file, an exported slice model or ``module:function``) rather
    than a prokd run folder, checkpoint or ONNX export with feature taps, whose features
    teach too."""
    kind = model_kind(spec)
    if kind == "export" and spec.endswith(".onnx") and onnx_taps(spec):
        return False  # a site teacher file: loaded as a slice teacher with its taps
    return kind in ("taps", "declared", "export", "callable", "bundled", "bank")


def load_volume_model(spec: str | Path, device: torch.device | str | None = None) -> VolumeModel:
    """The model ``spec`` names: ``taps``, a YAML file declaring an ONNX model and its
    preprocessing, ``module:function``, ``bank:DIR`` (a view bank's maps), or any
    model file ``prokd predict`` takes (a bundled model's name, a checkpoint, a run folder,
    an exported ``.onnx`` or ``.ts``).

    Raises:
        ConfigError: naming the file or key: a missing file, bad YAML, unknown keys, bad
            values, TAPS not installed, or a callable that cannot be imported.
        DataError: an unreadable model file.
    """
    spec, kind = str(spec), model_kind(spec)
    if kind == "taps":
        return OnnxVolumeModel(taps_model_file(), TAPS_PREPROCESSING, "taps", TAPS_THRESHOLD)
    if kind == "declared":
        path = Path(spec)
        values = read_yaml(path, "volume model file")
        if isinstance(values, dict) and "slice_onnx" in values:
            return _slice_model_from(values, path)
        if not isinstance(values, dict) or "onnx" not in values:
            raise ConfigError(
                f"{path}: onnx: missing (a 3D model file relative to this file, or slice_onnx "
                "for a 2D one)"
            )
        model = path.parent / str(values.pop("onnx"))
        return OnnxVolumeModel(model, _preprocessing_from(values, path), name=path.stem)
    if kind == "callable":
        return CallableVolumeModel(spec)
    if kind == "bank":
        return BankVolumeModel(spec.removeprefix(BANK_PREFIX))
    if kind == "export" and not Path(spec).is_file():
        raise ConfigError(f"{spec}: model file not found")
    loaded = load_model_file(spec, device)
    name = Path(spec).stem if kind == "export" else loaded.name
    return SliceVolumeModel.from_loaded(loaded, name)
