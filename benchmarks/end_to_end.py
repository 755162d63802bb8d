"""CPU seconds per volume, read to mask written, of prokd models and volume models (TAPS),
measured side by side in one process.

Every model is loaded once; then, volume by volume, each model in turn reads the volume,
segments it and writes its mask (interleaved, so that load on the machine falls on all of
them alike). A first volume warms every model up and is not counted. Students run through
``prokd predict``'s code (``segment_file``); a volume model (``taps``, a YAML spec) reads,
computes its probabilities, thresholds them at its own threshold, keeps the largest
component as ``prokd predict`` does, and writes. torch uses ``--threads`` threads;
onnxruntime its default (every core), for every model alike.

    .venv/bin/python benchmarks/end_to_end.py --models prostate-t2 taps \
        --data ../shared/data/real/prostate158 ../shared/data/real/msd-task05 \
        --out benchmarks/results/end_to_end

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from prokd.data.inputs import VolumeInput
from prokd.data.io import image_from_array, read_volume, write_volume
from prokd.data.layouts import Case, find_cases
from prokd.evaluation.bench import cpu_model
from prokd.inference.model_files import load_model_file
from prokd.inference.postprocess import probability_mask
from prokd.inference.segment import segment_file
from prokd.inference.volume_models import is_volume_model, load_volume_model
from prokd.io_atomic import write_json_and_markdown


def _runner(spec: str) -> Any:
    """A function (case, mask path) -> None that segments one volume with model ``spec``."""
    if is_volume_model(spec) and not spec.endswith((".onnx", ".ts")):
        teacher = load_volume_model(spec)

        def run_volume_model(case: Case, mask_path: Path) -> None:
            image = read_volume(case.image, case.image_channel)
            mask = probability_mask(teacher.probabilities(image), teacher.threshold)
            write_volume(image_from_array(mask, image), mask_path)

        return run_volume_model
    model = load_model_file(spec)

    def run_slice_model(case: Case, mask_path: Path) -> None:
        segment_file(model, VolumeInput(case.image, case.image_channel), mask_path)

    return run_slice_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="models, as prokd takes them")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", default="benchmarks/results/end_to_end", help="output stem")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cases = [case for folder in args.data for case in find_cases(folder)[1]]
    runners = {spec: _runner(spec) for spec in args.models}
    seconds: dict[str, list[float]] = {spec: [] for spec in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        for index, case in enumerate(cases):
            for spec, run in runners.items():
                tick = time.perf_counter()
                run(case, Path(tmp) / f"{index}-{spec.replace('/', '_')}.nii.gz")
                if index > 0:  # the first volume warms every model up
                    seconds[spec].append(time.perf_counter() - tick)
            print(case.case_id, {s: round(v[-1], 2) for s, v in seconds.items() if v}, flush=True)
    reference = args.models[-1]
    rows = [
        {
            "model": spec,
            "mean_s": statistics.mean(values),
            "median_s": statistics.median(values),
            "max_s": max(values),
            f"{reference}_over_model": statistics.mean(seconds[reference])
            / statistics.mean(values),
        }
        for spec, values in seconds.items()
    ]
    result = {
        "command": "python benchmarks/end_to_end.py "
        + " ".join(
            ["--models", *args.models, "--data", *args.data, "--threads", str(args.threads)]
        ),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "volumes_timed": [c.case_id for c in cases[1:]],
        "warm_up_volume": cases[0].case_id,
        "seconds": seconds,
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        "# End-to-end CPU time per volume, read to mask written",
        "",
        f"Made by `{result['command']}` on {result['cpu']} in {result['wall_seconds']:.0f} s. "
        f"{len(cases) - 1} volumes timed ({cases[0].case_id} warmed the models up), each model "
        "in turn on each volume, in one process. Students: `prokd predict`'s path; volume "
        "models: read, probabilities, threshold, largest component, write.",
        "",
        f"| model | mean s/volume | median | max | {reference} time / model time |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['mean_s']:.2f} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
        f"{r[f'{reference}_over_model']:.1f}x |"
        for r in rows
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
