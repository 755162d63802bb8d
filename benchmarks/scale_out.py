"""Scale-out measurements, side by side in one run on one machine.

1. ``prokd experiment`` wall time with ``--jobs 1`` and ``--jobs 2`` on a small phantom, and
   whether ``--jobs 2`` wrote the numbers of ``--jobs 1`` run with the same thread count per
   step (``train.threads: 1``, a third run).
2. Training throughput (slices/s) of ``prokd train`` as one process and under ``torchrun``
   with 2 processes (DDP, gloo on CPU), from each run's mean epoch time.
3. Optionally (``--device cuda``, on a machine with a GPU): the same training on the GPU,
   with and without bf16 autocast.

    python benchmarks/scale_out.py [--out benchmarks/results/scale_out] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from prokd.evaluation.bench import cpu_model
from prokd.io_atomic import write_json_and_markdown

EXPERIMENT = {
    "preprocess": {"size": 128, "fov_mm": 128.0},
    "split": {"val_fraction": 0.34, "test_fraction": 0.34},
    "train": {"epochs": 3, "batch_size": 16, "slices_per_epoch": 192, "augment": False},
    "experiment": {
        "teacher": "unet-w8",
        "limit_teacher": "unet-w8",
        "student": "unet-w4",
        "limit_mode": "site",
        "strategies": ["uniform", "confidence"],
    },
}
TRAINING = {
    "model": "unet-medium",
    "preprocess": {"size": 128, "fov_mm": 128.0},
    "split": {"val_fraction": 0.0, "test_fraction": 0.0},
    "train": {"epochs": 2, "batch_size": 16, "slices_per_epoch": 192, "augment": True},
}


def _prokd(*args: str) -> list[str]:
    return [sys.executable, "-m", "prokd.cli", *args]


def _timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _numbers(out: Path) -> list[dict]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "seconds_per_volume"} for r in rows]


def _throughput(run: Path) -> tuple[float, int]:
    summary = json.loads((run / "train_summary.json").read_text())
    return TRAINING["train"]["slices_per_epoch"] / summary["epoch_seconds_mean"], summary[
        "world_size"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/scale_out", help="output stem")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-experiment", action="store_true", help="training rows only")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "phantom"
        subprocess.run(
            _prokd("phantom", str(data), "--sites", "2", "--cases-per-site", "3"),
            check=True,
            capture_output=True,
        )
        cache = {"data": {"cache_dir": str(work / "cache")}}
        if not args.skip_experiment:
            config = work / "experiment.yaml"
            config.write_text(yaml.safe_dump({**EXPERIMENT, **cache}))
            one_thread = work / "experiment-1-thread.yaml"
            single = {**EXPERIMENT, **cache}
            single["train"] = {**EXPERIMENT["train"], "threads": 1}
            one_thread.write_text(yaml.safe_dump(single))
            seconds = {}
            for name, path, jobs in (
                ("jobs1", config, 1),
                ("jobs2", config, 2),
                ("jobs1-1thread", one_thread, 1),
            ):
                out = work / name
                seconds[name] = _timed(
                    _prokd("experiment", str(path), "--data", str(data), "--out", str(out))
                    + ["--jobs", str(jobs), "--device", "cpu"]
                )
                print(f"experiment {name}: {seconds[name]:.1f} s", flush=True)
            rows.append(
                {
                    "measure": "prokd experiment wall s",
                    "jobs 1": seconds["jobs1"],
                    "jobs 2": seconds["jobs2"],
                    "speed-up": seconds["jobs1"] / seconds["jobs2"],
                    "jobs 2 numbers == jobs 1 at 1 thread/step": _numbers(work / "jobs2")
                    == _numbers(work / "jobs1-1thread"),
                    "jobs 2 numbers == jobs 1 at 2 threads": _numbers(work / "jobs2")
                    == _numbers(work / "jobs1"),
                }
            )
        config = work / "train.yaml"
        data_section = {"data": {"root": str(data), "cache_dir": str(work / "cache")}}
        config.write_text(yaml.safe_dump({**TRAINING, **data_section}))
        cpu = ["--device", "cpu"]
        runs = [("1 process", cpu, 1), ("torchrun 2 processes", cpu, 2)]
        if args.device == "cuda":
            runs = [("1 process CPU", cpu, 1), ("1 process CUDA", ["--device", "cuda"], 1)]
        throughput = {}
        for label, device, processes in runs:
            out = work / label.replace(" ", "-")
            command = _prokd("train", str(config), "--out", str(out), *device)
            if processes > 1:
                command = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc-per-node={processes}",
                    "-m",
                    "prokd.cli",
                    *command[3:],
                ]
            _timed(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            throughput[label], world = _throughput(out)
            print(f"train {label}: {throughput[label]:.1f} slices/s (world {world})", flush=True)
        if args.device == "cuda":
            amp_config = work / "train-amp.yaml"
            amp = {**TRAINING, **data_section}
            amp["train"] = {**TRAINING["train"], "amp": True}
            amp_config.write_text(yaml.safe_dump(amp))
            out = work / "cuda-amp"
            _timed(_prokd("train", str(amp_config), "--out", str(out), "--device", "cuda"))
            throughput["1 process CUDA bf16"], _ = _throughput(out)
        first = next(iter(throughput.values()))
        for label, value in throughput.items():
            rows.append(
                {
                    "measure": f"prokd train {TRAINING['model']} slices/s",
                    "run": label,
                    "slices/s": value,
                    "x first": value / first,
                }
            )
    result = {
        "command": "python benchmarks/scale_out.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
        "experiment_config": EXPERIMENT,
        "training_config": TRAINING,
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        "# Scale-out: parallel experiment steps and data-parallel training",
        "",
        f"Made by `{result['command']}` on {result['cpu']} ({result['cpus']} cores"
        + (f", {result['gpu']}" if result["gpu"] else "")
        + f"), torch {result['torch']}, in {result['wall_seconds']:.0f} s. Ratios are from "
        "this one run.",
        "",
    ]
    for row in rows:
        lines.append("- " + ", ".join(f"{k}: {_fmt(v)}" for k, v in row.items()))
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
