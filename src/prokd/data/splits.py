"""Case-level splits: per-site train/val/test, leave-one-site-out, leave-one-case-out,
labels held back, limit-trained subsets.

Splits are made by patient (``Case.patient``), never by slice, and are seeded.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from prokd.data.layouts import Case
from prokd.errors import ConfigError, DataError
from prokd.io_atomic import atomic_path


@dataclass(frozen=True)
class Split:
    """Case ids of each part; the parts are disjoint.

    ``unlabelled`` holds training cases whose labels are held back: students read them as
    unlabelled volumes, and no model ever sees their masks.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    unlabelled: tuple[str, ...] = ()

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (atomically)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({k: list(v) for k, v in asdict(self).items()}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                tuple(data["train"]),
                tuple(data["val"]),
                tuple(data["test"]),
                tuple(data.get("unlabelled", ())),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(path, f"not a valid split file ({err})") from None


def _groups(cases: list[Case]) -> dict[str, list[str]]:
    """Case ids per patient, in a stable order."""
    groups: dict[str, list[str]] = defaultdict(list)
    for case in sorted(cases, key=lambda c: c.case_id):
        groups[case.patient].append(case.case_id)
    return dict(groups)


def _shuffled(keys: list[str], seed: int, salt: str) -> list[str]:
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    return [keys[i] for i in rng.permutation(len(keys))]


def _part_size(n: int, fraction: float) -> int:
    """Number of patients for a part: rounded, at least 1 once a site has 3 or more."""
    count = int(round(n * fraction))
    return max(count, 1) if fraction > 0 and n >= 3 else count


def split_by_site(
    cases: list[Case], val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Split every site's patients into train/val/test with the given fractions.

    Raises:
        ConfigError: fractions outside [0, 1) or summing to 1 or more.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            "split fractions: need 0 <= val, test and val + test < 1, got "
            f"val={val_fraction}, test={test_fraction}"
        )
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    by_site: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_site[case.site].append(case)
    for site in sorted(by_site):
        groups = _groups(by_site[site])
        order = _shuffled(sorted(groups), seed, site)
        n_test = _part_size(len(order), test_fraction)
        n_val = min(_part_size(len(order), val_fraction), len(order) - n_test - 1)
        for name, keys in (
            ("test", order[:n_test]),
            ("val", order[n_test : n_test + max(n_val, 0)]),
            ("train", order[n_test + max(n_val, 0) :]),
        ):
            parts[name].extend(cid for key in keys for cid in groups[key])
    return Split(*(tuple(sorted(parts[k])) for k in ("train", "val", "test")))


def leave_one_site_out(
    cases: list[Case], val_fraction: float = 0.2, seed: int = 0
) -> dict[str, Split]:
    """For each site: test on all its cases, train/validate on the other sites."""
    splits = {}
    for site in sorted({c.site for c in cases}):
        others = [c for c in cases if c.site != site]
        inner = split_by_site(others, val_fraction, 0.0, seed)
        test = tuple(sorted(c.case_id for c in cases if c.site == site))
        splits[site] = Split(inner.train, inner.val, test)
    return splits


def held_out_site(cases: list[Case], site: str, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """The leave-one-site-out split that tests on ``site``.

    Raises:
        ConfigError: no case comes from ``site``.
    """
    sites = sorted({c.site for c in cases})
    if site not in sites:
        raise ConfigError(f"split.test_site: unknown site {site!r} (sites: {', '.join(sites)})")
    return leave_one_site_out(cases, val_fraction, seed)[site]


def held_out_case(
    cases: list[Case], case_id: str, val_fraction: float = 0.2, seed: int = 0
) -> Split:
    """The leave-one-case-out split that tests on ``case_id`` and every other case of its
    patient; the rest is split per site into train and validation.

    Raises:
        ConfigError: no case has that id.
    """
    case = next((c for c in cases if c.case_id == case_id), None)
    if case is None:
        known = ", ".join(c.case_id for c in cases[:3])
        raise ConfigError(f"split.test_case: unknown case {case_id!r} (case ids: {known}, ...)")
    test = [c for c in cases if c.patient == case.patient and c.site == case.site]
    inner = split_by_site([c for c in cases if c not in test], val_fraction, 0.0, seed)
    return Split(inner.train, inner.val, tuple(sorted(c.case_id for c in test)))


def hold_back_labels(cases: list[Case], split: Split, per_site: int, seed: int = 0) -> Split:
    """Keep the labels of ``per_site`` training patients per site; hold back the others'.

    The held-back cases move from ``train`` to ``unlabelled``. A site with ``per_site`` or
    fewer training patients keeps them all.

    Raises:
        ConfigError: ``per_site`` below 1.
    """
    if per_site < 1:
        raise ConfigError(f"split.labelled_per_site: must be at least 1, got {per_site}")
    train = [c for c in cases if c.case_id in set(split.train)]
    keep: list[str] = []
    for site in sorted({c.site for c in train}):
        groups = _groups([c for c in train if c.site == site])
        order = _shuffled(sorted(groups), seed, f"labelled:{site}")
        keep.extend(cid for key in order[:per_site] for cid in groups[key])
    held = tuple(sorted(set(split.train) - set(keep)))
    return replace(split, train=tuple(sorted(keep)), unlabelled=held)


LIMIT_MODES = ("site", "random")  # one limit-trained teacher per site, or k random subsets


def limit_trained_subsets(
    cases: list[Case],
    train_ids: tuple[str, ...],
    mode: str = "site",
    k: int = 3,
    fraction: float | None = None,
    seed: int = 0,
) -> dict[str, tuple[str, ...]]:
    """Disjoint training subsets, one per limit-trained teacher.

    Args:
        cases: the dataset manifest (for sites and patients).
        train_ids: ids of the training cases to draw from.
        mode: ``"site"`` (one subset per site) or ``"random"`` (``k`` random subsets).
        k: number of random subsets.
        fraction: share of the training patients in each random subset (default ``1 / k``).
        seed: random seed.

    Returns:
        Subset name -> case ids; subsets never share a case or a patient.

    Raises:
        ConfigError: unknown mode, k < 1, or ``k * fraction`` over 1.
    """
    train = [c for c in cases if c.case_id in set(train_ids)]
    if mode == "site":
        return {
            site: tuple(sorted(c.case_id for c in train if c.site == site))
            for site in sorted({c.site for c in train})
        }
    if mode not in LIMIT_MODES:
        raise ConfigError(
            f"limit-trained subsets: unknown mode {mode!r} (use one of {', '.join(LIMIT_MODES)})"
        )
    if k < 1:
        raise ConfigError(f"limit-trained subsets: k must be at least 1, got {k}")
    fraction = 1.0 / k if fraction is None else fraction
    if not 0 < fraction * k <= 1 + 1e-9:
        raise ConfigError(
            f"limit-trained subsets: {k} subsets of {fraction} exceed the training set"
        )
    groups = _groups(train)
    order = _shuffled(sorted(groups), seed, "limit-trained")
    per_subset = max(1, int(len(order) * fraction))
    if per_subset * k > len(order):
        raise ConfigError(
            f"limit-trained subsets: {len(order)} training patients cannot fill {k} "
            f"subsets of {per_subset}"
        )
    return {
        f"subset{i}": tuple(
            sorted(
                cid for key in order[i * per_subset : (i + 1) * per_subset] for cid in groups[key]
            )
        )
        for i in range(k)
    }
