"""DICOM series as scanners and PACS export them: find, group, choose, check and read.

Files are grouped into series by SeriesInstanceUID (pydicom reads the headers only). A
series' geometry comes from ImagePositionPatient and ImageOrientationPatient: its slices
are sorted along the slice normal and must be one orientation, one size and evenly spaced,
or the series is refused with a one-line reason (a missing slice shows as an uneven gap).
The pixel data is read by SimpleITK (GDCM), which applies RescaleSlope/Intercept and
decodes the compressed transfer syntaxes GDCM supports; a series whose slices have
different slopes or intercepts is read as float32, since the reader would otherwise take
the first file's (integer) pixel type for all and truncate the others.

When a folder holds several series (axial, sagittal and coronal T2, ADC, DWI, localisers),
:func:`choose_series` takes the axial T2 by its description and orientation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from prokd.data.orientation import plane
from prokd.errors import DataError, error_summary

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

# Transfer syntaxes GDCM (SimpleITK's DICOM reader) decodes: uncompressed, deflated, RLE,
# JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000.
READABLE_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}

# Words of a series description that mark it as not a T2 anatomical series.
NOT_T2_WORDS = ("adc", "dwi", "diff", "trace", "ep2d", "dce", "perf", "loc", "scout", "survey")

SPACING_TOLERANCE = 0.01  # relative spread of slice gaps still taken as even
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series: its identity, description, geometry and files (sorted along the
    slice normal), and why it cannot be read as a volume (``problem``, ``None`` if it can)."""

    uid: str
    number: int | None
    description: str
    modality: str
    patient_id: str
    study_uid: str
    folder: Path
    files: tuple[Path, ...]
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) in mm
    slice_spacing: float
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column cosines
    problem: str | None = None
    varying_rescale: bool = False  # slices with different RescaleSlope/Intercept

    @property
    def direction(self) -> tuple[float, ...]:
        """The 3x3 direction (row-major, as SimpleITK's): row, column and slice normal as
        columns."""
        row, column = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        return tuple(np.stack([row, column, np.cross(row, column)], axis=1).ravel())

    @property
    def plane(self) -> str:
        """``axial``, ``sagittal`` or ``coronal``, by the rule volume files follow too
        (:func:`prokd.data.orientation.plane`)."""
        return plane(self.direction, self.spacing)

    @property
    def size(self) -> tuple[int, int, int]:
        """Voxels in SimpleITK (x, y, z) order: columns, rows, slices."""
        return (self.columns, self.rows, len(self.files))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm in (x, y, z) order."""
        return (self.pixel_spacing[1], self.pixel_spacing[0], self.slice_spacing)

    @property
    def is_t2(self) -> bool:
        """Whether the description names a T2 series (and not ADC, DWI, a localiser ...)."""
        text = self.description.lower().replace("-", "").replace("_", " ")
        return "t2" in text and not any(word in text for word in NOT_T2_WORDS)

    @property
    def label(self) -> str:
        """``series 4 't2_tse_tra'``: how messages name the series."""
        number = "?" if self.number is None else str(self.number)
        return f"series {number} {self.description!r}"

    def summary(self) -> str:
        """One line: label, plane, size and spacing (``prokd inspect``, ``prokd predict``)."""
        size = "x".join(str(v) for v in self.size)
        spacing = "x".join(f"{v:.3g}" for v in self.spacing)
        return f"{self.label}: {self.modality} {self.plane}, {size} voxels at {spacing} mm"


def is_dicom_file(path: Path) -> bool:
    """A file with a DICOM suffix, or with the ``DICM`` marker after the 128-byte preamble."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return path.is_file()
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def folder_files(path: Path) -> list[Path]:
    """Every file under a folder, searched recursively, hidden files and folders skipped,
    sorted."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of an image file (pixel data deferred), or ``None`` for a non-DICOM file
    or a DICOM object that is not an image (a report, a segmentation, a presentation state)."""
    try:
        header = pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError):
        return None
    if header.get("Modality") in ("SEG", "RTSTRUCT", "SR", "PR", "KO"):
        return None
    if "SeriesInstanceUID" not in header or "Rows" not in header:
        return None
    return header


