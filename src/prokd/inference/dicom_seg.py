"""DICOM Segmentation output (highdicom): a predicted gland mask a viewer shows over its
series.

The SEG references its source series (frame of reference, source image SOP instances),
holds one binary segment "Prostate" coded in SNOMED CT (category Anatomical Structure
91723000, type Prostate 41216001) with a recommended display colour (the RT Structure
Set's, as CIELab), and names prokd, its version and the model as the algorithm that made
it. Frames map one to one onto the source slices. A study without a Study ID (allowed, but
a DICOMDIR needs one) gets its accession number, or ``prokd``, as the SEG's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from prokd.data.dicom import DicomSeries
from prokd.errors import DataError, error_summary
from prokd.inference.dicom_rtstruct import ROI_COLOUR
from prokd.io_atomic import atomic_path
from prokd.version import __version__

SEGMENT_LABEL = "Prostate"
SEG_SERIES_NUMBER_OFFSET = 1000  # the SEG's series number: the source's plus this


def gland_segment(model_name: str) -> hd.seg.SegmentDescription:
    """The one segment a prokd SEG holds: the whole gland, found automatically by prokd."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name="prokd",
        family=codes.DCM.ArtificialIntelligence,
        version=__version__,
        parameters={"model": model_name},
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Prostate,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*ROI_COLOUR),
    )


def write_dicom_seg(
    mask: np.ndarray,
    series: DicomSeries,
    path: str | Path,
    model_name: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> Path:
    """Write ``mask`` (z, y, x, on the series' grid: slice k is ``series.files[k]``) as a
    binary DICOM SEG referencing ``series``; atomically; new UIDs unless given.

    Raises:
        ValueError: the mask is not on the series' grid.
        DataError: naming ``path``, when highdicom cannot build the SEG or it cannot be
            written.
    """
    path = Path(path)
    expected = (len(series.files), series.rows, series.columns)
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} != series shape {expected}")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    number = (series.number or 0) + SEG_SERIES_NUMBER_OFFSET
    with warnings.catch_warnings():
        # highdicom doubts single-component patient names ("ProstateX-0000"): they are the
        # source's, copied as they are
        warnings.filterwarnings("ignore", message=".*person name", category=UserWarning)
        try:
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=(mask > 0).astype(np.uint8),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[gland_segment(model_name)],
                series_instance_uid=series_uid or hd.UID(),
                series_number=number,
                sop_instance_uid=instance_uid or hd.UID(),
                instance_number=1,
                manufacturer="prokd",
                manufacturer_model_name=model_name,
                software_versions=__version__,
                device_serial_number="none",
                series_description=f"prokd {model_name} prostate",
                content_label="PROSTATE",
                content_description=f"Prostate gland by prokd {__version__}, model {model_name}",
                omit_empty_frames=False,
            )
        except (ValueError, TypeError, AttributeError) as err:
            raise DataError(path, f"cannot make a DICOM SEG ({error_summary(err)})") from None
    if not seg.get("StudyID"):
        seg.StudyID = str(sources[0].get("AccessionNumber") or "prokd")[:16]
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
