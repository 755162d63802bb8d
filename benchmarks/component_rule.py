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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from mirror_average import (
    STUDENT,
    compare_variants,
    fold_arguments,
    fold_cells,
    write_variant_report,
)

from prokd.data.masks import components, fill_holes
from prokd.data.validate import load_case
from prokd.evaluation.metrics import dice_score
from prokd.inference.model_files import load_model_file
from prokd.inference.postprocess import postprocess_mask
from prokd.inference.volume_models import SliceVolumeModel
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
    fold_arguments(parser, "benchmarks/results/component_rule")
    parser.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=[0.1, 0.25],
        help="keep components of at least this fraction of the largest's voxels",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    rules: dict[str, Rule] = {"largest": postprocess_mask}
    rules.update({f"from-{f:g}": components_from(f) for f in args.fractions})
    cells = fold_cells(args.study, args.regime)
    rows = [row for cell in cells for row in fold_rows(cell, rules)]
    others = [name for name in rules if name != "largest"]
    results, adopt = compare_variants(rows, others, "largest", args.exploratory)
    command = (
        f"python benchmarks/component_rule.py --study {args.study} --regime {args.regime} "
        f"--fractions {' '.join(f'{f:g}' for f in args.fractions)} "
        f"--exploratory {' '.join(args.exploratory)}"
    )
    write_variant_report(
        Path(args.out),
        "Mask rules: the largest component, or every component of a fraction of it",
        "Dice of the rule minus the largest component (the present rule), each patient's mean "
        "difference one observation, t 95% CI; 'from-f' keeps every 26-connected component of "
        "at least f times the largest's voxels:",
        command,
        start,
        {"folds": [c.parent.name for c in cells], "results": results, "adopt": adopt, "rows": rows},
    )


if __name__ == "__main__":
    main()
