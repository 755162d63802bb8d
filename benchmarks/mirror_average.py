"""Should the mirrored pass be averaged into the probabilities? Measured on the folds of a
leave-one-source-out study, chosen on validation.

QC already runs every slice a second time, mirrored left-right, to compare the two masks.
Averaging the two passes' probabilities (test-time augmentation) costs nothing more. For
every finished fold of the study (``--study``, default ``runs/loso-bank``; regime ``--regime``,
default ``bank``), the fold's distilled student segments its own validation volumes and its
held-out test volumes twice: as shipped, and with the passes averaged. The decision is read
on validation only (averaged minus plain, the patient as the unit, over every fold's
validation patients); the test figures then say what the decision is worth on sources
nobody tuned for.

    .venv/bin/python benchmarks/mirror_average.py

Writes ``benchmarks/results/mirror_average.{json,md}`` with the per-volume rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prokd.evaluation.bench import cpu_model
from prokd.evaluation.evaluate import evaluate_cases
from prokd.evaluation.stats import patient_level_comparison
from prokd.inference.model_files import LoadedModel, load_model_file
from prokd.inference.volume_models import SliceVolumeModel, VolumeModel
from prokd.io_atomic import write_json_and_markdown
from prokd.training.config import load_config
from prokd.training.runs import prepare_data

STUDENT = "student-kd-p1"


Variant = Callable[[LoadedModel], VolumeModel]

VARIANTS: dict[str, Variant] = {
    "plain": lambda loaded: SliceVolumeModel.from_loaded(loaded, "plain"),
    "averaged": lambda loaded: SliceVolumeModel.from_loaded(
        loaded, "averaged", mirror_average=True
    ),
}


def fold_rows(cell: Path, variants: dict[str, Variant] = VARIANTS) -> list[dict[str, Any]]:
    """Each variant's Dice (a column per variant) of the cell's distilled student, made
    into a volume model by the variant, on the cell's validation and test volumes."""
    config = load_config(cell / "config.yaml")
    split = json.loads((cell / "split.json").read_text())
    data = prepare_data(config)
    loaded = load_model_file(cell / "models" / STUDENT / "best.pt")
    models = {name: make(loaded) for name, make in variants.items()}
    rows = []
    for part in ("val", "test"):
        cases = [data.case(i) for i in split[part]]
        result = evaluate_cases(models, cases, progress=False)
        for index, first in enumerate(result[next(iter(models))].rows):
            rows.append(
                {
                    "fold": cell.parent.name,
                    "split": part,
                    "case": first["case"],
                    "patient": first["patient"],
                    **{name: result[name].rows[index]["dice"] for name in models},
                }
            )
    return rows


def compare(
    rows: list[dict[str, Any]], part: str, a: str = "averaged", b: str = "plain"
) -> dict[str, Any]:
    """``a`` minus ``b`` on the ``part`` volumes, each patient's mean difference one
    observation."""
    chosen = [(r["patient"], r[a], r[b]) for r in rows if r["split"] == part]
    return patient_level_comparison(chosen)


PARTS = (
    ("val", "validation (the decision)"),
    ("test", "test, every fold"),
    ("test_held_out", "test, folds that chose nothing"),
)


