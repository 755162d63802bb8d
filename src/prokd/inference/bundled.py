"""Models shipped inside the package, used by name with no training and no download.

``prokd predict prostate-t2 IN OUT`` (and ``evaluate``, ``bench``) finds the ONNX export
``bundled/prostate-t2.onnx`` beside this module; its preprocessing travels in its metadata.
How each was made, on which data and with which results: ``docs/model-card.md``.
"""

from __future__ import annotations

from pathlib import Path

from prokd.errors import ProkdError

BUNDLED_DIR = Path(__file__).with_name("bundled")
BEST = "best.pt"  # the checkpoint a finished run folder stands for
EXPORT_SUFFIXES = (".onnx", ".ts", ".torchscript")  # files of prokd export (and other ONNX)
BANK_PREFIX = "bank:"  # bank:DIR names a view bank as a teacher

# Bundled model name -> one line on what it is (the model card has the rest).
BUNDLED = {
    "prostate-t2": (
        "whole prostate gland on axial T2-weighted MRI; a 2D student distilled from TAPS "
        "(a public 3D model) on real scans; see docs/model-card.md"
    ),
    "prostate-localiser": (
        "coarse gland finder over a whole volume (5 mm pixels, 480 mm field of view), run "
        "before every prediction to place the slice grid; see docs/model-card.md"
    ),
}


def bundled_path(name: str) -> Path:
    """The ONNX file of a bundled model.

    Raises:
        ProkdError: unknown name, or the file is missing from the installed package.
    """
    if name not in BUNDLED:
        raise ProkdError(f"unknown bundled model {name!r} (bundled: {', '.join(BUNDLED)})")
    path = BUNDLED_DIR / f"{name}.onnx"
    if not path.is_file():
        raise ProkdError(f"{path}: bundled model file missing; reinstall prokd")
    return path


def model_kind(spec: str | Path) -> str:
    """What a model spec names, told in this one place, names first: ``bundled`` (a
    bundled model's name, whatever the working directory holds: ``./NAME`` is a file of
    that name), ``taps``, ``declared`` (a YAML file declaring an ONNX model and its
    preprocessing), ``export`` (an exported ``.onnx`` or ``.ts`` file), ``callable``
    (``module:function``, where no such path exists), ``bank`` (``bank:DIR``, a view bank
    folder: its teacher's maps, ``prokd bank``; it may not exist yet when a config is read),
    or ``checkpoint`` (a ``.pt`` file or a run folder)."""
    text = str(spec)
    if text in BUNDLED:
        return "bundled"
    if text == "taps":
        return "taps"
    if text.endswith((".yaml", ".yml")):
        return "declared"
    if text.endswith(EXPORT_SUFFIXES):
        return "export"
    if text.startswith(BANK_PREFIX):
        return "bank"
    if ":" in text and not Path(text).exists():
        return "callable"
    return "checkpoint"


def resolve_model_path(spec: str | Path) -> Path:
    """The bundled model's file for a bundled name (never a file or folder of that name in
    the working directory), else ``spec`` as a path."""
    return bundled_path(str(spec)) if model_kind(spec) == "bundled" else Path(spec)


def model_file(spec: str | Path) -> Path:
    """The one file a model spec stands for: a bundled model's, a run folder's best
    checkpoint, or the path itself (which may not exist)."""
    path = resolve_model_path(spec)
    return path / BEST if path.is_dir() else path
