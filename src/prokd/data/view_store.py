"""A view bank's folder: teacher-labelled 3D views, one entry per view, found by content.

A view is a volume a student trains on (a volume as acquired, augmented, resliced as another
protocol acquires it, or mixed from two volumes); its entry holds the view and the
teacher's gland probabilities on the view's own grid::

    BANK/bank.json                              the teacher's name and fingerprint
    BANK/views/<source>/<key>.nii.gz            the view (float32)
    BANK/maps/<key>.nii.gz                      the teacher's probabilities (float32)
    BANK/entries/<key>.json                     the recipe; written last: the entry is done

``<key>`` digests the recipe, the contents of the volumes it was made from and the teacher's
fingerprint, so the same view is labelled once, and a bank built in many runs (killed or
not) holds each view once. Each file is written atomically; an entry without its record is
made again. The teacher's map for an image is found by :func:`image_digest` (its voxels and
grid), so any view read back from the bank finds its map.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.io import read_volume, write_volume
from prokd.data.layouts import Case
from prokd.errors import ConfigError, DataError
from prokd.io_atomic import atomic_path

BANK_FORMAT = 1
BANK_FILE = "bank.json"


def image_digest(image: sitk.Image) -> str:
    """SHA-256 of an image's voxels (as float32) and grid (origin and spacing to 1 um,
    direction to 1e-5): the same after a NIfTI round trip, whose header stores float32."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image), np.float32).tobytes())
    grid = (
        np.round(image.GetOrigin(), 3),
        np.round(image.GetSpacing(), 3),
        np.round(image.GetDirection(), 5),
    )
    digest.update(repr([[float(v) + 0.0 for v in part] for part in grid]).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ViewRecipe:
    """How a view is made: ``kind`` (acquired, augment, mix or a simulated protocol) of the
    volume ``case_id`` (of ``patient``) of ``source``, with ``partner`` for a mix (another
    patient of the same source), from ``seed``."""

    source: str
    case_id: str
    patient: str
    kind: str
    index: int
    seed: int
    partner: str | None = None


@dataclass(frozen=True)
class BankEntry:
    """A finished entry: its key, recipe, the digests its map is found by (the view's as
    read back, and for a volume as acquired the volume's as read from its own file), and
    its files."""

    key: str
    recipe: ViewRecipe
    digests: tuple[str, ...]
    view: Path
    probabilities: Path
    teacher_seconds: float


def entry_key(recipe: ViewRecipe, volume_digests: list[str], teacher_fingerprint: str) -> str:
    """What an entry's view and map depend on, as a hex digest (24 characters)."""
    text = json.dumps(
        [BANK_FORMAT, asdict(recipe), volume_digests, teacher_fingerprint], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ViewStore:
    """The entries of one bank folder, for one teacher.

    Raises:
        ConfigError: the folder is a bank of another teacher.
    """

    def __init__(
        self, root: str | Path, teacher_name: str, teacher_fingerprint: str, threshold: float
    ) -> None:
        self.root = Path(root)
        self.teacher_name, self.teacher_fingerprint = teacher_name, teacher_fingerprint
        self.threshold = threshold  # the teacher's: where its masks are cut
        info = self.root / BANK_FILE
        record = {
            "format": BANK_FORMAT,
            "teacher": teacher_name,
            "fingerprint": teacher_fingerprint,
            "threshold": threshold,
        }
        if info.is_file():
            found = json.loads(info.read_text())
            if found.get("fingerprint") != teacher_fingerprint:
                raise ConfigError(
                    f"{self.root}: a view bank of teacher {found.get('teacher')!r} (another "
                    "model file); give a new folder for this teacher"
                )
            return
        with atomic_path(info) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")

    def _record(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def has(self, key: str) -> bool:
        """Whether the entry ``key`` is finished."""
        return self._record(key).is_file()

    def view_path(self, recipe: ViewRecipe, key: str) -> Path:
        return self.root / "views" / recipe.source / f"{key}.nii.gz"

    def map_path(self, key: str) -> Path:
        return self.root / "maps" / f"{key}.nii.gz"

    def add(
        self,
        key: str,
        recipe: ViewRecipe,
        view: sitk.Image,
        probabilities: sitk.Image,
        teacher_seconds: float,
        aliases: list[str] | None = None,
    ) -> BankEntry:
        """Write an entry (view, map, then its record), each file atomically; ``aliases``:
        more digests its map is found by."""
        view_file, map_file = self.view_path(recipe, key), self.map_path(key)
        with atomic_path(view_file) as tmp:
            write_volume(sitk.Cast(view, sitk.sitkFloat32), tmp)
        with atomic_path(map_file) as tmp:
            write_volume(sitk.Cast(probabilities, sitk.sitkFloat32), tmp)
        digests = tuple(dict.fromkeys([image_digest(read_volume(view_file)), *(aliases or [])]))
        record = {
            "recipe": asdict(recipe),
            "digests": list(digests),
            "teacher_seconds": round(teacher_seconds, 3),
        }
        with atomic_path(self._record(key)) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        return BankEntry(key, recipe, digests, view_file, map_file, teacher_seconds)

    def entries(self) -> list[BankEntry]:
        """Every finished entry, by key."""
        found = []
        for record_file in sorted((self.root / "entries").glob("*.json")):
            key = record_file.stem
            record = json.loads(record_file.read_text())
            recipe = ViewRecipe(**record["recipe"])
            found.append(
                BankEntry(
                    key,
                    recipe,
                    tuple(record["digests"]),
                    self.view_path(recipe, key),
                    self.map_path(key),
                    float(record["teacher_seconds"]),
                )
            )
        return found


def entry_count(root: str | Path) -> int:
    """Number of finished entries in the bank folder ``root`` (0 where there is none)."""
    return sum(1 for _ in (Path(root) / "entries").glob("*.json"))


def open_bank(root: str | Path) -> ViewStore:
    """The bank at ``root``, for reading.

    Raises:
        DataError: no ``bank.json`` there.
    """
    info = Path(root) / BANK_FILE
    if not info.is_file():
        raise DataError(Path(root), f"not a view bank (no {BANK_FILE}; make one with prokd bank)")
    found = json.loads(info.read_text())
    return ViewStore(root, found["teacher"], found["fingerprint"], float(found["threshold"]))


def bank_cases(
    root: str | Path,
    sources: tuple[str, ...] = (),
    kinds: tuple[str, ...] = (),
    labelled: frozenset[str] = frozenset(),
    held_out: frozenset[str] = frozenset(),
) -> list[Case]:
    """The views of a bank as unlabelled cases (of ``sources`` and ``kinds`` only, when
    given; not the views as acquired of the ``labelled`` case ids, which train with their
    labels already; none mixed with a volume of the ``held_out`` patients, a validation or
    test patient's image would otherwise train): id ``bank/<key>``, site the view's source,
    patient the patient it was made from (so a split keeps a patient's views on the
    patient's side).

    Raises:
        DataError: not a bank, or it holds no view of the sources and kinds asked for.
    """
    entries = open_bank(root).entries()
    patient_of = {e.recipe.case_id: e.recipe.patient for e in entries}
    chosen = [
        e
        for e in entries
        if (not sources or e.recipe.source in sources)
        and (not kinds or e.recipe.kind in kinds)
        and not (e.recipe.kind == "acquired" and e.recipe.case_id in labelled)
        and not (
            e.recipe.partner and patient_of.get(e.recipe.partner, e.recipe.partner) in held_out
        )
    ]
    if not chosen:
        wanted = [f"sources {', '.join(sources)}" if sources else "", ", ".join(kinds)]
        detail = " of " + "; ".join(w for w in wanted if w) if any(wanted) else ""
        raise DataError(Path(root), f"the view bank holds no view to train on{detail}")
    return [
        Case(f"bank/{e.key}", e.recipe.source, e.view, (), None, group=e.recipe.patient)
        for e in chosen
    ]
