"""How well the bundled localiser finds the gland on its training run's test split.

For every test case of the run that trained it (``runs/prostate-localiser``, made by ``make
prostate-localiser``): the distance from the localiser's gland centre to the reference
mask's centroid (the mask only scores), and whether the slices it keeps cover every gland
slice.

    .venv/bin/python benchmarks/localiser_accuracy.py --run runs/prostate-localiser

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from prokd.data.preprocess import axial_view
from prokd.data.validate import load_case
from prokd.evaluation.bench import cpu_model
from prokd.inference.localise import SLICE_MARGIN_MM, locate_gland
from prokd.io_atomic import write_json_and_markdown
from prokd.training.config import load_config
from prokd.training.runs import prepare_data


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/prostate-localiser", help="the training run")
    parser.add_argument("--out", default="benchmarks/results/localiser_accuracy", help="stem")
    args = parser.parse_args()
    started = time.perf_counter()
    split = json.loads((Path(args.run) / "split.json").read_text())
    data = prepare_data(load_config(Path(args.run) / "config.yaml"))
    rows = []
    for case_id in split["test"]:
        loaded = load_case(data.case(case_id))
        axial = axial_view(loaded.image)
        gland = sitk.GetArrayFromImage(axial_view(loaded.mask)) > 0
        z, y, x = np.argwhere(gland).mean(axis=0)
        truth = axial.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
        location = locate_gland(axial)
        occupied = np.flatnonzero(gland.reshape(len(gland), -1).any(axis=1))
        error = (
            float(np.linalg.norm(np.array(location.centre) - np.array(truth)))
            if location.found
            else None
        )
        first, last = location.slices
        covered = bool(first <= occupied[0] and last >= occupied[-1])
        rows.append({"case": case_id, "error_mm": error, "covers_gland_slices": covered})
        print(case_id, error, covered, flush=True)
    errors = [r["error_mm"] for r in rows if r["error_mm"] is not None]
    summary = {
        "volumes": len(rows),
        "found": len(errors),
        "median_error_mm": statistics.median(errors),
        "within_10_mm": sum(e <= 10 for e in errors),
        "over_20_mm": sum(e > 20 for e in errors),
        "slices_covered": sum(r["covers_gland_slices"] for r in rows),
        "slice_margin_mm": SLICE_MARGIN_MM,
    }
    seconds = time.perf_counter() - started
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    payload = {
        "command": f"python benchmarks/localiser_accuracy.py --run {args.run}",
        "machine": machine,
        "seconds": seconds,
        "summary": summary,
        "rows": rows,
    }
    lines = [
        "# The bundled localiser on its test split",
        "",
        f"{summary['volumes']} test volumes of `{args.run}` (never trained on; validation "
        "chose the epoch). Distance from the localiser's gland centre to the reference "
        "centroid, and whether its slices "
        f"(gland +- {SLICE_MARGIN_MM:g} mm) cover every gland slice.",
        "",
        "| case | error mm | gland slices covered |",
        "|---|---|---|",
        *(
            f"| {r['case']} | {_mm(r['error_mm'])} | {_yes(r['covers_gland_slices'])} |"
            for r in rows
        ),
        "",
        f"Found in {summary['found']} of {summary['volumes']}; median error "
        f"{summary['median_error_mm']:.1f} mm; {summary['within_10_mm']} within 10 mm, "
        f"{summary['over_20_mm']} over 20 mm; slices covered in {summary['slices_covered']}.",
        "",
        f"Made by `{payload['command']}` on {machine} in {seconds:.0f} s.",
    ]
    write_json_and_markdown(args.out, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
