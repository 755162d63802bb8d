"""``prokd predict prostate-t2`` as a user runs it: cold start, in-process time and peak memory.

Two inputs: an ordinary real scan (``--scan``, default Prostate158 case 001, 232x232x23)
and a synthetic large one (512 x 512 x 30 int16, 0.4 x 0.4 x 3 mm). Each is predicted
``--repeats`` times, every time in a fresh interpreter: the wall time from process start to
mask written (the cold start), the time ``prokd predict`` reports for the volume (read and
write excluded: preprocessing, inference, post-processing), and the process's peak resident
set size (getrusage). Targets: cold start at most 2 s for the ordinary scan; at most 1 s
in process and 1 GB peak for the large volume.

    .venv/bin/python benchmarks/bundled_predict.py --out benchmarks/results/bundled_predict
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from predict_memory import PROBE  # benchmarks/ is on the path when run as a script

from prokd.evaluation.bench import cpu_model
from prokd.io_atomic import write_json_and_markdown

LARGE_SHAPE = (30, 512, 512)  # z, y, x
TARGETS = {"ordinary": {"cold_start_s": 2.0}, "large": {"in_process_s": 1.0, "peak_mb": 1024}}


def _large_volume(path: Path) -> Path:
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: LARGE_SHAPE[0], : LARGE_SHAPE[1], : LARGE_SHAPE[2]]
    body = ((y - 256) ** 2 + (x - 256) ** 2 < 230**2).astype(np.int16) * 600
    gland = (((y - 270) / 45.0) ** 2 + ((x - 256) / 55.0) ** 2 < 1).astype(np.int16) * 250
    array = (body + gland + rng.normal(0, 40, LARGE_SHAPE) + 0.5 * z).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.4, 0.4, 3.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def _predict(volume: Path, mask: Path) -> dict[str, float]:
    """One ``prokd predict prostate-t2`` in a fresh interpreter, timed from its start."""
    command = [sys.executable, "-m", "prokd.cli", "predict", "prostate-t2", str(volume)]
    probe = [sys.executable, "-c", PROBE, json.dumps([*command, str(mask), "--overwrite"])]
    out = subprocess.run(probe, check=True, capture_output=True, text=True).stdout
    peak_mb, wall, printed = json.loads(out.strip().splitlines()[-1])
    in_process = float(printed.strip().split(",")[-1].split()[0])  # "<mask>: V ml, S s"
    return {"cold_start_s": wall, "in_process_s": in_process, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scan",
        default="../shared/data/real/prostate158/001/t2.nii.gz",
        help="an ordinary real scan",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per input")
    parser.add_argument("--out", default="benchmarks/results/bundled_predict", help="stem")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {"ordinary": Path(args.scan), "large": _large_volume(Path(tmp) / "large.nii.gz")}
        for name, volume in inputs.items():
            runs = [_predict(volume, Path(tmp) / f"{name}.nii.gz") for _ in range(args.repeats)]
            size = sitk.ReadImage(str(volume)).GetSize()
            row = {
                "input": name,
                "file": str(volume) if name == "ordinary" else "synthetic",
                "shape_xyz": list(size),
                **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
                "runs": runs,
                "targets": TARGETS[name],
            }
            row["meets"] = all(row[k] <= v for k, v in TARGETS[name].items())
            rows.append(row)
            print(row, flush=True)
    result = {
        "command": "python benchmarks/bundled_predict.py",
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        "# `prokd predict prostate-t2`: cold start, in-process time, peak memory",
        "",
        f"Made by `{result['command']}` on {result['cpu']} in {result['wall_seconds']:.0f} s. "
        f"Median of {args.repeats} fresh processes per input. Cold start: process start to "
        "mask written. In process: the time `prokd predict` reports for the volume "
        "(preprocessing, inference, post-processing). Peak: the process's maximum RSS.",
        "",
        "| input | size (x, y, z) | cold start s | in process s | peak MB | targets | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r['input']} | {'x'.join(map(str, r['shape_xyz']))} | {r['cold_start_s']:.2f} | "
        f"{r['in_process_s']:.2f} | {r['peak_mb']:.0f} | "
        f"{', '.join(f'{k} <= {v}' for k, v in r['targets'].items())} | {r['meets']} |"
        for r in rows
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
