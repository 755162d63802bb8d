"""A view bank as a teacher: the maps its teacher made, found by the image's content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.io import read_volume
from prokd.data.view_store import image_digest, open_bank
from prokd.errors import DataError


class BankVolumeModel:
    """The teacher of a view bank (``prokd bank``), replayed: the probabilities of any view
    in the bank (or of a volume whose acquired view it holds), without running the teacher.

    Its fingerprint is the teacher's, so caches keyed by it are shared with the teacher.
    ``last_seconds`` is what the teacher took on that view when the bank was built (its own
    time, with the build's threads), not the time of reading the map.
    """

    def __init__(self, root: str | Path) -> None:
        self.store = open_bank(root)
        self.name = f"bank:{self.store.teacher_name}"
        self.kind = "view bank"
        self.threshold = self.store.threshold
        self.last_seconds = 0.0
        self._maps: dict[str, tuple[Path, float]] = {}

    def fingerprint(self) -> str:
        """The bank's teacher's fingerprint."""
        return self.store.teacher_fingerprint

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        """The teacher's map of ``image``, read from the bank.

        Raises:
            DataError: the bank holds no view with this image's voxels and grid.
        """
        digest = image_digest(image)
        if digest not in self._maps:  # the bank may have grown since the last look
            self._maps = {
                d: (e.probabilities, e.teacher_seconds)
                for e in self.store.entries()
                for d in e.digests
            }
        if digest not in self._maps:
            raise DataError(
                self.store.root,
                f"no view in this bank has this image's voxels and grid (size {image.GetSize()}); "
                "add its volume to the bank (prokd bank) or teach it with the teacher itself",
            )
        path, self.last_seconds = self._maps[digest]
        return sitk.GetArrayFromImage(read_volume(path)).astype(np.float32)
