"""Does seeing the gland smaller help the student with large glands? A zoomed-out pass,
alone and averaged with the plain one, on the folds of a leave-one-source-out study,
chosen on validation.

Large glands come out too small (issue 31: a 160 ml gland segmented as 100 ml; Prostate158
001, 71 ml, under-segmented in every fold). The student sees a 128 mm field of view at
1 mm a pixel; the zoomed-out pass places the same 128-pixel grid over ``--zoom`` times the
field of view, so every gland looks smaller by that factor, and maps the probabilities back
to the image's grid as any pass does. For every finished fold of the study (``--study``,
regime ``--regime``), the fold's distilled student segments its validation and held-out test
volumes plain, zoomed out, and with both passes' probabilities averaged. The decision is
read on validation only (each variant minus plain, the patient as the unit); the test
figures then say what it is worth on sources nobody tuned for.

    .venv/bin/python benchmarks/scale_average.py --study runs/loso-bank-bundled --regime acquired

Writes ``benchmarks/results/scale_average.{json,md}`` with the per-volume rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from mirror_average import STUDENT, VARIANTS, compare, fold_rows

from prokd.evaluation.bench import cpu_model
from prokd.inference.model_files import LoadedModel
from prokd.inference.volume_models import SliceVolumeModel
from prokd.io_atomic import write_json_and_markdown


class AveragedPasses:
    """A volume model whose probabilities are the mean of several models' on one image."""

    def __init__(self, name: str, models: list[SliceVolumeModel]) -> None:
        self.name, self.models = name, models
        self.kind, self.threshold = models[0].kind, models[0].threshold
        self.last_seconds = 0.0

    def fingerprint(self) -> str:
        return "+".join(m.fingerprint() for m in self.models)

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        passes = [m.probabilities(image) for m in self.models]
        self.last_seconds = sum(m.last_seconds for m in self.models)
        return np.mean(passes, axis=0).astype(np.float32)


def zoomed_out(loaded: LoadedModel, zoom: float, name: str) -> SliceVolumeModel:
    """The student on a grid of ``zoom`` times its field of view, same pixel count."""
    settings = dataclasses.replace(loaded.settings, fov_mm=loaded.settings.fov_mm * zoom)
    return SliceVolumeModel.from_loaded(dataclasses.replace(loaded, settings=settings), name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/loso-bank")
    parser.add_argument("--regime", default="bank")
    parser.add_argument("--zoom", type=float, default=1.25, help="field of view factor")
    parser.add_argument(
        "--exploratory",
        nargs="*",
        default=["prostate158", "msd"],
        help="held-out sources whose folds are exploratory (the recipe was tuned on them)",
    )
    parser.add_argument("--out", default="benchmarks/results/scale_average")
    args = parser.parse_args()
    start = time.perf_counter()
    variants = {
        "plain": VARIANTS["plain"],
        "zoomed": lambda loaded: zoomed_out(loaded, args.zoom, "zoomed"),
        "averaged": lambda loaded: AveragedPasses(
            "averaged",
            [SliceVolumeModel.from_loaded(loaded, "p"), zoomed_out(loaded, args.zoom, "z")],
        ),
    }
    cells = sorted(
        c for c in Path(args.study).glob(f"{args.regime}-*/seed*") if (c / "results.json").exists()
    )
    rows = [row for cell in cells for row in fold_rows(cell, variants)]
    for row in rows:
        row["exploratory"] = row["fold"].split("-", 1)[1] in args.exploratory
    held_out = [r for r in rows if not r["exploratory"]]
    results = {
        variant: {
            "val": compare(rows, "val", variant, "plain"),
            "test": compare(rows, "test", variant, "plain"),
            "test_held_out": compare(held_out, "test", variant, "plain"),
        }
        for variant in ("zoomed", "averaged")
    }
    adopt = [v for v, r in results.items() if r["val"]["mean"] > 0 and r["val"]["ci"][0] > 0]
    command = (
        f"python benchmarks/scale_average.py --study {args.study} --regime {args.regime} "
        f"--zoom {args.zoom:g} --exploratory {' '.join(args.exploratory)}"
    )
    payload = {
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - start,
        "student": STUDENT,
        "folds": [c.parent.name for c in cells],
        "zoom": args.zoom,
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
        line(variant, label, results[variant][part])
        for variant in results
        for part, label in (
            ("val", "validation (the decision)"),
            ("test", "test, every fold"),
            ("test_held_out", "test, folds that chose nothing"),
        )
    ]
    lines = [
        f"# A zoomed-out pass ({args.zoom:g}x the field of view) for large glands",
        "",
        f"Folds: {', '.join(payload['folds'])} (each fold's `{STUDENT}`). Dice of the variant "
        "minus the plain pass, each patient's mean difference one observation, t 95% CI:",
        "",
        "| variant | set | patients | volumes | mean | 95% CI | patients improved |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Decision, read on validation only (adopt a variant whose interval is above 0): "
        + (f"**adopt {', '.join(adopt)}**." if adopt else "**adopt none**."),
        "",
        f"Exploratory folds (the recipe was tuned on their sources' volumes): "
        f"{', '.join(args.exploratory) or 'none'}; their test rows are marked.",
        "",
        "Per volume (Dice):",
        "",
        "| fold | set | case | plain | zoomed | averaged |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['fold']}{' (exploratory)' if r['exploratory'] and r['split'] == 'test' else ''}"
            f" | {r['split']} | {r['case']} | {r['plain']:.3f} | {r['zoomed']:.3f} | "
            f"{r['averaged']:.3f} |"
            for r in rows
        ),
        "",
        f"Made by `{command}` on {payload['machine']}, {payload['seconds']:.0f} s.",
    ]
    write_json_and_markdown(Path(args.out), payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
