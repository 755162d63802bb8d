import itertools

import numpy as np
import pytest
from scipy import stats

from prokd.evaluation.stats import paired_comparison


def test_paired_comparison_against_direct_computation():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.6, 0.9, 20)
    a = b + rng.normal(0.03, 0.02, 20)
    result = paired_comparison(a, b, resamples=4000, seed=1)
    diff = a - b
    assert result["n"] == 20 and result["wins"] == int((diff > 0).sum())
    assert result["mean"] == pytest.approx(diff.mean())
    assert result["std"] == pytest.approx(diff.std(ddof=1))
    # percentile bootstrap by hand: means of resampled differences
    draws = np.random.default_rng(2).integers(0, 20, (4000, 20))
    by_hand = np.percentile(diff[draws].mean(1), [2.5, 97.5])
    assert result["ci95"] == pytest.approx(by_hand, abs=0.004)
    assert result["ci95"][0] < result["mean"] < result["ci95"][1]


def test_paired_comparison_edge_cases():
    all_better = paired_comparison(np.arange(1, 11), np.zeros(10))
    assert all_better["wilcoxon_p"] == pytest.approx(2 / 1024)  # exact two-sided
    same = paired_comparison([0.8, 0.7], [0.8, 0.7])
    assert same["wilcoxon_p"] == 1.0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_comparison([0.1], [0.1, 0.2])


def _exact_signed_rank_p(diff: np.ndarray) -> float:
    """The exact two-sided signed-rank p by enumerating every sign pattern (no ties)."""
    ranks = stats.rankdata(np.abs(diff))
    observed = min(ranks[diff > 0].sum(), ranks[diff < 0].sum())
    signs = np.array(list(itertools.product((0, 1), repeat=len(diff))), dtype=bool)
    positive = (signs * ranks).sum(axis=1)
    smaller = np.minimum(positive, ranks.sum() - positive)
    return float(np.mean(smaller <= observed))


def test_wilcoxon_p_equals_the_exact_enumeration():
    rng = np.random.default_rng(3)
    b = rng.uniform(0.6, 0.9, 12)
    a = b + rng.permutation(np.linspace(-0.02, 0.05, 12))  # distinct |differences|
    result = paired_comparison(a, b, resamples=100, seed=0)
    assert result["wilcoxon_p"] == pytest.approx(_exact_signed_rank_p(a - b), rel=1e-9)
