"""DICOM series written from a volume, as an MR scanner exports them (pydicom).

One classic MR Image Storage file per slice, with the volume's full geometry
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and unsigned 16-bit pixels.
Used to turn the synthetic phantom into DICOM studies (``prokd phantom --dicom``), so that
DICOM reading, series choice, SEG/RTSTRUCT output and the DICOM node run without real scans;
the options that make a series unusable (two echoes, a missing slice) or awkward (a
rescale slope per slice) are there to test that the reader refuses or reads them right.

UIDs are derived from the names given (:func:`pydicom.uid.generate_uid` with entropy
sources), so the same call writes the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from prokd.io_atomic import atomic_folder, atomic_path
from prokd.version import __version__

STORED_MAX = 65535  # unsigned 16-bit pixels


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what a written study is: patient, study and frame of reference."""

    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    study_id: str = "1"
    study_date: str = "20260101"

    @classmethod
    def named(cls, patient_id: str, study: str = "1") -> StudyIdentity:
        """A study whose UIDs follow from the patient's id and the study's name."""
        return cls(
            patient_id=patient_id,
            study_uid=generate_uid(entropy_srcs=["study", patient_id, study]),
            frame_of_reference_uid=generate_uid(entropy_srcs=["frame", patient_id, study]),
            study_id=study[:16],
        )


def _stored_values(pixels: np.ndarray, slope: float, name: str) -> np.ndarray:
    stored = np.round(np.asarray(pixels, np.float64) / slope)
    if stored.min() < 0 or stored.max() > STORED_MAX:
        raise ValueError(f"{name}: values / slope {slope} do not fit unsigned 16 bits")
    return stored.astype(np.uint16)


def _slice_dataset(
    study: StudyIdentity, series_uid: str, number: int, description: str, index: int
) -> pydicom.Dataset:
    """The header fields every slice of a series shares, and its own identity."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
    ds.Modality = "MR"
    ds.Manufacturer = "prokd phantom"
    ds.SoftwareVersions = __version__
    ds.PatientName = f"{study.patient_id}^Phantom"
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = study.study_id
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "PROSTATE"
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 100
    ds.RepetitionTime = 4000
    ds.EchoTrainLength = 16
    ds.MagneticFieldStrength = 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_series(
    image: sitk.Image,
    folder: str | Path,
    study: StudyIdentity,
    number: int = 1,
    description: str = "t2_tse_tra",
    slopes: Sequence[float] | None = None,
    echoes: int = 1,
    omit: Sequence[int] = (),
) -> list[Path]:
    """Write a 3D image as one DICOM MR series, one file per slice, under ``folder``.

    Args:
        image: the volume (its geometry, in LPS as SimpleITK keeps it, becomes the
            series'); values must be non-negative and fit 16 bits after the slope.
        folder: where the files go (``IM<number>_<slice>.dcm``); made if missing.
        study: the patient and study the series belongs to.
        number: SeriesNumber; also makes the SeriesInstanceUID.
        description: SeriesDescription (``t2_tse_tra`` reads as an axial T2).
        slopes: a RescaleSlope per slice (stored = value / slope); default none written.
        echoes: images per slice position, EchoNumbers 1..echoes (more than one makes a
            series the reader refuses).
        omit: slice indices not written (a missing slice).

    Returns:
        The written files, in slice order.

    Raises:
        ValueError: a 2D image, a slope list of the wrong length, or values that do not
            fit.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image)
    if slopes is not None and len(slopes) != len(array):
        raise ValueError(f"{len(slopes)} slopes for {len(array)} slices")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    orientation = [*direction[:, 0], *direction[:, 1]]
    spacing = image.GetSpacing()
    series_uid = generate_uid(entropy_srcs=[study.study_uid, "series", str(number)])
    folder = Path(folder)
    written = []
    for k, pixels in enumerate(array):
        if k in omit:
            continue
        for echo in range(1, echoes + 1):
            index = k * echoes + echo - 1
            ds = _slice_dataset(study, series_uid, number, description, index)
            ds.EchoNumbers = echo
            ds.ImagePositionPatient = list(image.TransformIndexToPhysicalPoint((0, 0, k)))
            ds.ImageOrientationPatient = [float(round(v, 6)) for v in orientation]
            ds.PixelSpacing = [spacing[1], spacing[0]]
            ds.SliceThickness = ds.SpacingBetweenSlices = spacing[2]
            ds.Rows, ds.Columns = pixels.shape
            slope = 1.0 if slopes is None else float(slopes[k])
            if slopes is not None:
                ds.RescaleSlope, ds.RescaleIntercept = slope, 0
            ds.PixelData = _stored_values(pixels, slope, f"slice {k}").tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = folder / f"IM{number}_{index:04d}.dcm"
            with atomic_path(path) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            written.append(path)
    return written


def write_studies(volumes: Sequence[tuple[str, Path]], out_dir: str | Path) -> list[Path]:
    """Each named volume file as a DICOM study of one axial T2 series,
    ``out_dir/<name>/t2/*.dcm`` (patient id: the name); the folder is made whole or not
    at all.

    Returns:
        The series folders, in the order given.
    """
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as staging:
        for name, path in volumes:
            image = sitk.ReadImage(str(path))
            write_series(image, staging / name / "t2", StudyIdentity.named(name.replace("/", "-")))
    return [out_dir / name / "t2" for name, _ in volumes]
