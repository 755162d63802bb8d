"""Reading and writing 3D volumes with their full geometry (SimpleITK).

Supported formats: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd`` + raw), NRRD
(``.nrrd``, ``.nhdr``) and DICOM series (a folder, or one ``.dcm`` file of the series: see
:mod:`prokd.data.dicom`). Arrays follow SimpleITK's index order: ``array[z, y, x]``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.nifti_raw import check_nifti_length, is_nifti, nifti_non_finite_voxels
from prokd.errors import DataError, error_summary
from prokd.io_atomic import atomic_path

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def file_sha256(path: str | Path, digest: hashlib._Hash | None = None) -> str:
    """SHA-256 of a file's bytes (fed into ``digest`` when one is given)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def volume_files(path: Path) -> list[Path]:
    """Every file that holds a volume's data: the file itself and, for a detached header
    (``.mhd``, ``.nhdr``), the data file it names; every file of a DICOM folder, sorted;
    every file of the series a DICOM file belongs to."""
    if path.is_dir():
        from prokd.data.dicom import folder_files

        return folder_files(path)
    if is_dicom_input(path):
        from prokd.data.dicom import find_series

        return [f for series in find_series(path) for f in series.files]
    files = [path]
    if path.suffix.lower() in (".mhd", ".nhdr") and path.is_file():
        text = path.read_text(errors="replace")
        match = re.search(r"^\s*(?:ElementDataFile|data file)\s*[=:]\s*(\S+)", text, re.M | re.I)
        if match and match.group(1) != "LOCAL":
            files.append(path.parent / match.group(1))
    return files


def volume_sha256(path: str | Path, digest: hashlib._Hash | None = None) -> str:
    """SHA-256 over every data file of a volume (:func:`volume_files`; for a folder, each
    file's name inside it too), fed into ``digest`` when one is given. For a single-file
    volume it equals :func:`file_sha256`."""
    path = Path(path)
    digest = digest or hashlib.sha256()
    for file in volume_files(path):
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        file_sha256(file, digest)
    return digest.hexdigest()


def is_volume_file(path: Path) -> bool:
    """Whether ``path`` has one of the supported volume suffixes."""
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(path: Path) -> str:
    """File name without its volume suffix (``Case01.nii.gz`` -> ``Case01``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume in physical space (mm), in SimpleITK (x, y, z) order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        """Geometry of a SimpleITK image."""
        return cls(
            tuple(image.GetSize()),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
        )

    def mismatch(self, other: Geometry, tolerance: float = 1e-3) -> str | None:
        """Describe how ``other`` differs from this grid, or ``None`` if they match.

        Spacing and origin are compared with a relative/absolute tolerance in mm, the
        direction cosines with an absolute tolerance.
        """
        if self.size != other.size:
            return f"shape {other.size} differs from image shape {self.size}"
        checks = (("spacing", self.spacing, other.spacing), ("origin", self.origin, other.origin))
        for name, mine, theirs in checks:
            if not np.allclose(mine, theirs, rtol=tolerance, atol=tolerance):
                return f"{name} {_fmt(theirs)} differs from image {name} {_fmt(mine)}"
        if not np.allclose(self.direction, other.direction, atol=tolerance):
            return "direction cosines differ from the image's"
        return None

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this geometry's spacing, origin and direction on ``image`` (same size)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_volume(path: str | Path, channel: int | None = None) -> sitk.Image:
    """Read a 3D volume, or one channel of a 4D volume, keeping its geometry.

    Args:
        path: volume file in a supported format.
        channel: for 4D files (e.g. MSD images: channel 0 is T2), the channel to keep.
            A 4D file whose fourth axis has length 1 is read as 3D without it.

    Returns:
        A 3D SimpleITK image.

    Raises:
        DataError: missing, unsupported, unreadable or truncated file; not 3D; channel
            missing or out of range.
    """
    path = Path(path)
    if is_dicom_input(path):
        from prokd.data.dicom import read_series, series_at

        if channel not in (None, 0):
            raise DataError(path, f"a DICOM series has no channel {channel}")
        return read_series(series_at(path))
    if not path.is_file():
        raise DataError(path, "file not found")
    if not is_volume_file(path):
        raise DataError(
            path,
            f"unsupported file type (expected one of {', '.join(VOLUME_SUFFIXES)}, "
            "or a DICOM series)",
        )
    _check_metaimage_spacing(path)
    check_nifti_length(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(
            path, f"cannot read volume: truncated or corrupt file? ({error_summary(err)})"
        ) from None
    dim = image.GetDimension()
    if dim == 4:
        image = _select_channel(path, image, channel)
    elif dim != 3:
        raise DataError(path, f"expected a 3D volume, got {dim}D with shape {image.GetSize()}")
    elif channel not in (None, 0):
        raise DataError(path, f"3D volume has no channel {channel}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, "expected a scalar volume, got a vector/RGB volume")
    if min(image.GetSpacing()) <= 0:
        raise DataError(path, f"voxel spacing must be positive, got {_fmt(image.GetSpacing())}")
    return image


def is_dicom_input(path: Path) -> bool:
    """A folder (of DICOM files) or a DICOM file: read as a DICOM series."""
    if path.is_dir():
        return True
    if not path.is_file() or is_volume_file(path):
        return False
    from prokd.data.dicom import is_dicom_file

    return is_dicom_file(path)


def _check_metaimage_spacing(path: Path) -> None:
    """Refuse a MetaImage header with zero or negative spacing (ITK flips negative axes)."""
    if path.suffix.lower() not in (".mha", ".mhd"):
        return
    with open(path, "rb") as handle:
        header = handle.read(4096).decode("latin-1")
    match = re.search(r"^\s*ElementSpacing\s*=\s*(.+)$", header, re.M)
    if match is None:
        return
    try:
        spacing = [float(v) for v in match.group(1).split()]
    except ValueError:
        raise DataError(path, f"unreadable ElementSpacing {match.group(1).strip()!r}") from None
    if min(spacing, default=1.0) <= 0:
        raise DataError(path, f"voxel spacing must be positive, got {match.group(1).strip()}")


def _select_channel(path: Path, image: sitk.Image, channel: int | None) -> sitk.Image:
    size = list(image.GetSize())
    channels = size[3]
    if channel is None:
        if channels != 1:
            raise DataError(
                path, f"4D volume with {channels} channels: the T2 channel must be given"
            )
        channel = 0
    if not 0 <= channel < channels:
        raise DataError(path, f"4D volume has {channels} channels, channel {channel} requested")
    return sitk.Extract(image, size[:3] + [0], [0, 0, 0, channel])


def non_finite_voxels(path: str | Path, image: sitk.Image, channel: int | None = None) -> int:
    """Number of NaN/Inf voxels of a volume read by :func:`read_volume`.

    ITK's NIfTI reader replaces NaN and Inf with 0, so NIfTI files are checked on their raw
    data; other formats on the image itself.
    """
    path = Path(path)
    if is_nifti(path):
        return nifti_non_finite_voxels(path, channel)
    data = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(data.dtype, np.floating):
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def write_volume(image: sitk.Image, path: str | Path) -> Path:
    """Write ``image`` atomically (nothing half-written on failure); compressed where possible."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as err:  # ITK reports failed writes (disk full) this way
            raise DataError(path, f"cannot write volume ({error_summary(err)})") from None
    return path


def image_from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A SimpleITK image of ``array`` (z, y, x) with exactly the reference's geometry.

    Raises:
        ValueError: the array's shape is not the reference's (z, y, x) shape.
    """
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match reference shape {expected}")
    image = sitk.GetImageFromArray(array)
    return Geometry.of(reference).apply_to(image)
