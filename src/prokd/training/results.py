"""An experiment's results: a row per evaluated model, the strategy chosen on validation,
and paired per-volume comparisons of the protocol's models."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prokd.evaluation.metrics import METRIC_NAMES
from prokd.evaluation.roles import DISTILLED_ROLES, STUDENT_NOKD, STUDENT_P2, TEACHER
from prokd.evaluation.stats import paired_comparison
from prokd.training.config import Config


@dataclass
class EvaluatedModel:
    """A model of the experiment as evaluated: its role (and how reports describe it),
    size, test summary and per-volume test Dice (case id -> Dice)."""

    name: str
    role: str
    description: str
    params: int | None
    summary: dict[str, Any]
    val_dice: float | None
    dice: dict[str, float]


def experiment_results(
    evaluated: list[EvaluatedModel],
    subsets: dict[str, tuple[str, ...]],
    skipped: list[str],
    config: Config,
) -> dict[str, Any]:
    """``results.json``: a row per model (role, size, test metrics, KD gain), the strategy
    chosen on validation, and the paired comparisons of the protocol's models."""
    nokd = next(m for m in evaluated if m.role == STUDENT_NOKD).summary["overall"]["dice"]
    rows = []
    for m in evaluated:
        overall = m.summary["overall"]
        rows.append(
            {
                "model": m.name,
                "kind": m.role,
                "role": m.description,
                "params": m.params,
                "val_dice": m.val_dice,
                **{k: {"mean": overall[k]["mean"], "std": overall[k]["std"]} for k in METRIC_NAMES},
                "seconds_per_volume": overall["seconds"]["mean"],
                "site_dice": {s: b["dice"]["mean"] for s, b in m.summary["sites"].items()},
                "kd_gain": overall["dice"]["mean"] - nokd["mean"]
                if m.role in DISTILLED_ROLES
                else None,
            }
        )
    p2 = [r for r in rows if r["kind"] == STUDENT_P2 and r["val_dice"] is not None]
    chosen = max(p2, key=lambda r: r["val_dice"])["model"] if p2 else None
    teacher = next(r for r in rows if r["kind"] == TEACHER)["dice"]["mean"]
    return {
        "rows": rows,
        "limit_subsets": {k: len(v) for k, v in subsets.items()},
        "strategy_selected_on_validation": chosen,
        "strategies_skipped": skipped,
        "teacher_gap": teacher - nokd["mean"],
        "comparisons": _comparisons(evaluated, chosen),
        "test_cases": evaluated[0].summary["overall"]["dice"]["n"],
        "config": config.to_dict(),
    }


# (name, model a, model b): "chosen" is the procedure-2 student chosen on validation (the
# adaptive student; it may be the uniform one, and that comparison is then a tie).
COMPARISONS = (
    ("p1 vs no-KD", "student-kd-p1", "student-nokd"),
    ("p1 vs teacher", "student-kd-p1", "teacher"),
    ("adaptive vs no-KD", "chosen", "student-nokd"),
    ("adaptive vs uniform", "chosen", "student-kd-p2-uniform"),
    ("adaptive vs pooled procedure 1", "chosen", "student-kd-p1"),
    ("adaptive vs best single-site teacher", "chosen", "student-kd-best-teacher"),
    ("kd vs semi-supervised", "chosen", "student-self-training"),
    # One fixed strategy against the baseline, not chosen on validation: the learned gate.
    ("gate vs uniform", "student-kd-p2-gate", "student-kd-p2-uniform"),
)


def case_dice(evaluation_dir: Path) -> dict[str, float]:
    """Test Dice per case (case id -> Dice) from an evaluation's ``metrics.csv``."""
    with open(Path(evaluation_dir) / "metrics.csv", newline="") as handle:
        return {row["case"]: float(row["dice"]) for row in csv.DictReader(handle)}


def case_patients(evaluation_dir: Path) -> dict[str, str]:
    """The patient of every case (case id -> patient) of an evaluation's ``metrics.csv``
    (the case itself where the file predates the patient column)."""
    with open(Path(evaluation_dir) / "metrics.csv", newline="") as handle:
        return {row["case"]: row.get("patient") or row["case"] for row in csv.DictReader(handle)}


def paired_scores(
    dice: dict[str, dict[str, float]], chosen: str | None
) -> dict[str, tuple[str, str, list[str], list[float], list[float]]]:
    """For each of :data:`COMPARISONS` whose models were evaluated: the names of models a
    ("chosen" resolved) and b, the cases, and the two models' Dice on them in that order (a model
    compared with itself, the chosen student being the uniform one, is a tie)."""
    pairs = {}
    for label, a, b in COMPARISONS:
        a = chosen if a == "chosen" else a
        if a in dice and b in dice:
            cases = sorted(dice[a])
            pairs[label] = (a, b, cases, [dice[a][c] for c in cases], [dice[b][c] for c in cases])
    return pairs


def _comparisons(evaluated: list[EvaluatedModel], chosen: str | None) -> dict[str, Any]:
    """Paired per-volume test-Dice comparisons (difference a - b) of the protocol's models."""
    pairs = paired_scores({m.name: m.dice for m in evaluated}, chosen)
    return {
        label: {"a": a, "b": b, **paired_comparison(scores_a, scores_b)}
        for label, (a, b, _, scores_a, scores_b) in pairs.items()
    }
