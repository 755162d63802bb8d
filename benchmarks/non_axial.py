"""One patient's axial, sagittal and coronal T2 series (ProstateX-0000, as the scanner
exported them), segmented by prostate-t2 and TAPS side by side in one process.

Each mask is scored on its series' own grid against the AI reference of the axial series
(``ai-references/prostatex/ProstateX-0000``, both whole-gland references), resampled onto
that grid by nearest neighbour. These are not expert masks; the PROSTATEx volumes were
unlabelled training data of the bundled model (not held out).

    .venv/bin/python benchmarks/non_axial.py [--models prostate-t2 taps] [--about TEXT]

A model may be a bundled name, a model file or a run folder; ``--about`` says which of
them saw PROSTATEx volumes (the default sentence is about the bundled model).

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from prokd.data.dicom import read_series, series_at
from prokd.evaluation.bench import cpu_model
from prokd.evaluation.metrics import dice_score
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import segment_image
from prokd.inference.postprocess import probability_mask
from prokd.inference.volume_models import load_volume_model
from prokd.io_atomic import write_json_and_markdown

SHARED = Path("../shared/data")
STUDY = SHARED / "dicom" / "ProstateX" / "ProstateX-0000"
REFERENCES = SHARED / "ai-references" / "prostatex" / "ProstateX-0000"
SERIES = {"axial": "4", "sagittal": "3", "coronal": "5"}  # series numbers in the study
REFERENCE_FILES = ("gland_bosma22b.nii.gz", "gland_guerbet23.nii.gz")
BUNDLED_ABOUT = (
    "PROSTATEx volumes were unlabelled training data of the bundled model: not held out."
)


def _segmenter(name: str) -> Any:
    """A function image -> (mask on the image's grid, QC dict or None) for model ``name``."""
    if name == "taps":
        taps = load_volume_model("taps")

        def run_taps(image: sitk.Image) -> tuple[np.ndarray, dict | None]:
            probabilities = taps.probabilities(image)
            return probability_mask(probabilities, taps.threshold), None

        return run_taps
    model = load_model_file(name)  # a bundled model's name or a model file

    def run_slice_model(image: sitk.Image) -> tuple[np.ndarray, dict | None]:
        result = segment_image(model, image)
        return result.mask, {"reliable": result.qc.reliable, "reasons": result.qc.reasons}

    return run_slice_model


def _references_on(image: sitk.Image, references: dict[str, sitk.Image]) -> dict[str, np.ndarray]:
    """Each AI reference resampled onto ``image``'s grid (nearest neighbour), as a boolean
    array."""
    return {
        name: sitk.GetArrayFromImage(
            sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        )
        > 0
        for name, reference in references.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["prostate-t2", "taps"])
    parser.add_argument("--out", default="benchmarks/results/non_axial", help="output stem")
    parser.add_argument("--about", default=BUNDLED_ABOUT, help="which models saw PROSTATEx")
    args = parser.parse_args()
    started = time.perf_counter()
    images = {plane: read_series(series_at(STUDY, number)) for plane, number in SERIES.items()}
    references = {f.split(".")[0]: sitk.ReadImage(str(REFERENCES / f)) for f in REFERENCE_FILES}
    truths = {plane: _references_on(image, references) for plane, image in images.items()}
    rows = []
    for name in args.models:
        segment = _segmenter(name)
        for plane, image in images.items():
            tick = time.perf_counter()
            mask, qc = segment(image)
            seconds = time.perf_counter() - tick
            voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
            scores = {name: dice_score(mask > 0, t) for name, t in truths[plane].items()}
            row = {
                "model": name,
                "plane": plane,
                "dice": float(np.mean(list(scores.values()))),
                "dice_per_reference": scores,
                "gland_ml": float(mask.sum()) * voxel_ml,
                "seconds": seconds,
                "qc": qc,
            }
            rows.append(row)
            print(name, plane, f"{row['dice']:.3f}", f"{row['gland_ml']:.1f} ml", qc, flush=True)
    seconds = time.perf_counter() - started
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    command = "python benchmarks/non_axial.py --models " + " ".join(args.models)
    if args.about != BUNDLED_ABOUT:
        command += f" --about '{args.about}'"
    if args.out != parser.get_default("out"):
        command += f" --out {args.out}"
    payload = {
        "command": command,
        "machine": machine,
        "seconds": seconds,
        "about": args.about,
        "rows": rows,
    }

    def verdict(qc: dict | None) -> str:
        if qc is None:
            return "-"
        return "reliable" if qc["reliable"] else "unreliable: " + "; ".join(qc["reasons"])

    lines = [
        "# Axial, sagittal and coronal series of one patient",
        "",
        "ProstateX-0000's T2 series as exported by the scanner; each mask scored on its "
        "series' grid against the AI references of the axial series (mean Dice over "
        f"{', '.join(f.split('.')[0] for f in REFERENCE_FILES)}; not expert masks). " + args.about,
        "",
        "| model | series | Dice | gland ml | seconds | QC |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['plane']} | {r['dice']:.3f} | {r['gland_ml']:.1f} | "
            f"{r['seconds']:.1f} | {verdict(r['qc'])} |"
            for r in rows
        ),
        "",
        f"Made by `{command}` on {machine} in {seconds:.0f} s (one process, side by side).",
    ]
    write_json_and_markdown(args.out, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
