"""What a user points ``prokd predict`` at: volume files, or DICOM series, as volumes to read.

A volume file stands for itself (with the T2 channel of a 4D image); a DICOM file for its
series; a folder for its image volumes (a known layout's images, or every volume file
that is not named like a mask) or, when it holds none, for the chosen series of each DICOM
study under it (:func:`prokd.data.dicom.choose_series`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from prokd.data.io import is_dicom_input, is_volume_file, read_volume, volume_stem
from prokd.data.layouts import image_volumes, is_dicom_folder
from prokd.data.validate import check_finite
from prokd.errors import DataError

if TYPE_CHECKING:
    from prokd.data.dicom import DicomSeries


@dataclass(frozen=True)
class VolumeInput:
    """One volume to segment: a volume file (``channel``: its T2 channel if 4D) or a DICOM
    series (``path`` is then the series' folder); ``note`` says why a series was chosen."""

    path: Path
    channel: int | None = None
    series: DicomSeries | None = None
    note: str | None = None

    def read(self) -> sitk.Image:
        """The volume as a 3D SimpleITK image, checked for NaN/Inf voxels.

        Raises:
            DataError: naming the file or series, for any unusable input.
        """
        if self.series is not None:
            from prokd.data.dicom import read_series

            image = read_series(self.series)
        else:
            image = read_volume(self.path, self.channel)
        check_finite(image, self.path, self.channel)
        return image

    def output_stem(self, root: Path) -> Path:
        """The output path, without suffix, mirroring this input's place under ``root``
        (a file input: ``root`` is its folder)."""
        if self.series is not None and self.path.resolve() == root.resolve():
            return Path(root.resolve().name)
        inner = self.path.resolve().relative_to(root.resolve())
        return inner if self.series is not None else inner.with_name(volume_stem(self.path))


def dicom_inputs(source: Path, selector: str | None = None) -> list[VolumeInput]:
    """The chosen series of every study under ``source`` (a folder or a DICOM file).

    Raises:
        DataError: no DICOM image series, or no series chosen in a study.
    """
    from prokd.data.dicom import by_study, choose_series, find_series

    series = find_series(source)
    if not series:
        raise DataError(source, "no image volumes or DICOM series found (mask files are skipped)")
    if source.is_file():
        chosen = choose_series(series, selector)
        return [VolumeInput(chosen.folder, series=chosen)]
    inputs = []
    for study in by_study(series):
        chosen = choose_series(study, selector)
        note = None
        if len(study) > 1:
            note = f"{chosen.summary()}; chosen of {len(study)} series (--series overrides)"
        inputs.append(VolumeInput(chosen.folder, series=chosen, note=note))
    return inputs


def find_inputs(source: str | Path, selector: str | None = None) -> list[VolumeInput]:
    """Every volume ``source`` stands for (see the module's docstring).

    Args:
        source: a volume file, a DICOM file, or a folder.
        selector: a SeriesInstanceUID or series number choosing the DICOM series of each
            study (default: the axial T2).

    Raises:
        DataError: missing input, an unsupported file, or a folder without images.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(source, "input not found")
    if source.is_file() and is_volume_file(source):
        return [VolumeInput(source)]
    if source.is_file():
        if not is_dicom_input(source):
            raise DataError(source, "unsupported file type (not a volume file or DICOM)")
        return dicom_inputs(source, selector)
    if is_dicom_folder(source):
        return dicom_inputs(source, selector)
    return [VolumeInput(path, channel) for path, channel in image_volumes(source)]