def _float_tuple(header: pydicom.Dataset, keyword: str) -> tuple[float, ...] | None:
    value = header.get(keyword)
    try:
        return tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _series_problem(headers: list[pydicom.Dataset]) -> tuple[str | None, list[int], float]:
    """Why these headers do not form one evenly spaced volume (or ``None``), the order of
    the slices along the normal, and the slice spacing in mm."""
    first = headers[0]
    syntax = str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax and syntax not in READABLE_TRANSFER_SYNTAXES:
        name = pydicom.uid.UID(syntax).name
        return f"unsupported transfer syntax {syntax} ({name})", [], 0.0
    if any("PixelData" not in h and "FloatPixelData" not in h for h in headers):
        return "no pixel data in some of its files", [], 0.0
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame (enhanced) DICOM is not supported: export classic images", [], 0.0
    orientations = [_float_tuple(h, "ImageOrientationPatient") for h in headers]
    positions = [_float_tuple(h, "ImagePositionPatient") for h in headers]
    if any(o is None or len(o) != 6 for o in orientations) or any(
        p is None or len(p) != 3 for p in positions
    ):
        return "no ImagePositionPatient/ImageOrientationPatient: no 3D geometry", [], 0.0
    if np.ptp(np.array(orientations), axis=0).max() > ORIENTATION_TOLERANCE:
        return "mixed slice orientations in one series", [], 0.0
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        return "slices of different sizes in one series", [], 0.0
    if len(headers) < 2:
        return "a single slice (a localiser?): not a volume", [0], 0.0
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    depth = np.array(positions) @ normal
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    gaps = np.diff(depth[order])
    if gaps.min() < 1e-3:
        return (
            f"{int(np.sum(gaps < 1e-3)) + 1} images share a slice position (several echoes, "
            "times or b-values in one series)",
            order,
            0.0,
        )
    spacing = float(np.median(gaps))
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * spacing:
        worst = int(np.argmax(np.abs(gaps - spacing)))
        return (
            f"uneven slice spacing: a gap of {gaps[worst]:.2f} mm where the others are "
            f"{spacing:.2f} mm (a missing slice?)",
            order,
            spacing,
        )
    return None, order, spacing


def _make_series(uid: str, files: list[Path], headers: list[pydicom.Dataset]) -> DicomSeries:
    problem, order, spacing = _series_problem(headers)
    if order:
        files, headers = [files[i] for i in order], [headers[i] for i in order]
    first = headers[0]
    number = first.get("SeriesNumber")
    description = str(first.get("SeriesDescription") or first.get("ProtocolName") or "")
    pixel = _float_tuple(first, "PixelSpacing") or (1.0, 1.0)
    orientation = _float_tuple(first, "ImageOrientationPatient") or (1, 0, 0, 0, 1, 0)
    folders = {f.parent for f in files}
    folder = folders.pop() if len(folders) == 1 else Path(*_common_parts(files))
    return DicomSeries(
        uid=uid,
        number=int(number) if number not in (None, "") else None,
        description=description.strip(),
        modality=str(first.get("Modality", "")),
        patient_id=str(first.get("PatientID", "")),
        study_uid=str(first.get("StudyInstanceUID", "")),
        folder=folder,
        files=tuple(files),
        rows=int(first.Rows),
        columns=int(first.Columns),
        pixel_spacing=(float(pixel[0]), float(pixel[1])),
        slice_spacing=spacing or float(first.get("SliceThickness") or 1.0),
        orientation=tuple(float(v) for v in orientation),
        problem=problem,
        varying_rescale=len({_rescale(h) for h in headers}) > 1,
    )


