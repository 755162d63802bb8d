"""A study file's ``contrasts``: one model of two regimes (or pools) compared on the test
volumes both scored, the patient as the unit (the regimes of one study differ in one
setting, e.g. the view bank against TAPS's maps of the acquired volumes alone)::

    contrasts:
      - {a: bank, b: acquired, model: student-kd-p1}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prokd.errors import ConfigError
from prokd.evaluation.stats import patient_level_comparison


@dataclass(frozen=True)
class Contrast:
    """One model of two regimes (or pools) compared on the test volumes they share."""

    a: str
    b: str
    model: str

    @property
    def name(self) -> str:
        """How tables name the contrast."""
        return f"{self.model}: {self.a} vs {self.b}"


def parse_contrasts(values: Any, known: list[str], path: Path) -> tuple[Contrast, ...]:
    """A study file's ``contrasts``: ``{a: REGIME_OR_POOL, b: REGIME_OR_POOL, model: NAME}``.

    Raises:
        ConfigError: not a list of such mappings, or an unknown regime or pool.
    """
    where = f"{path}: contrasts"
    if not isinstance(values, list):
        raise ConfigError(f"{where}: expected a list of {{a, b, model}} mappings")
    contrasts = []
    for index, entry in enumerate(values):
        if not (isinstance(entry, dict) and set(entry) == {"a", "b", "model"}):
            raise ConfigError(f"{where}[{index}]: expected exactly the keys a, b and model")
        for key in ("a", "b"):
            if entry[key] not in known:
                raise ConfigError(f"{where}[{index}].{key}: unknown regime or pool {entry[key]!r}")
        contrasts.append(Contrast(str(entry["a"]), str(entry["b"]), str(entry["model"])))
    return tuple(contrasts)


def regime_contrasts(
    contrasts: Sequence[Contrast],
    pools: Mapping[str, Sequence[str]],
    fold_of: Mapping[str, str | None],
    exploratory: Collection[str],
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each contrast with the patient as the unit (see
    :func:`~prokd.evaluation.stats.patient_level_comparison`), over the test volumes (the
    study's per-volume ``rows``) both sides scored with the same seed; a side names a regime
    or a pool of ``pools``; ``held_out`` repeats it without the volumes of the folds
    (``fold_of``: regime -> fold) named ``exploratory``. Contrasts with no shared volume yet
    are left out."""

    def scores(side: str, model: str) -> dict[tuple[int, str], dict[str, Any]]:
        regimes = pools.get(side, (side,))
        return {
            (r["seed"], r["case"]): r
            for r in rows
            if r["regime"] in regimes and r["model"] == model
        }

    results = []
    for contrast in contrasts:
        a, b = scores(contrast.a, contrast.model), scores(contrast.b, contrast.model)
        shared = sorted(set(a) & set(b))
        if not shared:
            continue
        pairs = [(a[k]["patient"], a[k]["dice"], b[k]["dice"]) for k in shared]
        kept = [
            p
            for k, p in zip(shared, pairs, strict=True)
            if fold_of[a[k]["regime"]] not in exploratory
        ]
        results.append(
            {
                "name": contrast.name,
                **dataclasses.asdict(contrast),
                "patients": patient_level_comparison(pairs),
                "held_out": patient_level_comparison(kept)
                if exploratory and len({p[0] for p in kept}) > 1
                else None,
            }
        )
    return results
