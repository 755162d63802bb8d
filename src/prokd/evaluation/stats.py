"""Summaries and paired comparisons of scores: mean ± std, t intervals, Wilcoxon and t
tests, Holm's correction.

Within one run the volumes are the units (:func:`paired_comparison`). Over several seeds the
seed is the unit of replication (:func:`seed_level_comparison`): the same test volume under
several seeds is one volume, not several. Over the test volumes of several folds the patient
is the unit (:func:`patient_level_comparison`): a patient's volumes (two acquisitions, its
simulated protocols) are one patient, not several.

One convention throughout prokd: a standard deviation is the sample standard deviation
(``ddof=1``), 0 for a single value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def describe(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), median and count."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": sample_std(array),
        "median": float(np.median(array)),
        "n": int(array.size),
    }


def sample_std(values: np.ndarray) -> float:
    """The sample standard deviation (``ddof=1``); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float]:
    """The Student-t confidence interval of the mean, ``[low, high]`` (one value, or values
    without spread: ``[mean, mean]``); it holds at small n where a percentile bootstrap
    undercovers."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2 or sample_std(array) == 0:
        return [mean, mean]
    interval = stats.ttest_1samp(array, 0.0).confidence_interval(level)
    return [float(interval.low), float(interval.high)]


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Compare per-volume scores ``a`` and ``b`` of one run (same volumes, same order):
    ``a - b``.

    Returns:
        ``n``, the mean and sample std of the differences, the t 95% CI of the mean
        difference, the two-sided Wilcoxon signed-rank p-value (1.0 when every difference
        is zero), and ``wins``: volumes where ``a`` is higher.

    Raises:
        ValueError: ``a`` and ``b`` differ in length or are empty.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired comparison needs two equal, non-empty lists ({len(a)}, {len(b)})")
    diff = a - b
    return {
        "n": len(diff),
        "mean": float(diff.mean()),
        "std": sample_std(diff),
        "ci95": t_interval(diff),
        "wilcoxon_p": _wilcoxon(diff),
        "wins": int((diff > 0).sum()),
    }


def _wilcoxon(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (1.0 when all are zero)."""
    return float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0


def seed_level_comparison(pairs: Sequence[tuple[int, str, float, float]]) -> dict[str, Any]:
    """Compare models a and b over several seeds, with the seed as the unit of replication.

    ``pairs`` holds ``(seed, volume, score a, score b)``; every seed may test other volumes,
    and a volume tested under several seeds is one volume. Each seed's mean difference over
    its volumes is one observation: the mean over seeds, their sample std, the t 95% CI and
    the one-sample t-test p (two-sided; ``None`` with one seed). A seed where a and b score
    the same everywhere (the same model) is a tie and counts as a zero difference.
    ``volume_p``: the Wilcoxon signed-rank p over distinct volumes, each volume's
    difference averaged over its seeds first.

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("a seed-level comparison needs at least one (seed, volume) pair")
    by_seed: dict[int, list[float]] = {}
    by_volume: dict[str, list[float]] = {}
    for seed, volume, a, b in pairs:
        by_seed.setdefault(seed, []).append(a - b)
        by_volume.setdefault(volume, []).append(a - b)
    seeds = sorted(by_seed)
    means = np.array([np.mean(by_seed[s]) for s in seeds])
    volume_means = np.array([np.mean(v) for v in by_volume.values()])
    return {
        "n_seeds": len(seeds),
        "n_volumes": len(by_volume),
        "mean": float(means.mean()),
        "std": sample_std(means),
        "ci": t_interval(means),
        "p": _one_sample_t(means),
        "seeds": seeds,
        "seed_means": means.tolist(),  # in the order of ``seeds``
        "wins": int((means > 0).sum()),
        "ties": int((means == 0).sum()),
        "volume_p": _wilcoxon(volume_means),
    }


def patient_level_comparison(pairs: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    """Compare models a and b with the patient as the unit: ``pairs`` holds ``(patient,
    score a, score b)`` for every test volume (and seed); each patient's mean difference is
    one observation.

    Returns:
        ``n_patients``, ``n_volumes``, the mean over patients of their mean differences, its
        sample std, the t 95% CI, the one-sample t-test p (``None`` for one patient), the
        Wilcoxon signed-rank p over patients, and ``wins``: patients where a is higher.

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("a patient-level comparison needs at least one volume")
    by_patient: dict[str, list[float]] = {}
    for patient, a, b in pairs:
        by_patient.setdefault(patient, []).append(a - b)
    means = np.array([np.mean(v) for v in by_patient.values()])
    return {
        "n_patients": len(means),
        "n_volumes": len(pairs),
        "mean": float(means.mean()),
        "std": sample_std(means),
        "ci": t_interval(means),
        "p": _one_sample_t(means),
        "wilcoxon_p": _wilcoxon(means),
        "wins": int((means > 0).sum()),
    }


def _one_sample_t(values: np.ndarray) -> float | None:
    """Two-sided one-sample t-test p that the mean is 0 (``None`` for one value; values
    without spread: 1.0 at zero, 0.0 elsewhere)."""
    if len(values) < 2:
        return None
    if sample_std(values) == 0:
        return 1.0 if values[0] == 0 else 0.0
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of one family of tests, in the given order
    (``None`` entries are not tests: they stay ``None`` and do not count)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted
