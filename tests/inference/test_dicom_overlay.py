"""The overlay pictures: slices spread through the gland, the outline drawn exactly on the
mask's boundary, the QC verdict written in its colour, and secondary captures that belong to
the source study."""

import numpy as np
import pydicom

from prokd.data.dicom import series_at
from prokd.inference.dicom_overlay import (
    NOT_RELIABLE_COLOUR,
    build_overlays,
    overlay_picture,
    overlay_slices,
    patient_orientation,
    verdict_lines,
)
from prokd.inference.dicom_rtstruct import ROI_COLOUR
from prokd.inference.postprocess import MaskQC


def test_slices_are_spread_through_the_gland():
    mask = np.zeros((20, 4, 4), np.uint8)
    mask[4:13, 1:3, 1:3] = 1
    assert overlay_slices(mask) == [6, 8, 10]
    mask[:] = 0
    mask[7, 1, 1] = 1
    assert overlay_slices(mask) == [7]
    assert overlay_slices(np.zeros((9, 4, 4))) == [4]


def test_the_outline_is_the_mask_boundary_and_the_text_is_written():
    pixels = np.tile(np.linspace(0, 1000, 200), (200, 1))
    mask = np.zeros((200, 200), np.uint8)
    mask[100:160, 60:140] = 1
    qc = MaskQC(30.0, 1, False, 0, reliable=False, reasons=["the mask is far from the midline"])
    picture = overlay_picture(pixels, mask, verdict_lines(qc, "prostate-t2"), ok=False)
    outlined = np.all(picture == ROI_COLOUR, axis=-1)
    boundary = np.zeros_like(outlined)
    boundary[100:160, 60:140] = True
    boundary[101:159, 61:139] = False
    np.testing.assert_array_equal(outlined[80:], boundary[80:])  # below the text lines
    red, green = picture[:60, :, 0].astype(int), picture[:60, :, 1].astype(int)
    assert ((red > 200) & (green < 120)).sum() > 50  # the verdict, in red, on a grey picture
    assert NOT_RELIABLE_COLOUR[0] > 200 and NOT_RELIABLE_COLOUR[1] < 120
    assert verdict_lines(qc, "m")[1:] == ["QC: NOT RELIABLE", "the mask is far from the midline"]


def test_patient_orientation_follows_the_slice_axes():
    assert patient_orientation((1, 0, 0, 0, 1, 0)) == ("L", "P")
    assert patient_orientation((0, 1, 0, 0, 0, -1)) == ("P", "F")
    assert patient_orientation((-1, 0, 0, 0, 0, -1)) == ("R", "F")


def test_secondary_captures_belong_to_the_source_study(phantom_study):
    series = series_at(phantom_study.folder)
    mask = phantom_study.mask
    qc = MaskQC(20.0, 1, False, 0, reliable=True)
    pixels = np.zeros(mask.shape, np.float32) + np.arange(mask.shape[2])
    pictures = build_overlays(pixels, mask, qc, series, "prostate-t2", "1.2.3")
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert len(pictures) == 3
    for number, picture in enumerate(pictures, 1):
        assert picture.StudyInstanceUID == source.StudyInstanceUID
        assert picture.PatientID == source.PatientID and picture.SeriesInstanceUID == "1.2.3"
        assert picture.InstanceNumber == number and picture.PhotometricInterpretation == "RGB"
        assert picture.pixel_array.shape == (series.rows, series.columns, 3)
