"""One received study -> its results: the same series choice, segmentation and QC as
``prokd predict``, then the DICOM objects the node sends back (SEG, RT Structure Set,
overlay pictures).

The results' UIDs follow from the study and the digest of its instances, so results made
again from the same instances (after a kill) are the same DICOM objects, and a destination
that receives them twice keeps one copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk
from pydicom.uid import generate_uid

from prokd.data.inputs import find_inputs
from prokd.errors import DataError
from prokd.inference.model_files import LoadedModel
from prokd.inference.pipeline import read_stage, segment_image
from prokd.inference.segment import qc_record
from prokd.io_atomic import atomic_folder


@dataclass(frozen=True)
class StudyOutcome:
    """What processing made: the files to send, the series used and the mask's QC."""

    files: tuple[Path, ...]
    series: str
    gland_ml: float
    reliable: bool
    reasons: tuple[str, ...]
    seconds: float


def result_uid(study_uid: str, digest: str, what: str) -> str:
    """A UID that is the same whenever the same instances give the same result ``what``."""
    return generate_uid(entropy_srcs=[study_uid, digest, what])


def _write_outputs(
    staging: Path, outputs: tuple[str, ...], mask, image, series, qc, model, uid
) -> None:
    """The asked-for DICOM objects of one segmented series, into ``staging``."""
    if "seg" in outputs:
        from prokd.inference.dicom_seg import write_dicom_seg

        write_dicom_seg(mask, series, staging / "seg.dcm", model, uid("seg-series"), uid("seg"))
    if "rtstruct" in outputs:
        from prokd.inference.dicom_rtstruct import write_rtstruct

        write_rtstruct(
            mask, series, staging / "rtstruct.dcm", model, uid("rt-series"), uid("rtstruct")
        )
    if "overlay" in outputs:
        from prokd.inference.dicom_overlay import OVERLAY_SLICES, build_overlays

        pixels = sitk.GetArrayFromImage(image)
        uids = [uid(f"overlay-{i}") for i in range(len(OVERLAY_SLICES))]
        for i, picture in enumerate(
            build_overlays(pixels, mask, qc, series, model, uid("overlay-series"), uids)
        ):
            picture.save_as(staging / f"overlay-{i + 1}.dcm")


def process_study(
    model: LoadedModel,
    instances_dir: Path,
    out_dir: Path,
    outputs: tuple[str, ...],
    study_uid: str,
    digest: str,
) -> StudyOutcome:
    """Segment a study's chosen series and write its results into ``out_dir`` (made whole
    or not at all), with a ``qc.json`` sidecar as ``prokd predict`` writes it.

    Raises:
        DataError: naming the study's folder or series, for a study that cannot be used
            (no T2 series, a refused series, unreadable pixels).
    """
    inputs = find_inputs(instances_dir)
    if len(inputs) != 1:
        raise DataError(instances_dir, f"{len(inputs)} patients share one study UID")
    volume = inputs[0]
    image = read_stage(volume)
    result = segment_image(model, image, name=volume.series.label)
    with atomic_folder(out_dir) as staging:
        _write_outputs(
            staging,
            outputs,
            result.mask,
            image,
            volume.series,
            result.qc,
            model.label,
            lambda what: result_uid(study_uid, digest, what),
        )
        sidecar = {"study": study_uid, **qc_record(volume, model, result, postprocess=True)}
        (staging / "qc.json").write_text(json.dumps(sidecar, indent=1))
    return outcome_of(out_dir)


def outcome_of(out_dir: Path) -> StudyOutcome:
    """The outcome the results in ``out_dir`` record (just made, or made before a
    restart, which reuses them)."""
    qc = json.loads((out_dir / "qc.json").read_text())
    files = tuple(sorted(p for p in out_dir.iterdir() if p.suffix == ".dcm"))
    return StudyOutcome(
        files, qc["series"], qc["gland_ml"], qc["reliable"], tuple(qc["reasons"]), qc["seconds"]
    )
