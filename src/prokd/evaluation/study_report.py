"""``study.md`` and the study's figures, rendered from the summary ``prokd study`` stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prokd.evaluation.markdown import Block, plus_minus, render_markdown
from prokd.evaluation.plots import pareto_plot, regime_plot
from prokd.evaluation.roles import LIMIT_TEACHER, STUDENT_BEST_TEACHER, STUDENT_P2, STUDENT_SELF
from prokd.io_atomic import write_json_and_markdown

# Models of every cell, in table order; procedure-2 students, the baseline students and the
# limit-trained (site) teachers follow.
FIXED_MODELS = ("teacher", "ensemble-limit", "student-nokd", "student-kd-p1")
FOLLOWING_ROLES = (STUDENT_P2, STUDENT_BEST_TEACHER, STUDENT_SELF, LIMIT_TEACHER)


def _models(regime: dict[str, Any]) -> list[str]:
    names = list(regime["dice"])
    following = [n for role in FOLLOWING_ROLES for n in names if regime["roles"].get(n) == role]
    return [n for n in FIXED_MODELS if n in names] + following


def regime_label(name: str, r: dict[str, Any]) -> str:
    """A regime's (or pool's) name as tables show it, marked where a volume of it helped
    choose a setting (its fold's source is exploratory)."""
    folds = r.get("exploratory_folds") or []
    if not folds:
        return name
    if r.get("pooled_from"):
        return f"{name} (exploratory folds: {', '.join(folds)})"
    return f"{name} (exploratory)"


def metric_table(summary: dict[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per regime (or pool), mean ± std over its finished cells of each
    model's ``metric`` (``dice``, ``hd95``, ``assd`` or ``seconds``)."""
    regimes = summary["regimes"]
    models = list(dict.fromkeys(m for r in regimes.values() for m in _models(r)))
    rows = [
        [regime_label(name, r), *[plus_minus(r[metric].get(m)) for m in models]]
        for name, r in regimes.items()
    ]
    return ["regime", *models], rows


def dice_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per regime (or pool), its cells, the teacher gap, the chosen
    procedure-2 student and mean ± std over its finished cells of each model's test Dice."""
    header, dice_rows = metric_table(summary, "dice")
    rows = []
    for (name, r), dice in zip(summary["regimes"].items(), dice_rows, strict=True):
        ratio = r["chosen_p2_over_teacher"]
        rows.append(
            [
                regime_label(name, r),
                str(r["cells"]),
                f"{r['teacher_gap']['mean']:+.3f} ± {r['teacher_gap']['std']:.3f}",
                plus_minus(r["chosen_p2_dice"]),
                "" if ratio is None else f"{ratio:.3f}",
                *dice[1:],
            ]
        )
    return [
        "regime",
        "cells",
        "teacher - no-KD",
        "chosen p2",
        "chosen / teacher",
        *header[1:],
    ], rows


def validation_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per regime, mean ± std over seeds of each model's validation Dice
    (what tuning compares: never the test columns)."""
    regimes = summary["regimes"]
    models = list(dict.fromkeys(m for r in regimes.values() for m in r["val_dice"]))
    header = ["regime", "chosen p2", *models]
    rows = [
        [
            regime_label(name, r),
            plus_minus(r["chosen_p2_val_dice"]),
            *[plus_minus(r["val_dice"].get(m)) for m in models],
        ]
        for name, r in regimes.items()
    ]
    return header, rows


def pareto_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per regime: its student's onnxruntime ms per volume, no-KD and chosen-KD Dice."""
    latency = summary.get("latency", {}).get("ms_per_volume", {})
    points = []
    for name, r in summary["regimes"].items():
        config = r["config"]
        key = f"{config['experiment']['student']}@{config['preprocess']['size']}"
        if key in latency and r["chosen_p2_dice"] is not None:
            points.append(
                {
                    "regime": name,
                    "student": key,
                    "ms": latency[key],
                    "nokd": r["dice"]["student-nokd"]["mean"],
                    "kd": r["chosen_p2_dice"]["mean"],
                }
            )
    return points


def _summary_blocks(summary: dict[str, Any]) -> list[Block]:
    """What the study is, and its tables over every regime."""
    blocks: list[Block] = [
        ("h1", f"prokd study: {summary['name']}"),
        ("p", f"Study file: `{summary['study']}`. {summary['description']}".strip()),
        (
            "p",
            f"Made by `{summary['command']}` on {summary['machine']}. Each cell is one "
            "`prokd experiment` run by `prokd study` (without `--summarise`).",
        ),
        (
            "p",
            f"Seeds: {', '.join(str(s) for s in summary['seeds'])} (split and training seed). "
            "Test Dice per 3D volume, averaged per cell, then mean ± std over seeds (over every "
            "cell of its regimes for a pool). "
            "'chosen p2': the procedure-2 student whose strategy had the best validation Dice "
            "in its cell (never chosen on test). 'teacher - no-KD': the most KD could give.",
        ),
        ("table", *dice_table(summary)),
    ]
    if summary["regimes_not_run"]:
        missing = ", ".join(summary["regimes_not_run"])
        blocks.append(("p", f"Regimes with no finished cell yet: {missing}."))
    blocks += [
        ("p", "HD95 (mm) per test volume, mean per cell, then mean ± std over cells:"),
        ("table", *metric_table(summary, "hd95")),
        ("p", "ASSD (mm):"),
        ("table", *metric_table(summary, "assd")),
        (
            "p",
            "Seconds per test volume: each model's prediction with its preprocessing (reading "
            "and writing excluded), every model of a cell in one process with the same "
            "threads; a volume model's is its whole pipeline; a student's runs in torch:",
        ),
        ("table", *metric_table(summary, "seconds")),
        ("p", "Validation Dice (best epoch of each run; what model selection and tuning read):"),
        ("table", *validation_table(summary)),
    ]
    if summary.get("contrasts"):
        blocks += [
            (
                "p",
                "Regimes compared (the study file's `contrasts`): one model of regime (or "
                "pool) a against b, on the test volumes both scored with the same seed, each "
                "patient's mean difference one observation; 'held out': the same without the "
                "exploratory folds' volumes.",
            ),
            ("table", *contrast_table(summary["contrasts"])),
        ]
    if summary.get("best_on_validation") and len(summary["regimes"]) > 1:
        blocks.append(
            (
                "p",
                "Highest validation Dice of the distilled student (procedure 2's "
                "validation-chosen one, or procedure 1's where procedure 2 is off): "
                f"**{summary['best_on_validation']}** (what a tuning study picks).",
            )
        )
    return blocks


def _patients_cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return "-"
    ci = "" if p["ci"] is None else f" [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
    return f"{p['mean']:+.3f}{ci}, {p['wins']} of {p['n_patients']} ({p['n_volumes']} volumes)"


def contrast_table(contrasts: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the study's regime contrasts (mean a - b, t 95% CI, patients a
    wins, over all patients and over the held-out folds' only)."""
    header = ["model", "a", "b", "a - b, per patient", "p (t)", "held out: a - b"]
    body = [
        [
            c["model"],
            c["a"],
            c["b"],
            _patients_cell(c["patients"]),
            _p(c["patients"]["p"]),
            _patients_cell(c["held_out"]),
        ]
        for c in contrasts
    ]
    return header, body


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def seed_comparison_rows(
    comparisons: list[dict[str, Any]], regime: str
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one regime's seed-level comparisons (see
    :func:`~prokd.evaluation.stats.seed_level_comparison`)."""
    header = [
        "comparison",
        "a",
        "b",
        "seeds",
        "volumes",
        "mean a - b",
        "std over seeds",
        "95% CI (t)",
        "seeds a wins / ties",
        "p (t, seeds)",
        "p Holm",
        "p (Wilcoxon, volumes)",
    ]
    body = [
        [
            c["name"],
            c["a"],
            c["b"],
            str(c["n_seeds"]),
            str(c["n_volumes"]),
            f"{c['mean']:+.3f}",
            f"{c['std']:.3f}",
            f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]",
            f"{c['wins']} / {c['ties']}",
            _p(c["p"]),
            _p(c["p_holm"]),
            _p(c["volume_p"]),
        ]
        for c in comparisons
        if c["regime"] == regime
    ]
    return header, body


def patient_comparison_rows(
    comparisons: list[dict[str, Any]], regime: str
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one regime's patient-level comparisons (see
    :func:`~prokd.evaluation.stats.patient_level_comparison`)."""
    header = [
        "comparison",
        "patients",
        "volumes",
        "mean a - b",
        "std over patients",
        "95% CI (t)",
        "patients a wins",
        "p (t, patients)",
        "p (Wilcoxon, patients)",
    ]
    body = []
    for c in comparisons:
        if c["regime"] != regime or "patients" not in c:
            continue
        p = c["patients"]
        body.append(
            [
                c["name"],
                str(p["n_patients"]),
                str(p["n_volumes"]),
                f"{p['mean']:+.3f}",
                f"{p['std']:.3f}",
                f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]",
                str(p["wins"]),
                _p(p["p"]),
                _p(p["wilcoxon_p"]),
            ]
        )
    return header, body


def _regime_blocks(
    regime: str, r: dict[str, Any], comparisons: list[dict[str, Any]]
) -> list[Block]:
    """One regime's (or pool's) seeds and paired comparisons."""
    pool = r.get("pooled_from")
    chosen = [s for s in r["chosen_strategies"] if s]
    return [
        ("h2", regime_label(regime, r)),
        (
            "p",
            (f"Pool of the regimes {', '.join(pool)}; " if pool else "")
            + f"seeds run: {r['seeds']}"
            + (f"; missing: {r['seeds_missing']}" if r["seeds_missing"] else "")
            + (f". Strategies chosen on validation: {', '.join(chosen)}." if chosen else "."),
        ),
        (
            "p",
            "Paired test Dice, a - b, with the seed as the unit of replication: each seed's "
            f"mean difference over its test volumes{' (all its folds)' if pool else ''} is one "
            "observation; mean, std, t 95% CI and two-sided t-test p over seeds; p Holm "
            f"corrects each comparison over the study's {'pools' if pool else 'regimes'}. "
            "'volumes' counts distinct test volumes (one tested under several seeds is one); "
            "the Wilcoxon p is over them, each averaged over its seeds first. 'chosen' is "
            "each cell's validation-chosen procedure-2 student (the adaptive one); a seed "
            "where it is the compared model itself counts as a tie.",
        ),
        ("table", *seed_comparison_rows(comparisons, regime)),
        (
            "p",
            "The same with the patient as the unit: each patient's mean difference over its "
            "test volumes and seeds is one observation (a patient's several volumes are one "
            "patient).",
        ),
        ("table", *patient_comparison_rows(comparisons, regime)),
        *_qc_blocks(r.get("qc")),
    ]


def _rates_text(rates: dict[str, Any]) -> str:
    return (
        f"{rates['caught']} of the {rates['failed']} with Dice < 0.5 marked unreliable, "
        f"{rates['false_alarms']} of the {rates['good']} with Dice >= 0.8 marked unreliable "
        f"(false alarms), {rates['middle_marked']} of the {rates['middle']} in between"
    )


def _qc_blocks(qc: dict[str, Any] | None) -> list[Block]:
    """The QC level nested in a pool's folds (``folds.qc``), when measured."""
    if not qc:
        return []
    levels = ", ".join(f"{cell} {level}" for cell, level in qc["fold_levels"].items())
    counts = ", ".join(f"{cell} {n}" for cell, n in qc["validation_volumes"].items())
    return [
        (
            "p",
            f"QC of `{qc['model']}` on the test volumes, as `prokd predict` judges them. "
            f"Nested: each fold's strictness level chosen on its own validation volumes "
            f"(levels: {levels}; validation volumes: {counts}): "
            f"{_rates_text(qc['nested'])}. At level {qc['prior_level']}, set beforehand: "
            f"{_rates_text(qc['prior'])}.",
        )
    ]


def _figure_blocks(summary: dict[str, Any], figures: Path) -> list[Block]:
    """The Dice-per-regime figure, the students' Dice against CPU time, and wall time."""
    blocks: list[Block] = [
        ("img", regime_plot(summary, figures / "study_dice.png"), "Test Dice per regime")
    ]
    points = pareto_points(summary)
    if points:
        latency = summary["latency"]
        blocks += [
            ("h2", "Students: Dice against CPU time"),
            (
                "p",
                f"onnxruntime ms per volume of {latency['volume_slices']} slices, "
                f"{latency['threads']} threads, {latency['cpu']}, measured side by side in "
                "one process when the summary was made.",
            ),
            ("img", pareto_plot(points, figures / "pareto.png"), "Pareto"),
        ]
    regimes = {n: r for n, r in summary["regimes"].items() if "pooled_from" not in r}
    total = sum(r["cell_seconds"] for r in regimes.values())  # a pool repeats its regimes
    per_regime = ", ".join(f"{n} {r['cell_seconds'] / 60:.0f} min" for n, r in regimes.items())
    blocks.append(
        (
            "p",
            f"Wall time of the cells: {total / 3600:.2f} h in all ({per_regime}); each cell is "
            "timed by the invocation that finished it (a resumed cell counts its last part "
            "only), on a machine that may have run other work beside it. A step whose twin "
            "(the same network, data, seed and settings) had already finished in another cell "
            "was copied from there, not trained again, so later cells cost less.",
        )
    )
    if summary.get("made_by"):
        blocks += [
            ("p", "Each finished cell: when, on which commit and machine, how long:"),
            ("table", *made_by_table(summary["made_by"])),
        ]
    return blocks


def made_by_table(made_by: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per finished cell, when it finished, the commit (short), the
    machine and its wall minutes; '-' where the cell was finished before these were kept."""
    rows = [
        [
            folder,
            made.get("finished", "-"),
            (made.get("git_commit") or "-")[:10],
            made.get("machine", "-"),
            f"{made['seconds'] / 60:.0f}",
        ]
        for folder, made in made_by.items()
    ]
    return ["cell", "finished (UTC)", "commit", "machine", "minutes"], rows


def write_study_report(summary: dict[str, Any], out: str | Path, name: str = "study") -> Path:
    """Write ``<name>.md`` and ``<name>.json`` with the figures under ``<name>_figures/``
    into ``out``; returns the markdown's path."""
    out = Path(out)
    blocks = _summary_blocks({**summary, "name": name})
    for regime, r in summary["regimes"].items():
        blocks += _regime_blocks(regime, r, summary["comparisons"])
    blocks += _figure_blocks(summary, out / f"{name}_figures")
    return write_json_and_markdown(out / name, summary, render_markdown(blocks, out))[1]
