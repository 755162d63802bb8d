"""Peak memory of ``prokd predict`` on a large volume (512 x 512 x 100), per model format.

Writes a synthetic int16 volume of that size, a student checkpoint (unet-w8 at 128 px,
untrained: memory does not depend on the weights) and its ONNX export, then runs
``prokd predict`` on it in a fresh process per format and reads the child's peak resident
set size from ``getrusage``. Target: under 2 GB.

    python benchmarks/predict_memory.py [--out benchmarks/results/predict_memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from prokd.data.preprocess import PreprocessSettings
from prokd.evaluation.bench import cpu_model
from prokd.inference.export import export_model
from prokd.inference.trained import load_trained_model, model_payload
from prokd.io_atomic import write_json_and_markdown
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint

SHAPE = (100, 512, 512)  # z, y, x
TARGET_MB = 2048


def _volume(path: Path) -> Path:
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((y - 256) ** 2 + (x - 256) ** 2 < 230**2).astype(np.int16) * 600
    array = (body + rng.normal(0, 40, SHAPE) + 0.5 * z).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.4, 0.4, 1.5))
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/predict_memory", help="output stem")
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        volume = _volume(work / "big.nii.gz")
        torch.manual_seed(0)
        settings = PreprocessSettings()
        checkpoint = save_checkpoint(
            model_payload(build_model("unet-w8"), "unet-w8", settings), work / "best.pt"
        )
        onnx_file = export_model(load_trained_model(checkpoint), "onnx", work / "w8.onnx")
        for kind, model in (("checkpoint", checkpoint), ("onnx", onnx_file)):
            command = [sys.executable, "-m", "prokd.cli", "predict", str(model), str(volume)]
            command.append(str(work / f"mask-{kind}.nii.gz"))
            # a fresh interpreter per format, so each peak belongs to one run
            probe = [sys.executable, "-c", PROBE, json.dumps(command)]
            out = subprocess.run(probe, check=True, capture_output=True, text=True).stdout
            peak_mb, seconds, _, _ = json.loads(out.strip().splitlines()[-1])
            rows.append({"model_format": kind, "peak_rss_mb": peak_mb, "wall_seconds": seconds})
            print(rows[-1], flush=True)
    result = {
        "command": "python benchmarks/predict_memory.py",
        "cpu": cpu_model(),
        "volume_shape_zyx": SHAPE,
        "volume_dtype": "int16",
        "model": "unet-w8 at 128 px (untrained weights)",
        "target_mb": TARGET_MB,
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        "# Peak memory of `prokd predict` on a 512 x 512 x 100 volume",
        "",
        f"Made by `{result['command']}` on {result['cpu']} in {result['wall_seconds']:.0f} s. "
        "Peak resident set size of the `prokd predict` process (getrusage), whole command "
        "from interpreter start to mask written.",
        "",
        "| model file | peak RSS MB | wall s | under 2 GB |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| {r['model_format']} | {r['peak_rss_mb']:.0f} | {r['wall_seconds']:.1f} | "
        f"{r['peak_rss_mb'] < TARGET_MB} |"
        for r in rows
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


# Runs one command; prints [peak RSS MB of that child, wall seconds, its last output line].
PROBE = """
import json, resource, subprocess, sys, time
command = json.loads(sys.argv[1])
start = time.perf_counter()
run = subprocess.run(command, check=True, capture_output=True, text=True)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
peak, cpu = usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime
print(json.dumps([peak, seconds, (run.stdout.strip().splitlines() or [""])[-1], cpu]))
"""


if __name__ == "__main__":
    main()