def _rescale(header: pydicom.Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of one file, (1, 0) where absent."""
    slope, intercept = header.get("RescaleSlope", 1), header.get("RescaleIntercept", 0)
    try:
        return float(slope if slope not in (None, "") else 1), float(intercept or 0)
    except (TypeError, ValueError):
        return 1.0, 0.0


def _common_parts(files: list[Path]) -> tuple[str, ...]:
    parts = [f.parent.parts for f in files]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return tuple(common)


def find_series(path: str | Path) -> list[DicomSeries]:
    """Every DICOM image series under a folder (searched recursively), or the series a
    single file belongs to (the image files of that series in its folder).

    Returns:
        Series sorted by patient, study and series number; empty when there is no DICOM
        image file.

    Raises:
        DataError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "input not found")
    wanted = None
    if path.is_file():
        header = _read_header(path)
        if header is None:
            raise DataError(path, "not a DICOM image file")
        wanted, path = str(header.SeriesInstanceUID), path.parent
        candidates = [p for p in sorted(path.iterdir()) if p.is_file()]
    else:
        candidates = folder_files(path)
    grouped: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for file in candidates:
        header = _read_header(file)
        if header is not None and (wanted is None or header.SeriesInstanceUID == wanted):
            grouped[str(header.SeriesInstanceUID)].append((file, header))
    series = [
        _make_series(uid, [f for f, _ in items], [h for _, h in items])
        for uid, items in grouped.items()
    ]
    return sorted(series, key=lambda s: (s.patient_id, s.study_uid, s.number or 0, s.uid))


def by_study(series: list[DicomSeries]) -> list[list[DicomSeries]]:
    """Series grouped by patient and study, in the order of :func:`find_series`."""
    groups: dict[tuple[str, str], list[DicomSeries]] = defaultdict(list)
    for s in series:
        groups[(s.patient_id, s.study_uid)].append(s)
    return list(groups.values())


def choose_series(series: list[DicomSeries], selector: str | None = None) -> DicomSeries:
    """The series of one study to segment.

    Args:
        series: the series of one study (see :func:`by_study`).
        selector: a SeriesInstanceUID or series number that picks the series; otherwise the
            axial T2 (by description and orientation) is chosen, the one with most slices
            (then the latest) if there are several; then a T2 of another plane; a study of
            one series gives that series.

    Raises:
        DataError: no series matches the selector, or none can be told to be the T2.
    """
    folder = (
        series[0].folder
        if len(series) == 1
        else Path(*_common_parts([f for s in series for f in s.files]))
    )
    if selector is not None:
        matches = [s for s in series if selector in (s.uid, str(s.number))]
        if not matches:
            raise DataError(folder, f"no series {selector!r} ({_listing(series)})")
        return matches[0]
    if len(series) == 1:
        return series[0]
    readable = [s for s in series if s.problem is None]
    for pool in (readable, series):  # a refused T2 only when no readable one exists
        for candidates in (
            [s for s in pool if s.is_t2 and s.plane == "axial"],
            [s for s in pool if s.is_t2],
        ):
            if candidates:
                return max(candidates, key=lambda s: (len(s.files), s.number or 0))
    raise DataError(
        folder, f"cannot tell which series is the T2 ({_listing(series)}); pass --series"
    )


def _listing(series: list[DicomSeries]) -> str:
    return "series: " + ", ".join(f"{s.number} {s.description!r}" for s in series)


def read_series(series: DicomSeries) -> sitk.Image:
    """The series as a 3D SimpleITK image (slices along the normal, rescaled values).

    Raises:
        DataError: naming the series, when its geometry is refused or the pixel data cannot
            be decoded.
    """
    if series.problem is not None:
        raise DataError(series.folder, f"{series.label}: {series.problem}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    if series.varying_rescale:  # the first file's pixel type could truncate the others
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(
            series.folder, f"{series.label}: cannot read pixel data ({error_summary(err)})"
        ) from None
    if image.GetDimension() != 3 or tuple(image.GetSize()) != series.size:
        raise DataError(
            series.folder, f"{series.label}: read {image.GetSize()}, expected {series.size}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(series.folder, f"{series.label}: colour images, not an MR series")
    return image


def series_at(path: str | Path, selector: str | None = None) -> DicomSeries:
    """The one series a path stands for: the series of a file, or the chosen series of a
    folder that holds one study.

    Raises:
        DataError: no DICOM image under the path, several studies, or no series chosen.
    """
    series = find_series(path)
    if not series:
        raise DataError(path, "no DICOM image series found")
    studies = by_study(series)
    if len(studies) > 1:
        raise DataError(path, f"{len(studies)} studies in one folder: give one study's folder")
    return choose_series(studies[0], selector)
