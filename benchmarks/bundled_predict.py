"""``prokd predict prostate-t2`` as a user runs it: cold start, in-process time and peak memory.

Two inputs: an ordinary real scan (``--scan``, default Prostate158 case 001, 232x232x23)
and a synthetic large one (512 x 512 x 30 int16, 0.4 x 0.4 x 3 mm). Each is predicted
``--repeats`` times, every time in a fresh interpreter: the wall time from process start to
mask written (the cold start), the time ``prokd predict`` reports for the volume (read and
write excluded: preprocessing, inference, post-processing), and the process's peak resident
set size (getrusage). Targets: cold start at most 1.5 s for the ordinary scan; at most 1 s
in process and 1 GB peak for the large volume.

With ``--with-taps``, TAPS's own command (``taps segment --device cpu``) segments the
ordinary scan in fresh processes too, interleaved with prokd's runs: the CPU time (user +
system) of each whole process, start to mask written, and the ratio of the medians
(target: TAPS at least 50x prokd's).

    .venv/bin/python benchmarks/bundled_predict.py [--with-taps] \
        --out benchmarks/results/bundled_predict
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
TARGETS = {"ordinary": {"cold_start_s": 1.5}, "large": {"in_process_s": 1.0, "peak_mb": 1024}}
CPU_RATIO_TARGET = 50.0  # TAPS's CPU seconds over prokd's, whole processes


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


def _probe(command: list[str]) -> tuple[float, float, str, float]:
    """Peak MB, wall seconds, last printed line and CPU seconds of a fresh process."""
    probe = [sys.executable, "-c", PROBE, json.dumps(command)]
    out = subprocess.run(probe, check=True, capture_output=True, text=True).stdout
    peak_mb, wall, printed, cpu = json.loads(out.strip().splitlines()[-1])
    return peak_mb, wall, printed, cpu


def _predict(volume: Path, mask: Path) -> dict[str, float]:
    """One ``prokd predict prostate-t2`` in a fresh interpreter, timed from its start."""
    command = [sys.executable, "-m", "prokd.cli", "predict", "prostate-t2", str(volume)]
    peak_mb, wall, printed, cpu = _probe([*command, str(mask), "--overwrite"])
    in_process = float(printed.strip().split(",")[-1].split()[0])  # "<mask>: V ml, S s"
    return {"cold_start_s": wall, "in_process_s": in_process, "peak_mb": peak_mb, "cpu_s": cpu}


def _taps(volume: Path, mask: Path) -> dict[str, float]:
    """One ``taps segment`` (TAPS's own command, on the CPU) in a fresh process."""
    command = [str(Path(sys.executable).parent / "taps"), "segment", "--device", "cpu"]
    peak_mb, wall, _, cpu = _probe([*command, "--exact", str(volume), str(mask)])
    return {"wall_s": wall, "peak_mb": peak_mb, "cpu_s": cpu}


def _side_by_side(volume: Path, folder: Path, repeats: int) -> dict[str, object]:
    """prokd and TAPS on one scan, each run in turn in fresh processes; medians and the
    ratio of the median CPU times."""
    runs: dict[str, list[dict[str, float]]] = {"prokd": [], "taps": []}
    for index in range(repeats):
        runs["prokd"].append(_predict(volume, folder / f"prokd{index}.nii.gz"))
        runs["taps"].append(_taps(volume, folder / f"taps{index}.nii.gz"))
        print({k: v[-1] for k, v in runs.items()}, flush=True)
    medians = {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for name, rows in runs.items()
    }
    ratio = medians["taps"]["cpu_s"] / medians["prokd"]["cpu_s"]
    return {
        "file": str(volume),
        "medians": medians,
        "cpu_ratio": ratio,
        "target": CPU_RATIO_TARGET,
        "meets": ratio >= CPU_RATIO_TARGET,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scan",
        default="../shared/data/real/prostate158/001/t2.nii.gz",
        help="an ordinary real scan",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per input")
    parser.add_argument(
        "--with-taps", action="store_true", help="TAPS's command beside, on the ordinary scan"
    )
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
        taps = _side_by_side(Path(args.scan), Path(tmp), args.repeats) if args.with_taps else None
    command = "python benchmarks/bundled_predict.py" + (" --with-taps" if args.with_taps else "")
    result = {
        "command": command,
        "taps": taps,
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
    if taps is not None:
        prokd, other = taps["medians"]["prokd"], taps["medians"]["taps"]
        lines += [
            "",
            f"Whole processes on the ordinary scan, side by side (prokd, then `taps segment "
            f"--device cpu`, {args.repeats} times; medians): CPU {prokd['cpu_s']:.2f} s "
            f"against {other['cpu_s']:.1f} s, **{taps['cpu_ratio']:.0f}x** less (target "
            f"{CPU_RATIO_TARGET:.0f}x: {'met' if taps['meets'] else 'missed'}); wall "
            f"{prokd['cold_start_s']:.2f} s against {other['wall_s']:.1f} s; peak "
            f"{prokd['peak_mb']:.0f} MB against {other['peak_mb']:.0f} MB.",
        ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
