"""Paired comparisons of two models on the same volumes: Wilcoxon test and bootstrap CI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


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
        "std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
        "ci95": ci,
        "wilcoxon_p": p,
        "wins": int((diff > 0).sum()),
    }
