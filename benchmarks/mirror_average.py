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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/loso-bank")
    parser.add_argument("--regime", default="bank")
    parser.add_argument("--out", default="benchmarks/results/mirror_average")
    args = parser.parse_args()
    start = time.perf_counter()
    cells = sorted(
        c for c in Path(args.study).glob(f"{args.regime}-*/seed*") if (c / "results.json").exists()
    )
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
