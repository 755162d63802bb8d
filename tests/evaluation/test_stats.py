import itertools

import numpy as np
import pytest
from scipy import stats

from prokd.evaluation.stats import holm, paired_comparison, seed_level_comparison, t_interval


def test_paired_comparison_against_direct_computation():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.6, 0.9, 20)
    a = b + rng.normal(0.03, 0.02, 20)
    result = paired_comparison(a, b)
    diff = a - b
    assert result["n"] == 20 and result["wins"] == int((diff > 0).sum())
    assert result["mean"] == pytest.approx(diff.mean())
    assert result["std"] == pytest.approx(diff.std(ddof=1))
    # the t interval by hand: mean ± t(0.975, 19) * s / sqrt(20); t(0.975, 19) = 2.0930
    half = 2.093024 * diff.std(ddof=1) / np.sqrt(20)
    assert result["ci95"] == pytest.approx([diff.mean() - half, diff.mean() + half], rel=1e-5)


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
    result = paired_comparison(a, b)
    assert result["wilcoxon_p"] == pytest.approx(_exact_signed_rank_p(a - b), rel=1e-9)


def test_seed_level_answer_where_pooled_volumes_mislead():
    """Three seeds test the same 10 volumes. Within a seed every volume moves together (a
    seed effect), and the seeds disagree: pooling the 30 pairs as independent finds a
    'significant' gain; the seed level (3 observations) does not."""
    rng = np.random.default_rng(0)
    pairs = []
    for seed, effect in zip((0, 1, 2), (0.05, -0.03, 0.04), strict=True):
        for volume in range(10):
            b = 0.8 + 0.01 * volume
            pairs.append((seed, f"v{volume}", b + effect + rng.normal(0, 0.002), b))
    pooled = paired_comparison([p[2] for p in pairs], [p[3] for p in pairs])
    assert pooled["n"] == 30 and pooled["wilcoxon_p"] < 0.05
    result = seed_level_comparison(pairs)
    assert result["n_seeds"] == 3 and result["n_volumes"] == 10
    seed_means = [np.mean([p[2] - p[3] for p in pairs if p[0] == s]) for s in (0, 1, 2)]
    assert result["mean"] == pytest.approx(np.mean(seed_means))
    assert result["p"] == pytest.approx(stats.ttest_1samp(seed_means, 0.0).pvalue)
    assert result["p"] > 0.3 and result["ci"][0] < 0 < result["ci"][1]
    half = 4.302653 * np.std(seed_means, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert result["ci"] == pytest.approx([np.mean(seed_means) - half, np.mean(seed_means) + half])
    assert result["wins"] == 2 and result["ties"] == 0


def test_seed_level_comparison_counts_ties_and_distinct_volumes():
    # seed 1 compares a model with itself (the chosen student was the uniform one): a tie
    pairs = [(0, "v1", 0.9, 0.8), (0, "v2", 0.7, 0.6), (1, "v2", 0.7, 0.7), (1, "v3", 0.5, 0.5)]
    result = seed_level_comparison(pairs)
    assert result["n_seeds"] == 2 and result["n_volumes"] == 3
    assert result["ties"] == 1 and result["wins"] == 1
    assert result["mean"] == pytest.approx(0.05)
    assert seed_level_comparison(pairs[:2])["p"] is None  # one seed: no test
    with pytest.raises(ValueError, match="at least one"):
        seed_level_comparison([])


def test_holm_against_a_hand_computed_family():
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4 * 0.01, 3 * 0.03, max(0.09, 2 * 0.04), max(0.09, 0.2)
    adjusted = holm([0.01, 0.04, 0.03, 0.2])
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, None, 0.4]) == pytest.approx([0.8, None, 0.8])  # min(1, 2*0.4), kept monotone
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_the_t_interval_is_the_textbook_one():
    values = [0.71, 0.64, 0.80, 0.77, 0.69]
    mean, sd, n = np.mean(values), np.std(values, ddof=1), len(values)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    np.testing.assert_allclose(t_interval(values), [mean - half, mean + half])
    assert t_interval([0.5]) == [0.5, 0.5] and t_interval([0.2, 0.2]) == [0.2, 0.2]


def test_patient_level_comparison_against_a_hand_computation():
    """Three patients: p1 with two volumes (its simulated versions), p2 with three, p3
    with one. Each patient's mean difference is one observation: (0.1 + 0.3) / 2 = 0.2,
    (-0.1 + 0.0 + 0.1) / 3 = 0.0, 0.4; mean 0.2, sample std 0.2, t 95% CI 0.2 +- t(0.975,
    2) * 0.2 / sqrt(3) with t(0.975, 2) = 4.302653, p from t = 0.2 / (0.2 / sqrt 3) = 1.732
    on 2 degrees of freedom: 0.2254. Pooling the six volumes would say n = 6."""
    from prokd.evaluation.stats import patient_level_comparison

    pairs = [
        ("p1", 0.8, 0.7),
        ("p1", 0.6, 0.3),
        ("p2", 0.5, 0.6),
        ("p2", 0.5, 0.5),
        ("p2", 0.7, 0.6),
        ("p3", 0.9, 0.5),
    ]
    result = patient_level_comparison(pairs)
    assert result["n_patients"] == 3 and result["n_volumes"] == 6
    assert result["mean"] == pytest.approx(0.2)
    assert result["std"] == pytest.approx(0.2)
    half = 4.302653 * 0.2 / np.sqrt(3)
    assert result["ci"] == pytest.approx([0.2 - half, 0.2 + half], abs=1e-6)
    assert result["p"] == pytest.approx(0.2254, abs=1e-4)
    assert result["wins"] == 2  # p1 and p3; p2's mean difference is 0
    with pytest.raises(ValueError):
        patient_level_comparison([])