def compare_variants(
    rows: list[dict[str, Any]], variants: list[str], baseline: str, exploratory: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Each variant minus ``baseline`` per patient on validation, test and the test of the
    folds that chose nothing (rows are marked ``exploratory`` by their fold's source), and
    the variants to adopt: those whose validation interval is above 0."""
    for row in rows:
        row["exploratory"] = row["fold"].split("-", 1)[1] in exploratory
    held_out = [r for r in rows if not r["exploratory"]]
    results = {
        name: {
            "val": compare(rows, "val", name, baseline),
            "test": compare(rows, "test", name, baseline),
            "test_held_out": compare(held_out, "test", name, baseline),
        }
        for name in variants
    }
    adopt = [n for n, r in results.items() if r["val"]["mean"] > 0 and r["val"]["ci"][0] > 0]
    return results, adopt


def variant_lines(
    results: dict[str, Any], adopt: list[str], rows: list[dict[str, Any]], columns: list[str]
) -> list[str]:
    """The markdown of :func:`compare_variants`: the comparison table, the decision, and the
    per-volume Dice of every column."""
    table = [
        f"| {name} | {label} | {c['n_patients']} | {c['n_volumes']} | {c['mean']:+.4f} | "
        f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] | {c['wins']} |"
        for name in results
        for part, label in PARTS
        for c in [results[name][part]]
    ]
    return [
        "| variant | set | patients | volumes | mean | 95% CI | patients improved |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Decision, read on validation only (adopt a variant whose interval is above 0): "
        + (f"**adopt {', '.join(adopt)}**." if adopt else "**adopt none**."),
        "",
        "Per volume (Dice; '(exploratory)': a test volume of a fold whose source the recipe "
        "was tuned on):",
        "",
        f"| fold | set | case | {' | '.join(columns)} |",
        f"|---|---|---|{'---|' * len(columns)}",
        *(
            f"| {r['fold']}{' (exploratory)' if r['exploratory'] and r['split'] == 'test' else ''}"
            f" | {r['split']} | {r['case']} | "
            + " | ".join(f"{r[name]:.3f}" for name in columns)
            + " |"
            for r in rows
        ),
    ]


def fold_cells(study: str, regime: str) -> list[Path]:
    """The finished cells (``<regime>-<source>/seed<N>``, with their models) of one regime's
    folds; not those of a longer regime name such as ``<regime>-w16-<source>``."""
    return sorted(
        c
        for c in Path(study).glob(f"{regime}-*/seed*")
        if "-" not in c.parent.name.removeprefix(f"{regime}-")
        and (c / "results.json").exists()
        and (c / "models" / STUDENT).is_dir()
    )


def fold_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The arguments every fold-variant benchmark takes: the study, the regime, its
    exploratory folds and the result file."""
    parser.add_argument("--study", default="runs/loso-bank")
    parser.add_argument("--regime", default="bank")
    parser.add_argument(
        "--exploratory",
        nargs="*",
        default=["prostate158", "msd"],
        help="held-out sources whose folds are exploratory (the recipe was tuned on them)",
    )
    parser.add_argument("--out", default=out)


def write_variant_report(
    out: Path, title: str, intro: str, command: str, started: float, facts: dict[str, Any]
) -> None:
    """``<out>.json`` (the command, machine, seconds and ``facts``: ``folds``, ``results``,
    ``adopt``, ``rows`` and any others) and ``<out>.md``: ``title``, ``intro`` and the
    tables of :func:`variant_lines` over every column of the rows."""
    payload = {
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - started,
        "student": STUDENT,
        **facts,
    }
    fixed = {"fold", "split", "case", "patient", "exploratory"}
    columns = [k for k in (facts["rows"][0] if facts["rows"] else {}) if k not in fixed]
    lines = [
        f"# {title}",
        "",
        f"Folds: {', '.join(facts['folds'])} (each fold's `{STUDENT}`). {intro}",
        "",
        *variant_lines(facts["results"], facts["adopt"], facts["rows"], columns),
        "",
        f"Made by `{command}` on {payload['machine']}, {payload['seconds']:.0f} s.",
    ]
    write_json_and_markdown(out, payload, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/loso-bank")
    parser.add_argument("--regime", default="bank")
    parser.add_argument("--out", default="benchmarks/results/mirror_average")
    args = parser.parse_args()
    start = time.perf_counter()
    cells = fold_cells(args.study, args.regime)
    rows = [row for cell in cells for row in fold_rows(cell)]
    validation, test = compare(rows, "val"), compare(rows, "test")
    adopt = validation["mean"] > 0 and validation["ci"][0] > 0
    command = f"python benchmarks/mirror_average.py --study {args.study} --regime {args.regime}"
    payload = {
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - start,
        "folds": [c.parent.name for c in cells],
        "validation": validation,
        "test": test,
        "adopt": adopt,
        "rows": rows,
    }

    def line(name: str, c: dict[str, Any]) -> str:
        return (
            f"| {name} | {c['n_patients']} | {c['n_volumes']} | {c['mean']:+.4f} | "
            f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] | {c['wins']} |"
        )

    lines = [
        "# Averaging the mirrored pass into the probabilities",
        "",
        f"Folds: {', '.join(payload['folds'])} (the study's distilled student of each). "
        "Dice averaged minus plain, each patient's mean difference one observation, t 95% CI:",
        "",
        "| set | patients | volumes | mean | 95% CI | patients improved |",
        "|---|---|---|---|---|---|",
        line("validation (the decision)", validation),
        line("held-out test", test),
        "",
        "Decision, read on validation only (adopt when the interval is above 0): "
        + ("**adopt**." if adopt else "**do not adopt**."),
        "",
        f"Made by `{command}` on {payload['machine']}, {payload['seconds']:.0f} s.",
    ]
    write_json_and_markdown(Path(args.out), payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
