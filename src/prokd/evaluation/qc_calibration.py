"""How well the QC verdict separates failed masks from good ones, and the strictness level
chosen for it on validation volumes.

A failed mask has Dice < 0.5 against the reference, a good one Dice >= 0.8 (issue 18's
definitions). The catch rate is the share of failed masks marked unreliable, the
false-alarm rate the share of good masks marked unreliable. Rates are computed from the
signals stored for each volume (:func:`prokd.inference.reliability.measure`), re-judged at
each level of :data:`prokd.inference.reliability.LEVELS`, so calibration never re-runs a
model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from prokd.inference.reliability import LEVELS, judge

FAILED_BELOW = 0.5
GOOD_FROM = 0.8
PRIOR_LEVEL = 2  # the level set beforehand; validation moves away from it only for a gain
MAX_FALSE_ALARM = 0.10


@dataclass(frozen=True)
class QCRates:
    """Counts behind the catch and false-alarm rates of one set of thresholds."""

    volumes: int
    failed: int
    caught: int
    good: int
    false_alarms: int
    middle: int
    middle_marked: int

    @property
    def catch_rate(self) -> float | None:
        """Failed masks marked unreliable, as a share (``None`` without a failed mask)."""
        return self.caught / self.failed if self.failed else None

    @property
    def false_alarm_rate(self) -> float | None:
        """Good masks marked unreliable, as a share (``None`` without a good mask)."""
        return self.false_alarms / self.good if self.good else None

    def as_dict(self) -> dict[str, Any]:
        """Counts and both rates, for JSON."""
        return {
            **asdict(self),
            "catch_rate": self.catch_rate,
            "false_alarm_rate": self.false_alarm_rate,
        }


def qc_rates(rows: Sequence[tuple[dict[str, Any], float]], limits: dict[str, float]) -> QCRates:
    """Rates of the verdict at a level's ``limits`` over ``(signals, dice)`` pairs."""
    marked = [(not judge(signals, limits).reliable, dice) for signals, dice in rows]
    failed = [m for m, dice in marked if dice < FAILED_BELOW]
    good = [m for m, dice in marked if dice >= GOOD_FROM]
    middle = [m for m, dice in marked if FAILED_BELOW <= dice < GOOD_FROM]
    return QCRates(
        volumes=len(rows),
        failed=len(failed),
        caught=sum(failed),
        good=len(good),
        false_alarms=sum(good),
        middle=len(middle),
        middle_marked=sum(middle),
    )


def choose_level(
    rows: Sequence[tuple[dict[str, Any], float]], max_false_alarm: float = MAX_FALSE_ALARM
) -> int:
    """The strictness level (an index into ``LEVELS``) for validation ``(signals, dice)``
    pairs: the highest catch rate minus false-alarm rate among the levels whose false-alarm
    rate is at most ``max_false_alarm``; ties go to the level nearest :data:`PRIOR_LEVEL`,
    then to the more lenient. With no level within the false-alarm limit, the most lenient.
    A missing rate (no failed or no good mask) counts as 0."""
    scored = []
    for level, limits in enumerate(LEVELS):
        rates = qc_rates(rows, limits)
        false_alarm = rates.false_alarm_rate or 0.0
        if false_alarm <= max_false_alarm:
            gain = (rates.catch_rate or 0.0) - false_alarm
            scored.append((-gain, abs(level - PRIOR_LEVEL), level))
    return min(scored)[2] if scored else 0


def total_rates(parts: Sequence[QCRates]) -> QCRates:
    """The counts of several sets of volumes (e.g. folds, each at its own level) added."""
    names = [f.name for f in fields(QCRates)]
    return QCRates(*(sum(getattr(p, name) for p in parts) for name in names))
