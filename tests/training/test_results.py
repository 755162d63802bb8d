"""``results.json`` from evaluated models: KD gains against the no-KD student, the strategy
chosen on validation (never on test), and paired comparisons resolved to that choice."""

import pytest

from prokd.evaluation.roles import STUDENT_NOKD, STUDENT_P1, STUDENT_P2, TEACHER
from prokd.training.config import config_from_dict
from prokd.training.results import EvaluatedModel, experiment_results, paired_scores

CASES = ("c1", "c2", "c3")


def _model(name, role, dice, val_dice=None):
    overall = {
        key: {"mean": sum(dice) / len(dice), "std": 0.0, "n": len(dice)}
        for key in ("dice", "iou", "hd95", "assd", "seconds")
    }
    summary = {"overall": overall, "sites": {"S": {"dice": overall["dice"]}}}
    return EvaluatedModel(
        name, role, role, 100, summary, val_dice, dict(zip(CASES, dice, strict=True))
    )


def test_gains_the_validation_choice_and_the_comparisons():
    evaluated = [
        _model("teacher", TEACHER, [0.9, 0.9, 0.9]),
        _model("student-nokd", STUDENT_NOKD, [0.6, 0.6, 0.6]),
        _model("student-kd-p1", STUDENT_P1, [0.7, 0.7, 0.7]),
        # the best on test is not the one validation picks
        _model("student-kd-p2-uniform", STUDENT_P2, [0.8, 0.8, 0.8], val_dice=0.70),
        _model("student-kd-p2-site", STUDENT_P2, [0.65, 0.66, 0.67], val_dice=0.75),
    ]
    results = experiment_results(evaluated, {"S": CASES}, [], config_from_dict({}))
    rows = {r["model"]: r for r in results["rows"]}
    assert rows["student-kd-p1"]["kd_gain"] == pytest.approx(0.1)
    assert rows["student-nokd"]["kd_gain"] is None and rows["teacher"]["kd_gain"] is None
    assert results["strategy_selected_on_validation"] == "student-kd-p2-site"
    assert results["teacher_gap"] == pytest.approx(0.3) and results["test_cases"] == 3
    comparisons = results["comparisons"]
    assert comparisons["adaptive vs uniform"]["a"] == "student-kd-p2-site"
    assert comparisons["adaptive vs uniform"]["mean"] == pytest.approx(-0.14)
    assert "gate vs uniform" not in comparisons  # not evaluated: not compared


def test_paired_scores_pair_by_case():
    dice = {"student-kd-p1": {"b": 0.2, "a": 0.1}, "student-nokd": {"a": 0.3, "b": 0.4}}
    a, b, cases, scores_a, scores_b = paired_scores(dice, None)["p1 vs no-KD"]
    assert (a, b, cases, scores_a, scores_b) == (
        "student-kd-p1",
        "student-nokd",
        ["a", "b"],
        [0.1, 0.2],
        [0.3, 0.4],
    )
