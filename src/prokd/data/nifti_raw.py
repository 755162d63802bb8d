"""What ITK's NIfTI reader does not say: whether the voxel data is all there, and whether
raw voxels are NaN or infinite (ITK reads those as 0).

The header's fields come from SimpleITK's header-only read (its metadata dictionary); the
voxels are read raw with numpy. nibabel reads the same, but its import (which brings
pydicom) costs a prediction's cold start about 0.2 s; the tests hold these functions to
nibabel's reading.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.errors import DataError, error_summary

FLOAT_TYPES = {16: "f4", 64: "f8", 32: "c8", 1792: "c16"}  # NIfTI datatype codes
HEADER_SIZES = (348, 540)  # NIfTI-1 and NIfTI-2: the first field, which gives the byte order


def is_nifti(path: Path) -> bool:
    """A single-file NIfTI volume (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith((".nii", ".nii.gz"))


def nifti_header(path: Path) -> dict[str, str] | None:
    """The header's fields as ITK reads them (``dim[0]``, ``datatype``, ``vox_offset``, ...),
    or ``None`` where ITK finds no NIfTI header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def _shape(header: dict[str, str]) -> list[int]:
    """The voxel grid, fastest axis first (x, y, z, then t for a 4D file)."""
    return [int(header[f"dim[{axis}]"]) for axis in range(1, int(header["dim[0]"]) + 1)]


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes (decompressed for ``.gz``) in chunks of 4 MiB.

    Raises:
        DataError: a compressed stream that is cut short or corrupt.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            yield from iter(lambda: handle.read(1 << 22), b"")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(path, f"truncated or corrupt file ({error_summary(err)})") from None


def check_nifti_length(path: Path) -> None:
    """Refuse a NIfTI file whose voxel data is shorter than its header says.

    ITK fills the missing voxels of a truncated integer NIfTI with zeros without an error,
    so the whole (decompressed) stream is read and its length compared with the header's
    data offset plus voxel bytes; a gzip stream cut short fails on its own.

    Raises:
        DataError: naming the file.
    """
    header = nifti_header(path) if is_nifti(path) else None
    if header is None:  # no NIfTI header at all: ITK's reader says so, naming the file
        return
    voxels = math.prod(_shape(header))
    expected = int(float(header["vox_offset"])) + voxels * int(header["bitpix"]) // 8
    compressed = path.name.lower().endswith(".gz")
    length = sum(len(chunk) for chunk in _chunks(path)) if compressed else path.stat().st_size
    if length < expected:
        raise DataError(
            path, f"truncated file: {length} bytes of data where the header needs {expected}"
        )


def nifti_non_finite_voxels(path: Path, channel: int | None = None) -> int:
    """Number of NaN/Inf voxels of a NIfTI file's volume (``channel`` of a 4D file; the
    first by default), as stored. Integers are finite whatever the header's scaling: ITK
    ignores an infinite or NaN slope or intercept.

    Raises:
        DataError: not a NIfTI file ITK can read, or its voxel data is cut short.
    """
    header = nifti_header(path)
    if header is None:
        raise DataError(path, "cannot read the NIfTI header")
    shape = _shape(header)
    channel_voxels = math.prod(shape[:3])
    code = int(header["datatype"])
    if code not in FLOAT_TYPES:
        return 0
    raw = b"".join(_chunks(path))
    order = "<" if int.from_bytes(raw[:4], "little") in HEADER_SIZES else ">"
    dtype = np.dtype(order + FLOAT_TYPES[code])
    offset = int(float(header["vox_offset"])) + (channel or 0) * channel_voxels * dtype.itemsize
    if len(raw) < offset + channel_voxels * dtype.itemsize:
        raise DataError(path, "truncated file: the voxel data is shorter than the header says")
    data = np.frombuffer(raw, dtype=dtype, count=channel_voxels, offset=offset)
    return int(data.size - np.count_nonzero(np.isfinite(data)))
