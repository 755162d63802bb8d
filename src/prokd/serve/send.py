"""Results out: DICOM files sent to a destination by C-STORE (pynetdicom), all in one
association, each file in its own SOP class and transfer syntax."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pynetdicom import AE

from prokd.serve.config import Destination

SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}
TIMEOUT_SECONDS = 30


class DeliveryError(Exception):
    """A destination did not take the results (refused, unreachable, or a failure status)."""


def send_files(files: list[Path], destination: Destination, calling_ae_title: str) -> None:
    """C-STORE every file to ``destination`` as ``calling_ae_title``.

    Raises:
        DeliveryError: saying what went wrong; the caller retries later.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_SECONDS
    for sop_class, syntax in sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    ):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DeliveryError(f"{destination}: no association (down, or refused us)")
    try:
        for path, ds in zip(files, datasets, strict=True):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code not in SUCCESS_OR_WARNING:
                shown = "no answer" if code is None else f"status 0x{code:04X}"
                raise DeliveryError(f"{destination}: {path.name} not stored ({shown})")
    finally:
        if assoc.is_established:
            assoc.release()
