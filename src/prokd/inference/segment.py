"""``prokd predict``: segment volume files or DICOM series and write masks (NIfTI, MHA,
NRRD, DICOM SEG or RT Structure Set) with the input's exact geometry.

Each volume goes through :mod:`prokd.inference.pipeline` (post-processing and QC run on the
axial view, so the mask does not depend on the order a file stores its axes in; it goes
back to the file's own axes); this module plans the outputs and writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from prokd.data.inputs import VolumeInput, find_inputs
from prokd.data.io import (
    VOLUME_SUFFIXES,
    image_from_array,
    is_volume_file,
    volume_stem,
    write_volume,
)
from prokd.errors import DataError, warn_all
from prokd.inference.model_files import LoadedModel, load_model_file
from prokd.inference.pipeline import Segmentation, read_stage, segment_image
from prokd.inference.postprocess import (
    MaskQC,
)
from prokd.io_atomic import atomic_path

if TYPE_CHECKING:
    import torch

DICOM_SEG_SUFFIX = ".dcm"
OUTPUT_FORMATS = {"nifti": ".nii.gz", "dicom-seg": DICOM_SEG_SUFFIX, "rtstruct": DICOM_SEG_SUFFIX}


@dataclass
class Segmented:
    """What was written for one input volume."""

    source: VolumeInput
    mask: Path
    seconds: float
    qc: MaskQC


def _output_stem(path: Path) -> str:
    name = path.name
    return name[: -len(DICOM_SEG_SUFFIX)] if is_dicom_seg(path) else volume_stem(path)


def is_dicom_seg(path: Path) -> bool:
    """Whether an output path asks for a DICOM object, a SEG or (with ``--output-format
    rtstruct``) an RT Structure Set: it ends in ``.dcm``."""
    return path.name.lower().endswith(DICOM_SEG_SUFFIX)


def probability_path(mask_path: Path) -> Path:
    """``<stem>_probabilities<suffix>`` beside the mask (NIfTI beside a DICOM SEG)."""
    suffix = ".nii.gz" if is_dicom_seg(mask_path) else mask_path.name[len(volume_stem(mask_path)) :]
    return mask_path.with_name(f"{_output_stem(mask_path)}_probabilities{suffix}")


def qc_path(mask_path: Path) -> Path:
    """``<stem>.qc.json`` beside the mask."""
    return mask_path.with_name(f"{_output_stem(mask_path)}.qc.json")


def _output_name(volume: VolumeInput, root: Path, output_format: str | None) -> Path:
    """Where a folder (or file) input's mask goes under the output folder."""
    stem = volume.output_stem(root)
    if output_format is None and volume.series is None:
        return stem.with_name(volume.path.name)  # the input's own format
    return stem.with_name(stem.name + OUTPUT_FORMATS[output_format or "nifti"])


def plan_outputs(
    source: str | Path,
    target: str | Path,
    output_format: str | None = None,
    series: str | None = None,
) -> list[tuple[VolumeInput, Path]]:
    """Pairs (input volume, output mask): a file or one DICOM series to a file, a folder to
    a folder.

    Inputs are found by :func:`prokd.data.inputs.find_inputs` (volume files, or the chosen
    series of every DICOM study). Outputs in a folder mirror the inputs' paths relative to
    the input folder; their format is ``output_format`` (``nifti`` or ``dicom-seg``), by
    default the input file's own format (NIfTI for DICOM input). A file output picks its
    format by its suffix: a volume suffix, or ``.dcm`` for a DICOM SEG (an RT Structure Set
    with ``output_format`` ``rtstruct``).

    Raises:
        DataError: missing input, no volume in a folder, several volumes for a file output,
            a file output without a known suffix or of another format than asked, or a
            DICOM output for a non-DICOM input.
    """
    source, target = Path(source), Path(target)
    inputs = find_inputs(source, series)
    root = source if source.is_dir() else source.parent
    file_output = is_volume_file(target) or is_dicom_seg(target)
    if source.is_file() and not (target.is_dir() or file_output):
        raise DataError(
            target, f"output must end in one of {', '.join(VOLUME_SUFFIXES)} or {DICOM_SEG_SUFFIX}"
        )
    if target.is_dir() or not file_output:
        pairs = [(v, target / _output_name(v, root, output_format)) for v in inputs]
    elif len(inputs) > 1 or (inputs[0].series is None and source.is_dir()):
        raise DataError(target, "a folder input needs an output folder, not a file name")
    else:
        if output_format is not None and is_dicom_seg(target) != (output_format != "nifti"):
            raise DataError(target, f"the suffix does not fit --output-format {output_format}")
        pairs = [(inputs[0], target)]
    for volume, mask in pairs:
        if is_dicom_seg(mask) and volume.series is None:
            kind = "an RT Structure Set" if output_format == "rtstruct" else "a DICOM SEG"
            raise DataError(mask, f"{kind} output needs a DICOM series as input")
    return pairs


