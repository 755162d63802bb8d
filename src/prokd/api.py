"""The one-call Python entry point: ``prokd.segment(image_or_path, model="prostate-t2")``.

import prokd
result = prokd.segment("scan.nii.gz")            # or a DICOM folder, or a SimpleITK image
result.mask                                     # SimpleITK uint8 image on the input's grid
result.probabilities                            # float32 gland probabilities, same grid
result.qc                                       # gland volume, border contact, warnings
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from prokd.data.inputs import find_inputs
from prokd.data.io import image_from_array
from prokd.data.validate import check_finite
from prokd.errors import DataError
from prokd.inference.model_files import LoadedModel, load_model_file
from prokd.inference.pipeline import read_stage, segment_image
from prokd.inference.segment import with_crop_centre


@dataclass
class SegmentResult:
    """What :func:`segment` returns: the mask and probabilities as SimpleITK images on the
    input's grid, and the QC record (as ``prokd predict`` writes it in its sidecar)."""

    mask: sitk.Image
    probabilities: sitk.Image
    qc: dict[str, Any]
    seconds: float


@lru_cache(maxsize=4)
def _model(spec: str) -> LoadedModel:
    return load_model_file(spec)


def segment(
    image_or_path: sitk.Image | str | Path,
    model: str | Path = "prostate-t2",
    postprocess: bool = True,
    series: str | None = None,
    channel: int | None = None,
    crop_centre: str | None = None,
) -> SegmentResult:
    """Segment the prostate in one T2 volume.

    Args:
        image_or_path: a 3D SimpleITK image, a volume file, or a DICOM series (its folder,
            one of its files, or a study folder whose axial T2 is chosen).
        model: a bundled model's name, or any model file ``prokd predict`` takes (loaded
            once per process and kept).
        postprocess: keep the largest 3D component and fill its holes.
        series: the DICOM series to take from a study folder (SeriesInstanceUID or number).
        channel: the T2 channel of a 4D volume file.
        crop_centre: ``image`` or ``body``, to place the slice grid otherwise than on the
            gland the localiser finds (the default, for every model).

    Returns:
        A :class:`SegmentResult`; its ``qc["warnings"]`` lists what QC found suspicious.

    Raises:
        DataError: an unreadable model or input (NaN/Inf voxels too, in a file or an image),
            or a path that holds several volumes.
    """
    loaded = with_crop_centre(_model(str(model)), crop_centre or "gland")
    if isinstance(image_or_path, sitk.Image):
        image = image_or_path
        if image.GetDimension() != 3:
            raise DataError(Path("<image>"), f"expected a 3D image, got {image.GetDimension()}D")
        check_finite(image, Path("<image>"))
    else:
        inputs = find_inputs(image_or_path, series)
        if len(inputs) != 1:
            raise DataError(
                Path(image_or_path), f"holds {len(inputs)} volumes; segment one at a time"
            )
        volume = inputs[0] if channel is None else replace(inputs[0], channel=channel)
        image = read_stage(volume)
    result = segment_image(loaded, image, postprocess)
    return SegmentResult(
        mask=image_from_array(result.mask, image),
        probabilities=image_from_array(result.probabilities, image),
        qc=result.qc.as_dict(),
        seconds=result.seconds,
    )
