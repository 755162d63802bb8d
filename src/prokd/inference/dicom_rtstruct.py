"""RT Structure Set output (pydicom): the gland mask as closed planar contours, the form
radiotherapy planning systems import.

One ROI "Prostate" (interpreted type ORGAN, generated AUTOMATIC by prokd); on every source
slice where the mask has voxels, one closed contour per boundary of the mask's slice (an
island or a hole; readers combine them by even-odd). The contours are iso-lines at 0.5 of
the slice's 0/1 mask (contourpy, matplotlib's contouring engine), so they pass halfway
between a voxel inside and its neighbour outside, and a voxel centre is inside a contour
exactly when the voxel is in the mask. The structure set references the study, the frame
of reference, the series and each contour's source image. highdicom does not write RT
Structure Sets, so the modules are filled here by hand.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import contourpy
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from prokd.data.dicom import DicomSeries
from prokd.errors import DataError
from prokd.io_atomic import atomic_path
from prokd.version import __version__

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
ROI_NAME = "Prostate"
ROI_COLOUR = (0, 200, 255)  # the RGB a planning system draws the ROI in
RTSTRUCT_SERIES_NUMBER_OFFSET = 2000  # the RTSTRUCT's series number: the source's plus this
STUDY_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed boundaries of one 2D 0/1 mask, each an (N, 2) array of (column, row)
    pixel coordinates without the repeated closing point; empty for an empty slice."""
    padded = np.pad((mask > 0).astype(np.float64), 1)
    generator = contourpy.contour_generator(
        z=padded, line_type=contourpy.LineType.Separate, corner_mask=False
    )
    loops = []
    for line in generator.lines(0.5):
        points = np.asarray(line, np.float64) - 1.0  # undo the padding
        if len(points) > 3:
            loops.append(points[:-1] if np.allclose(points[0], points[-1]) else points)
    return loops


def _patient_points(
    loop: np.ndarray, header: pydicom.Dataset, pixel_spacing: tuple[float, float]
) -> list[float]:
    """Contour points (column, row) of one slice in patient coordinates (mm), flattened
    x, y, z as ContourData holds them."""
    position = np.array([float(v) for v in header.ImagePositionPatient])
    orientation = np.array([float(v) for v in header.ImageOrientationPatient])
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    row_mm, column_mm = pixel_spacing
    points = (
        position
        + np.outer(loop[:, 0] * column_mm, row_cosine)
        + np.outer(loop[:, 1] * row_mm, column_cosine)
    )
    return [float(round(v, 4)) for v in points.ravel()]


def _image_reference(header: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


def _frame_of_reference(series: DicomSeries, headers: list[pydicom.Dataset]) -> pydicom.Dataset:
    """ReferencedFrameOfReferenceSequence's item: study, series and every source image."""
    referenced_series = pydicom.Dataset()
    referenced_series.SeriesInstanceUID = series.uid
    referenced_series.ContourImageSequence = [_image_reference(h) for h in headers]
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study.ReferencedSOPInstanceUID = headers[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [referenced_series]
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = headers[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _roi_contours(mask: np.ndarray, series: DicomSeries, headers: list) -> pydicom.Dataset:
    """ROIContourSequence's item: the ROI's colour and its contours, slice by slice."""
    contours = []
    for k, header in enumerate(headers):
        for loop in slice_contours(mask[k]):
            contour = pydicom.Dataset()
            contour.ContourImageSequence = [_image_reference(header)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(loop)
            contour.ContourNumber = len(contours) + 1
            contour.ContourData = _patient_points(loop, header, series.pixel_spacing)
            contours.append(contour)
    roi = pydicom.Dataset()
    roi.ReferencedROINumber = 1
    roi.ROIDisplayColor = list(ROI_COLOUR)
    if contours:
        roi.ContourSequence = contours
    return roi


def _structure_set_roi(frame_uid: str, model_name: str) -> pydicom.Dataset:
    roi = pydicom.Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_uid
    roi.ROIName = ROI_NAME
    roi.ROIDescription = f"prostate gland by prokd {__version__}, model {model_name}"
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    return roi


def _observation() -> pydicom.Dataset:
    observation = pydicom.Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    return observation


def build_rtstruct(
    mask: np.ndarray,
    series: DicomSeries,
    model_name: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> pydicom.Dataset:
    """The RT Structure Set of ``mask`` (z, y, x on the series' grid: slice k is
    ``series.files[k]``); new UIDs unless given.

    Raises:
        ValueError: the mask is not on the series' grid.
    """
    expected = (len(series.files), series.rows, series.columns)
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} != series shape {expected}")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    first = headers[0]
    now = datetime.datetime.now()
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = instance_uid or generate_uid()
    for keyword in STUDY_FIELDS:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = (series.number or 0) + RTSTRUCT_SERIES_NUMBER_OFFSET
    ds.SeriesDescription = f"prokd {model_name} prostate contours"
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "prokd"
    ds.ManufacturerModelName = model_name
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "prokd"
    ds.StructureSetName = f"prokd {model_name}"
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = [_frame_of_reference(series, headers)]
    ds.StructureSetROISequence = [_structure_set_roi(first.FrameOfReferenceUID, model_name)]
    ds.ROIContourSequence = [_roi_contours(mask, series, headers)]
    ds.RTROIObservationsSequence = [_observation()]
    ds.ApprovalStatus = "UNAPPROVED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_rtstruct(
    mask: np.ndarray,
    series: DicomSeries,
    path: str | Path,
    model_name: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> Path:
    """Write :func:`build_rtstruct`'s structure set to ``path``, atomically.

    Raises:
        ValueError: the mask is not on the series' grid.
        DataError: naming ``path``, when a source header is unreadable or the file cannot
            be written.
    """
    path = Path(path)
    try:
        ds = build_rtstruct(mask, series, model_name, series_uid, instance_uid)
    except (AttributeError, KeyError, OSError) as err:
        raise DataError(path, f"cannot make an RT Structure Set ({err})") from None
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