def check_overwrite(
    pairs: list[tuple[VolumeInput, Path]], probabilities: bool, overwrite: bool
) -> None:
    """Refuse to replace existing outputs unless ``overwrite``.

    Raises:
        DataError: naming the first output that exists.
    """
    if overwrite:
        return
    for _, mask in pairs:
        for path in (mask, qc_path(mask), *([probability_path(mask)] if probabilities else [])):
            if path.exists():
                raise DataError(path, "output exists; pass --overwrite to replace it")


def write_mask(
    mask: np.ndarray,
    image: sitk.Image,
    volume: VolumeInput,
    path: Path,
    model_name: str,
    output_format: str | None = None,
) -> None:
    """Write the mask on the input's grid: for a ``.dcm`` path a DICOM SEG (an RT Structure
    Set if ``output_format`` is ``rtstruct``), else a volume."""
    if is_dicom_seg(path) and output_format == "rtstruct":
        from prokd.inference.dicom_rtstruct import write_rtstruct

        write_rtstruct(mask, volume.series, path, model_name)
    elif is_dicom_seg(path):
        from prokd.inference.dicom_seg import write_dicom_seg

        write_dicom_seg(mask, volume.series, path, model_name)
    else:
        write_volume(image_from_array(mask, image), path)


def segment_file(
    model: LoadedModel,
    volume: VolumeInput,
    mask_path: Path,
    probabilities: bool = False,
    postprocess: bool = True,
    batch_size: int = 32,
    output_format: str | None = None,
) -> Segmented:
    """Predict one volume; write mask (uint8 0/1; ``output_format`` as for
    :func:`write_mask`), optional probabilities and the QC sidecar."""
    image = read_stage(volume)
    result = segment_image(model, image, postprocess, batch_size, volume.path)
    write_mask(result.mask, image, volume, mask_path, model.label, output_format)
    if probabilities:
        write_volume(image_from_array(result.probabilities, image), probability_path(mask_path))
    with atomic_path(qc_path(mask_path)) as tmp:
        tmp.write_text(json.dumps(qc_record(volume, model, result, postprocess), indent=1))
    return Segmented(volume, mask_path, result.seconds, result.qc)


def qc_record(
    volume: VolumeInput, model: LoadedModel, result: Segmentation, postprocess: bool
) -> dict[str, object]:
    """The QC sidecar of one prediction: its input, series, model, time and QC (what
    ``<mask>.qc.json`` holds, and the DICOM node's ``qc.json``)."""
    return {
        "source": str(volume.path),
        **({"series": volume.series.summary()} if volume.series else {}),
        "model": model.name,
        "model_file": str(model.path),
        "postprocess": postprocess,
        "seconds": result.seconds,
        **result.qc.as_dict(),
    }


def with_crop_centre(model: LoadedModel, crop_centre: str | None) -> LoadedModel:
    """``model`` with its slice grid centred on the ``image``, the ``body`` or the
    localiser's ``gland`` (``None``: as the model was trained)."""
    if crop_centre is None:
        return model
    return replace(model, settings=replace(model.settings, crop_centre=crop_centre))


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
    output_format: str | None = None,
    series: str | None = None,
) -> Iterator[Segmented]:
    """``prokd predict``: load the model once, then segment every input in turn.

    Every output is planned and checked for overwriting before the first prediction. Mask QC
    findings are issued as :class:`~prokd.errors.DataWarning` naming the mask.
    The slice grid of every model is placed by the localiser (``crop_centre: gland``)
    unless ``crop_centre`` (``image`` or ``body``) asks for another placement;
    ``channel`` the T2 channel of 4D inputs; ``series`` (a SeriesInstanceUID or number) the
    DICOM series chosen in each study; ``output_format`` the format of masks written into
    an output folder.

    Raises:
        DataError: unreadable model or input, an existing output without ``overwrite``.
    """
    model = with_crop_centre(load_model_file(model_path, device), crop_centre or "gland")
    pairs = plan_outputs(source, target, output_format, series)
    check_overwrite(pairs, probabilities, overwrite)
    for volume, mask in pairs:
        if channel is not None and volume.series is None:
            volume = replace(volume, channel=channel)
        done = segment_file(
            model, volume, mask, probabilities, postprocess, batch_size, output_format
        )
        warn_all(f"{mask}: {warning}" for warning in done.qc.warnings)
        if not done.qc.reliable:
            warn_all([f"{mask}: unreliable mask: {'; '.join(done.qc.reasons)}"])
        yield done
