"""Does keeping only the largest connected component cost large glands? Mask rules compared
on the folds of a leave-one-source-out study, chosen on validation.

Every prokd mask keeps the largest 26-connected component of the thresholded probabilities
and fills its holes. Prostate158 001 (71 ml) loses its correct apex that way: its fold
student finds nothing on the mid-gland slices, and the base is the larger piece. The rules
here keep every component of at least ``--fractions`` of the largest's voxels instead (holes
filled the same way). For every finished fold of the study (``--study``, regime
``--regime``), the fold's distilled student computes its probabilities of each validation and
held-out test volume once, and each rule makes its mask from them. The decision is read on
validation only (each rule minus the present one, the patient as the unit); the test figures
say what it is worth on sources nobody tuned for.

    .venv/bin/python benchmarks/component_rule.py --study runs/loso-bank --regime bank

Writes ``benchmarks/results/component_rule.{json,md}`` with the per-volume rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from mirror_average import STUDENT, compare

from prokd.data.masks import components, fill_holes
from prokd.data.validate import load_case
from prokd.evaluation.bench import cpu_model
from prokd.evaluation.metrics import dice_score
from prokd.inference.model_files import load_model_file
from prokd.inference.postprocess import postprocess_mask
from prokd.inference.volume_models import SliceVolumeModel
from prokd.io_atomic import write_json_and_markdown
from prokd.training.config import load_config
from prokd.training.runs import prepare_data

Rule = Callable[[np.ndarray], np.ndarray]


def components_from(fraction: float) -> Rule:
    """Keep every 26-connected component of at least ``fraction`` of the largest's voxels,
    then fill holes."""

    def rule(mask: np.ndarray) -> np.ndarray:
        labels, count = components(mask, fully_connected=True)
        if not count:
            return np.zeros(mask.shape, dtype=np.uint8)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        kept = np.isin(labels, 1 + np.flatnonzero(sizes >= fraction * sizes.max()))
        return fill_holes(kept).astype(np.uint8)

    return rule


def fold_rows(cell: Path, rules: dict[str, Rule]) -> list[dict[str, Any]]:
    """Each rule's Dice (a column per rule) of the cell's distilled student on the cell's
    validation and test volumes, from one pass of the network per volume."""
    config = load_config(cell / "config.yaml")
    split = json.loads((cell / "split.json").read_text())
    data = prepare_data(config)
    model = SliceVolumeModel.from_loaded(load_model_file(cell / "models" / STUDENT / "best.pt"))
    rows = []
    for part in ("val", "test"):
        for case_id in split[part]:
            case = data.case(case_id)
            loaded = load_case(case)
            truth = sitk.GetArrayFromImage(loaded.mask) > 0
            mask = model.probabilities(loaded.image) >= model.threshold
            rows.append(
                {
                    "fold": cell.parent.name,
                    "split": part,
                    "case": case_id,
                    "patient": case.patient,
                    **{name: dice_score(rule(mask) > 0, truth) for name, rule in rules.items()},
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/loso-bank")
    parser.add_argument("--regime", default="bank")
    parser.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=[0.1, 0.25],
        help="keep components of at least this fraction of the largest's voxels",
    )
    parser.add_argument(
        "--exploratory",
        nargs="*",
        default=["prostate158", "msd"],
        help="held-out sources whose folds are exploratory (the recipe was tuned on them)",
    )
    parser.add_argument("--out", default="benchmarks/results/component_rule")
    args = parser.parse_args()
    start = time.perf_counter()
    rules: dict[str, Rule] = {"largest": postprocess_mask}
    rules.update({f"from-{f:g}": components_from(f) for f in args.fractions})
    cells = sorted(
        c for c in Path(args.study).glob(f"{args.regime}-*/seed*") if (c / "models").is_dir()
    )
    rows = [row for cell in cells for row in fold_rows(cell, rules)]
    for row in rows:
        row["exploratory"] = row["fold"].split("-", 1)[1] in args.exploratory
    held_out = [r for r in rows if not r["exploratory"]]
    others = [name for name in rules if name != "largest"]
    results = {
        name: {
            "val": compare(rows, "val", name, "largest"),
            "test": compare(rows, "test", name, "largest"),
            "test_held_out": compare(held_out, "test", name, "largest"),
        }
        for name in others
    }
    adopt = [n for n, r in results.items() if r["val"]["mean"] > 0 and r["val"]["ci"][0] > 0]
    command = (
        f"python benchmarks/component_rule.py --study {args.study} --regime {args.regime} "
        f"--fractions {' '.join(f'{f:g}' for f in args.fractions)} "
        f"--exploratory {' '.join(args.exploratory)}"
    )
    payload = {
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - start,
        "student": STUDENT,
        "folds": [c.parent.name for c in cells],
        "results": results,
        "adopt": adopt,
        "rows": rows,
    }

    def line(name: str, part: str, c: dict[str, Any]) -> str:
        return (
            f"| {name} | {part} | {c['n_patients']} | {c['n_volumes']} | {c['mean']:+.4f} | "
            f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] | {c['wins']} |"
        )

    table = [
        line(name, label, results[name][part])
        for name in results
        for part, label in (
            ("val", "validation (the decision)"),
            ("test", "test, every fold"),
            ("test_held_out", "test, folds that chose nothing"),
        )
    ]
    lines = [
        "# Mask rules: the largest component, or every component of a fraction of it",
        "",
        f"Folds: {', '.join(payload['folds'])} (each fold's `{STUDENT}`). Dice of the rule "
        "minus the largest component (the present rule), each patient's mean difference one "
        "observation, t 95% CI; 'from-f' keeps every 26-connected component of at least f "
        "times the largest's voxels:",
        "",
        "| rule | set | patients | volumes | mean | 95% CI | patients improved |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Decision, read on validation only (adopt a rule whose interval is above 0): "
        + (f"**adopt {', '.join(adopt)}**." if adopt else "**adopt none**."),
        "",
        f"Exploratory folds (the recipe was tuned on their sources' volumes): "
        f"{', '.join(args.exploratory) or 'none'}; their test rows are marked.",
        "",
        "Per volume (Dice):",
        "",
        f"| fold | set | case | {' | '.join(rules)} |",
        f"|---|---|---|{'---|' * len(rules)}",
        *(
            f"| {r['fold']}{' (exploratory)' if r['exploratory'] and r['split'] == 'test' else ''}"
            f" | {r['split']} | {r['case']} | "
            + " | ".join(f"{r[name]:.3f}" for name in rules)
            + " |"
            for r in rows
        ),
        "",
        f"Made by `{command}` on {payload['machine']}, {payload['seconds']:.0f} s.",
    ]
    write_json_and_markdown(Path(args.out), payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
