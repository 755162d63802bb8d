"""A picture a radiologist reads at a glance: the mask's outline on the T2, with the QC
verdict written on it, as a DICOM Secondary Capture series (highdicom, RGB).

A few slices through the gland (its first quarter, middle and last quarter; the middle
slice of the series when the mask is empty), each the source slice windowed at its 1st and
99th percentile, the outline in the ROI colour, and a few lines of text: the model and gland
volume, then ``QC: reliable``, or ``QC: NOT RELIABLE`` and its reasons. The secondary captures
belong to the source study and carry its patient, study and frame of reference.
"""

from __future__ import annotations

import textwrap
import warnings

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from prokd.data.dicom import DicomSeries
from prokd.data.masks import occupied_slices
from prokd.inference.dicom_rtstruct import ROI_COLOUR
from prokd.inference.postprocess import MaskQC
from prokd.version import __version__

OVERLAY_SERIES_NUMBER_OFFSET = 3000  # the overlay's series number: the source's plus this
OVERLAY_SLICES = (0.25, 0.5, 0.75)  # where in the gland's slice range the pictures are
NOT_RELIABLE_COLOUR = (255, 80, 80)
RELIABLE_COLOUR = (120, 255, 120)


def patient_orientation(orientation: tuple[float, ...]) -> tuple[str, str]:
    """PatientOrientation of a slice from its ImageOrientationPatient: the patient
    direction (L/R, P/A, H/F) each of its row and column directions points most along."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    names = []
    for cosines in (orientation[:3], orientation[3:]):
        axis = int(np.argmax(np.abs(cosines)))
        names.append(letters[axis][int(cosines[axis] > 0)])
    return names[0], names[1]


def overlay_slices(mask: np.ndarray) -> list[int]:
    """The slice indices shown: spread through the mask's slices (one slice for a thin
    mask; the middle slice of the volume for an empty one)."""
    occupied = occupied_slices(mask)
    if len(occupied) == 0:
        return [len(mask) // 2]
    first, last = int(occupied[0]), int(occupied[-1])
    return sorted({first + int(round(f * (last - first))) for f in OVERLAY_SLICES})


def _grey(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, (1, 99))
    scaled = (pixels.astype(np.float64) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def verdict_lines(qc: MaskQC, model_name: str) -> list[str]:
    """The lines written on every picture: model and volume, the verdict, its reasons."""
    head = f"prokd {__version__} {model_name}: prostate {qc.gland_ml:.1f} ml"
    if qc.reliable:
        return [head, "QC: reliable"]
    return [head, "QC: NOT RELIABLE", *qc.reasons]


def overlay_picture(pixels: np.ndarray, mask: np.ndarray, lines: list[str], ok: bool) -> np.ndarray:
    """One RGB picture (rows, columns, 3; uint8): the slice, the outline, the text."""
    rgb = np.repeat(_grey(pixels)[..., None], 3, axis=2)
    inside = mask > 0
    outline = inside & ~ndimage.binary_erosion(inside)
    rgb[outline] = ROI_COLOUR
    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    size = max(10, pixels.shape[0] // 28)
    font = ImageFont.load_default(size=size)
    columns = max(16, int(pixels.shape[1] / (0.6 * size)))  # characters that fit a line
    row = 0
    for index, text in enumerate(lines):
        colour = RELIABLE_COLOUR if ok or index == 0 else NOT_RELIABLE_COLOUR
        for part in textwrap.wrap(text, columns):
            xy = (4, 4 + row * (size + 4))
            draw.text(xy, part, fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
            row += 1
    return np.asarray(picture, dtype=np.uint8)


def build_overlays(
    image: np.ndarray,
    mask: np.ndarray,
    qc: MaskQC,
    series: DicomSeries,
    model_name: str,
    series_uid: str,
    instance_uids: list[str] | None = None,
) -> list[hd.sc.SCImage]:
    """The secondary captures of ``mask`` over ``image`` (both z, y, x on the series' grid),
    one per :func:`overlay_slices` slice, in ``series_uid``; new instance UIDs unless
    given (one per picture, as many as :data:`OVERLAY_SLICES` at most)."""
    lines = verdict_lines(qc, model_name)
    pictures = []
    for index, k in enumerate(overlay_slices(mask)):
        source = pydicom.dcmread(series.files[k], stop_before_pixels=True)
        rgb = overlay_picture(image[k], mask[k], lines, qc.reliable)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*person name", category=UserWarning)
            picture = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=rgb,
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=series_uid,
                series_number=(series.number or 0) + OVERLAY_SERIES_NUMBER_OFFSET,
                sop_instance_uid=instance_uids[index] if instance_uids else hd.UID(),
                instance_number=index + 1,
                manufacturer="prokd",
                patient_orientation=patient_orientation(series.orientation),
                series_description=f"prokd {model_name} prostate overlay",
            )
        pictures.append(picture)
    return pictures
