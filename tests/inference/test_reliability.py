"""The QC signals' registry: every signal gives its reason exactly beyond its limit, and the
README's and the model card's tables are the registry's own (the one place thresholds live)."""

import re
from pathlib import Path

import pytest

from prokd.inference.reliability import (
    CALIBRATED_LEVEL,
    LEVELS,
    SIGNALS,
    judge,
    thresholds_table,
)

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- qc-thresholds:[^\n]*-->\n(.*?)\n<!-- /qc-thresholds -->", re.S)
CALM = {  # well inside every level's limits
    "localiser_found": True,
    "gland_ml": 40.0,
    "localiser_ml": 40.0,
    "mirror_dice": 0.97,
    "uncertain_fraction": 0.1,
    "localiser_distance_mm": 2.0,
    "localiser_volume_ratio": 1.0,
    "midline_offset_mm": 1.0,
}


@pytest.mark.parametrize("document", ["README.md", "docs/model-card.md"])
def test_the_documents_hold_the_registry_table(document):
    found = BLOCK.findall((ROOT / document).read_text())
    assert found == [thresholds_table(CALIBRATED_LEVEL)], (
        f"{document}: replace the qc-thresholds block with thresholds_table()'s output:\n"
        + thresholds_table(CALIBRATED_LEVEL)
    )


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.key)
def test_each_signal_gives_its_reason_exactly_beyond_its_limit(signal):
    assert judge(CALM).reliable
    for level, limits in enumerate(LEVELS):
        limit = limits[signal.key]
        assert limit == signal.limits[level]
        for value in (limit * 1.02, limit * 0.98):  # one of them is beyond the limit
            beyond = signal.fails(value, limit)
            verdict = judge({**CALM, signal.key: value}, limits)
            assert verdict.reliable == (not beyond)
            if beyond:
                assert verdict.reasons == [signal.reason(value, {**CALM, signal.key: value})]
        assert judge({**CALM, signal.key: None}, limits).reliable  # not measured: no verdict


def test_every_signal_is_documented_and_has_five_levels():
    assert len({signal.key for signal in SIGNALS}) == len(SIGNALS)
    for signal in SIGNALS:
        assert len(signal.limits) == len(LEVELS) == 5
        assert f"`{signal.key}`" in thresholds_table() and signal.measures
