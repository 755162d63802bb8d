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
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from mirror_average import (
    VARIANTS,
    compare_variants,
    fold_arguments,
    fold_cells,
    fold_rows,
    write_variant_report,
)

from prokd.inference.model_files import LoadedModel
from prokd.inference.volume_models import SliceVolumeModel


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
    fold_arguments(parser, "benchmarks/results/scale_average")
    parser.add_argument("--zoom", type=float, default=1.25, help="field of view factor")
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
    cells = fold_cells(args.study, args.regime)
    rows = [row for cell in cells for row in fold_rows(cell, variants)]
    results, adopt = compare_variants(rows, ["zoomed", "averaged"], "plain", args.exploratory)
    command = (
        f"python benchmarks/scale_average.py --study {args.study} --regime {args.regime} "
        f"--zoom {args.zoom:g} --exploratory {' '.join(args.exploratory)}"
    )
    facts = {"folds": [c.parent.name for c in cells], "zoom": args.zoom}
    write_variant_report(
        Path(args.out),
        f"A zoomed-out pass ({args.zoom:g}x the field of view) for large glands",
        "Dice of the variant minus the plain pass, each patient's mean difference one "
        "observation, t 95% CI:",
        command,
        start,
        {**facts, "results": results, "adopt": adopt, "rows": rows},
    )


if __name__ == "__main__":
    main()
