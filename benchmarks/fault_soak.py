"""Fault soak: ``prokd experiment`` killed with SIGKILL at random moments, resumed each time.

Runs a small experiment once without interruption, then again into another folder while
killing it (SIGKILL) at random moments at least ``--kills`` times, resuming after each kill,
and finally lets it finish. The final ``results.json`` must equal the uninterrupted run's
(every number except timings), and no temporary file may be left in the run folder.

    python benchmarks/fault_soak.py [--kills 10] [--out benchmarks/results/fault_soak]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from prokd.evaluation.bench import cpu_model
from prokd.io_atomic import TEMP_PREFIX, write_json_and_markdown

CONFIG = {
    "preprocess": {"size": 32, "fov_mm": 128.0},
    "split": {"val_fraction": 0.34, "test_fraction": 0.34},
    "train": {"epochs": 3, "batch_size": 8, "slices_per_epoch": 16, "augment": True},
    "distill": {"soft_target_cache": False},
    "experiment": {
        "teacher": "unet-w4",
        "limit_teacher": "unet-w4",
        "student": "unet-w4",
        "limit_mode": "site",
    },
}
TIMING_KEYS = {"seconds_per_volume"}


def _command(config: Path, data: Path, out: Path) -> list[str]:
    prokd = [sys.executable, "-m", "prokd.cli"]
    return [*prokd, "experiment", str(config), "--data", str(data), "--out", str(out)]


def _numbers(results: dict) -> list[dict]:
    """The results' rows without timings (which differ between any two runs)."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in results["rows"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs before the final run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", default="benchmarks/results/fault_soak", help="output stem")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "phantom"
        subprocess.run(
            [sys.executable, "-m", "prokd.cli", "phantom", str(data), "--sites", "2"]
            + ["--cases-per-site", "3", "--workers", "1"],
            check=True,
            capture_output=True,
        )
        config = work / "soak.yaml"
        config.write_text(yaml.safe_dump({**CONFIG, "data": {"cache_dir": str(work / "cache")}}))
        tick = time.perf_counter()
        subprocess.run(_command(config, data, work / "reference"), check=True, capture_output=True)
        reference_seconds = time.perf_counter() - tick
        reference = json.loads((work / "reference" / "results.json").read_text())

        soak = work / "soak"
        kills: list[dict] = []
        while sum(k["killed"] for k in kills) < args.kills:
            delay = rng.uniform(0.5, 0.8 * reference_seconds)
            process = subprocess.Popen(
                _command(config, data, soak), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                process.wait(timeout=delay)
                finished = True
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                finished = False
            if finished:  # it got to the end before the kill: start over from scratch
                kills.append({"after_s": round(delay, 2), "killed": False})
                subprocess.run(["rm", "-rf", str(soak)], check=True)
                continue
            kills.append({"after_s": round(delay, 2), "killed": True})
            print(f"kill {sum(k['killed'] for k in kills)}: after {delay:.1f} s", flush=True)
        final = subprocess.run(_command(config, data, soak), capture_output=True, text=True)
        if final.returncode != 0:
            raise SystemExit(f"final resume failed:\n{final.stderr[-2000:]}")
        resumed = json.loads((soak / "results.json").read_text())
        temporaries = [str(p.relative_to(soak)) for p in soak.rglob(f"{TEMP_PREFIX}*")]
        equal = _numbers(resumed) == _numbers(reference)
    result = {
        "command": "python benchmarks/fault_soak.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_model(),
        "kills": sum(k["killed"] for k in kills),
        "attempts": kills,
        "uninterrupted_seconds": reference_seconds,
        "results_equal_uninterrupted": equal,
        "temporaries_left": temporaries,
        "wall_seconds": time.perf_counter() - started,
        "config": CONFIG,
    }
    lines = [
        "# Fault soak: `prokd experiment` killed with SIGKILL and resumed",
        "",
        f"Made by `{result['command']}` on {result['cpu']} in {result['wall_seconds']:.0f} s.",
        "",
        "| kills | uninterrupted run s | results.json equal (all but timings) | temporaries left |",
        "|---:|---:|---|---|",
        f"| {result['kills']} | {reference_seconds:.1f} | {equal} | {len(temporaries)} |",
        "",
        "Kill moments (s after start): "
        + ", ".join(f"{k['after_s']}" for k in kills if k["killed"])
        + ".",
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))
    if not equal or temporaries:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
