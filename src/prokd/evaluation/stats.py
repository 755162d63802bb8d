"""Summaries and paired comparisons of per-volume scores: mean ± std, Wilcoxon test and
bootstrap CI.

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


def paired_comparison(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Compare per-volume scores ``a`` and ``b`` (same volumes, same order): ``a - b``.

    Returns:
        ``n``, the mean and sample std of the differences, a bootstrap 95% CI of the mean
        difference (percentile method, seeded), the two-sided Wilcoxon signed-rank p-value
        (1.0 when every difference is zero), and ``wins``: volumes where ``a`` is higher.

    Raises:
        ValueError: ``a`` and ``b`` differ in length or are empty.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired comparison needs two equal, non-empty lists ({len(a)}, {len(b)})")
    diff = a - b
    mean = float(diff.mean())
    if len(diff) > 1 and np.ptp(diff) > 0:
        interval = stats.bootstrap(
            (diff,),
            np.mean,
            n_resamples=resamples,
            confidence_level=0.95,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        ci = [float(interval.low), float(interval.high)]
    else:
        ci = [mean, mean]
    p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {
        "n": len(diff),
        "mean": mean,
        "std": sample_std(diff),
        "ci95": ci,
        "wilcoxon_p": p,
        "wins": int((diff > 0).sum()),
    }
