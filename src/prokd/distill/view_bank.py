"""Build a bank of teacher-labelled views (``prokd bank``): the teacher labels the very
volume a student will train on, once, and the bank keeps it (consistent, patient
distillation: Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022).

Views are planned round by round: round 0 is every volume as acquired, round ``j`` gives
every volume one more view of kind ``kinds[(j - 1 + n) % len(kinds)]`` (``n``: the
volume's place in the list, so every kind appears early). A bank of ``views_per_volume``
rounds can grow to more in a later run: finished entries are skipped by key
(:mod:`prokd.data.view_store`), so a killed build resumes where it stopped. A mix takes
its partner from the same source (another patient), so a source held out of a study
never reaches another source's views.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from prokd.data.io import image_from_array, read_volume, volume_sha256
from prokd.data.layouts import Case
from prokd.data.validate import load_case
from prokd.data.view_store import ViewRecipe, ViewStore, entry_key, image_digest
from prokd.data.views import DEFAULT_KINDS, PLANNED_ON_GLAND, make_view
from prokd.inference.volume_models import VolumeModel


def _seed(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _partner(case: Case, cases: Sequence[Case], seed: int) -> Case | None:
    """Another patient's volume of the same source, chosen by ``seed``; ``None`` if none."""
    others = [c for c in cases if c.site == case.site and c.patient != case.patient]
    return others[seed % len(others)] if others else None


def plan_views(
    cases: Sequence[Case],
    views_per_volume: int,
    kinds: Sequence[str] = DEFAULT_KINDS,
    seed: int = 0,
) -> list[ViewRecipe]:
    """The recipes of a bank with ``views_per_volume`` views of every case, round by round
    (a mix without a partner becomes an augmented view)."""
    recipes = []
    for index in range(views_per_volume):
        for number, case in enumerate(cases):
            view_seed = _seed(seed, case.case_id, index)
            kind = "acquired" if index == 0 else kinds[(index - 1 + number) % len(kinds)]
            partner = _partner(case, cases, view_seed) if kind == "mix" else None
            if kind == "mix" and partner is None:
                kind = "augment"
            recipes.append(
                ViewRecipe(
                    case.site,
                    case.case_id,
                    case.patient,
                    kind,
                    index,
                    view_seed,
                    partner.case_id if partner else None,
                )
            )
    return recipes


@dataclass(frozen=True)
class BuildReport:
    """What a build did: entries planned, found done, made now, and the teacher's seconds."""

    planned: int
    found: int
    made: int
    teacher_seconds: float
    stopped_early: bool


class _Volumes:
    """Reads the cases of a bank and the gland masks its views are planned on."""

    def __init__(self, cases: Sequence[Case], store: ViewStore, threshold: float) -> None:
        self.cases = {c.case_id: c for c in cases}
        self.store, self.threshold = store, threshold
        self.acquired_maps: dict[str, str] = {}  # case id -> key of its acquired entry
        self._digests: dict[str, str] = {}

    def digest(self, case_id: str) -> str:
        case = self.cases[case_id]
        if case_id not in self._digests:
            self._digests[case_id] = f"{volume_sha256(case.image)}:{case.image_channel}"
        return self._digests[case_id]

    def image_and_gland(self, case_id: str, kind: str) -> tuple[sitk.Image, sitk.Image | None]:
        """The image and, for a view planned on the gland, its gland: the label, else the
        teacher's mask of the volume as acquired (``None`` for the other kinds)."""
        case = self.cases[case_id]
        if kind not in PLANNED_ON_GLAND:
            return read_volume(case.image, case.image_channel), None
        if case.labelled:
            loaded = load_case(case)
            return loaded.image, loaded.mask
        image = read_volume(case.image, case.image_channel)
        probabilities = read_volume(self.store.map_path(self.acquired_maps[case_id]))
        gland = sitk.GetArrayFromImage(probabilities) >= self.threshold
        return image, image_from_array(gland.astype(np.uint8), image)


def build_bank(
    cases: Sequence[Case],
    teacher: VolumeModel,
    store: ViewStore,
    recipes: Sequence[ViewRecipe],
    deadline: float | None = None,
    show_progress: bool = False,
) -> BuildReport:
    """Make and label every planned view the bank lacks, in order, until ``deadline``
    (``time.monotonic()`` seconds; ``None``: no limit). Round 0 (the volumes as acquired)
    must come first in ``recipes``: later views are planned on its masks.

    Raises:
        DataError: an unreadable volume.
    """
    volumes = _Volumes(cases, store, teacher.threshold)
    fingerprint = teacher.fingerprint()
    found = made = 0
    seconds = 0.0
    stopped = False
    for recipe in tqdm(recipes, desc="view bank", unit="view", disable=not show_progress):
        digests = [volumes.digest(recipe.case_id)]
        if recipe.partner:
            digests.append(volumes.digest(recipe.partner))
        key = entry_key(recipe, digests, fingerprint)
        if recipe.kind == "acquired":
            volumes.acquired_maps[recipe.case_id] = key
        if store.has(key):
            found += 1
            continue
        if deadline is not None and time.monotonic() >= deadline:
            stopped = True
            break
        image, gland = volumes.image_and_gland(recipe.case_id, recipe.kind)
        partner = volumes.image_and_gland(recipe.partner, recipe.kind) if recipe.partner else None
        view = make_view(recipe.kind, image, gland, recipe.seed, partner)
        probabilities = teacher.probabilities(view)
        seconds += teacher.last_seconds
        aliases = [image_digest(image)] if recipe.kind == "acquired" else []
        store.add(
            key,
            recipe,
            view,
            image_from_array(probabilities.astype(np.float32), view),
            teacher.last_seconds,
            aliases,
        )
        made += 1
    return BuildReport(len(recipes), found, made, seconds, stopped)
