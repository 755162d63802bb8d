"""``prokd predict``: segment volume files and write masks with the input's exact geometry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prokd.data.io import (
    VOLUME_SUFFIXES,
    image_from_array,
    is_volume_file,
    read_volume,
    volume_stem,
    write_volume,
)
from prokd.data.layouts import image_volumes
from prokd.data.validate import check_finite
from prokd.errors import DataError, warn_all
from prokd.inference.model_files import LoadedModel, load_model_file
from prokd.inference.postprocess import MaskQC, postprocess_mask, quality_control
from prokd.inference.predict import predict_volume
from prokd.io_atomic import atomic_path

if TYPE_CHECKING:
    import torch


@dataclass
class Segmented:
    """What was written for one input volume."""

    source: Path
    mask: Path
    seconds: float
    qc: MaskQC


def _suffix(path: Path) -> str:
    return path.name[len(volume_stem(path)) :]


def probability_path(mask_path: Path) -> Path:
    """``<stem>_probabilities<suffix>`` beside the mask."""
    return mask_path.with_name(f"{volume_stem(mask_path)}_probabilities{_suffix(mask_path)}")


def qc_path(mask_path: Path) -> Path:
    """``<stem>.qc.json`` beside the mask."""
    return mask_path.with_name(f"{volume_stem(mask_path)}.qc.json")


def plan_outputs(source: str | Path, target: str | Path) -> list[tuple[Path, Path, int | None]]:
    """Triples (input volume, output mask, T2 channel): a file to a file, a folder to a folder.

    A folder in a known dataset layout contributes its images only (not its masks; the T2
    channel of 4D MSD images); any other folder is searched recursively for volume files,
    skipping files named like masks (``*_segmentation``, ``*_mask``, ``labels*/`` ...).
    Outputs mirror the inputs' paths relative to the input folder.

    Raises:
        DataError: missing input, no volume in a folder, a folder input with a file output,
            or a file output without a volume suffix.
    """
    source, target = Path(source), Path(target)
    if source.is_file():
        if target.is_dir():
            return [(source, target / source.name, None)]
        if not is_volume_file(target):
            raise DataError(target, f"output must end in one of {', '.join(VOLUME_SUFFIXES)}")
        return [(source, target, None)]
    if not source.is_dir():
        raise DataError(source, "input not found")
    if is_volume_file(target):
        raise DataError(target, "a folder input needs an output folder, not a file name")
    inputs = image_volumes(source)
    return [
        (p, target / p.resolve().relative_to(source.resolve()), channel) for p, channel in inputs
    ]


def check_overwrite(
    pairs: list[tuple[Path, Path, int | None]], probabilities: bool, overwrite: bool
) -> None:
    """Refuse to replace existing outputs unless ``overwrite``.

    Raises:
        DataError: naming the first output that exists.
    """
    if overwrite:
        return
    for _, mask, _ in pairs:
        for path in (mask, qc_path(mask), *([probability_path(mask)] if probabilities else [])):
            if path.exists():
                raise DataError(path, "output exists; pass --overwrite to replace it")


def segment_file(
    model: LoadedModel,
    source: Path,
    mask_path: Path,
    probabilities: bool = False,
    postprocess: bool = True,
    channel: int | None = None,
    batch_size: int = 32,
) -> Segmented:
    """Predict one volume; write mask (uint8 0/1), optional probabilities and the QC sidecar."""
    image = read_volume(source, channel)
    check_finite(image, source, channel)
    start = time.perf_counter()
    prob = predict_volume(model.slice_model, image, model.settings, batch_size)
    mask = (prob >= 0.5).astype(np.uint8)
    if postprocess:
        mask = postprocess_mask(mask)
    seconds = time.perf_counter() - start
    write_volume(image_from_array(mask, image), mask_path)
    if probabilities:
        write_volume(image_from_array(prob.astype(np.float32), image), probability_path(mask_path))
    qc = quality_control(mask, tuple(reversed(image.GetSpacing())))
    sidecar = {
        "source": str(source),
        "model": model.name,
        "model_file": str(model.path),
        "postprocess": postprocess,
        "seconds": seconds,
        **qc.as_dict(),
    }
    with atomic_path(qc_path(mask_path)) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=1))
    return Segmented(source, mask_path, seconds, qc)


def segment_inputs(
    model_path: str | Path,
    source: str | Path,
    target: str | Path,
    probabilities: bool = False,
    postprocess: bool = True,
    channel: int | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    device: torch.device | str | None = None,
    crop_centre: str | None = None,
) -> Iterator[Segmented]:
    """``prokd predict``: load the model once, then segment every input in turn.

    Every output is planned and checked for overwriting before the first prediction. Mask QC
    findings are issued as :class:`~prokd.errors.DataWarning` naming the mask.
    ``crop_centre`` (``image`` or ``body``) replaces the model's own slice-grid placement.

    Raises:
        DataError: unreadable model or input, an existing output without ``overwrite``.
    """
    model = load_model_file(model_path, device)
    if crop_centre is not None:
        settings = replace(model.settings, crop_centre=crop_centre)
        model = replace(model, settings=settings)
    pairs = plan_outputs(source, target)
    check_overwrite(pairs, probabilities, overwrite)
    for volume, mask, layout_channel in pairs:
        done = segment_file(
            model,
            volume,
            mask,
            probabilities,
            postprocess,
            channel if channel is not None else layout_channel,
            batch_size,
        )
        warn_all(f"{mask}: {warning}" for warning in done.qc.warnings)
        yield done
