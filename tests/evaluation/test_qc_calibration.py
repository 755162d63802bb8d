import pytest

from prokd.evaluation.qc_calibration import PRIOR_LEVEL, choose_level, qc_rates
from prokd.inference.reliability import LEVELS, judge


def _signals(mirror=0.95, uncertain=0.2, distance=5.0, ratio=1.0, offset=3.0, ml=40.0):
    return {
        "localiser_found": True,
        "gland_ml": ml,
        "localiser_ml": ml / ratio,
        "mirror_dice": mirror,
        "uncertain_fraction": uncertain,
        "localiser_distance_mm": distance,
        "localiser_volume_ratio": ratio,
        "midline_offset_mm": offset,
    }


def test_judge_reads_each_signal_at_its_threshold():
    limits = LEVELS[PRIOR_LEVEL]
    assert judge(_signals(), limits).reliable
    cases = {
        "mirrored image": _signals(mirror=limits["mirror_dice"] - 0.01),
        "uncertain voxels": _signals(uncertain=limits["uncertain_fraction"] + 0.01),
        "from where the localiser": _signals(distance=limits["localiser_distance_mm"] + 1),
        "differ in size": _signals(ratio=1 / (limits["localiser_volume_ratio"] + 0.5)),
        "off the body's midline": _signals(offset=limits["midline_offset_mm"] + 1),
        "outside 10-150 ml": _signals(ml=5.0),
    }
    for words, signals in cases.items():
        verdict = judge(signals, limits)
        assert not verdict.reliable and len(verdict.reasons) == 1, words
        assert words in verdict.reasons[0]
    empty = judge({"localiser_found": False, "gland_ml": 0.0}, limits)
    assert not empty.reliable and len(empty.reasons) == 2


def test_levels_run_from_lenient_to_strict():
    """A signal that one level marks, every stricter level marks too."""
    from prokd.inference.reliability import SIGNALS

    for signal in SIGNALS:
        for lenient, strict in zip(signal.limits, signal.limits[1:], strict=False):
            for value in (0.01, 0.3, 0.7, 0.82, 0.95, 1.0, 2.5, 7.0, 22.0, 35.0, 48.0, 99.0):
                assert not signal.fails(value, lenient) or signal.fails(value, strict), (
                    signal.key,
                    value,
                )


def test_rates_count_failed_good_and_middle_masks():
    rows = [
        (_signals(mirror=0.5), 0.3),  # failed, caught
        (_signals(), 0.4),  # failed, missed
        (_signals(), 0.9),  # good, passed
        (_signals(offset=60.0), 0.85),  # good, false alarm
        (_signals(uncertain=0.9), 0.6),  # middle, marked
    ]
    rates = qc_rates(rows, LEVELS[PRIOR_LEVEL])
    assert (rates.failed, rates.caught, rates.good, rates.false_alarms) == (2, 1, 2, 1)
    assert (rates.middle, rates.middle_marked) == (1, 1)
    assert rates.catch_rate == pytest.approx(0.5) and rates.false_alarm_rate == pytest.approx(0.5)
    assert qc_rates([(_signals(), 0.9)], LEVELS[0]).catch_rate is None


def test_the_chosen_level_catches_what_the_prior_misses_without_false_alarms():
    # a failure whose mirror Dice (0.82) only the two strictest levels catch
    failure = (_signals(mirror=0.82), 0.2)
    good = [(_signals(mirror=0.97), 0.9) for _ in range(10)]
    assert choose_level([failure, *good]) == 3  # the nearer of the two to the prior
    # ... but not when that level marks a good volume in more than 10% of them
    borderline = [(_signals(mirror=0.84), 0.85) for _ in range(3)]
    assert choose_level([failure, *good, *borderline]) == PRIOR_LEVEL


def test_without_evidence_the_prior_level_stands():
    good = [(_signals(), 0.9) for _ in range(5)]
    assert choose_level(good) == PRIOR_LEVEL
    # every level raises too many alarms: the most lenient
    noisy = [(_signals(mirror=0.5), 0.9) for _ in range(5)]
    assert choose_level(noisy) == 0
