"""Epoch time of procedure 2 with K teachers against the no-KD student epoch.

Measured side by side in one process on the synthetic benchmark: the same student, the same
slices, one epoch each; teachers are untrained networks of the chosen architecture (their cost
does not depend on their weights). Four settings: live teachers with and without
augmentation; the soft-target cache without augmentation (teachers run once per stored
slice); and the cache with augmentation, holding ``--views`` pre-drawn augmented views per
slice (teachers run once per view, when the cache is built; the student then sees each slice
as one of its views and reads the teachers' outputs for exactly that image). The one-off
cache build time is reported on its own.

Every configuration is measured ``--repeats`` times (default 5): each repeat runs every
configuration of a setting once, in alternating order (forward, then backward), so drift of
the machine falls on every configuration alike. Reported: the median epoch time with its
range, and the median over repeats of the ratio to the no-KD epoch of the same repeat.

    .venv/bin/python benchmarks/kd_epoch_cost.py --data data/phantom \
        --out benchmarks/results/kd_epoch_cost

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from prokd.evaluation.bench import cpu_model
from prokd.inference.trained import load_trained_model, model_payload
from prokd.io_atomic import write_json_and_markdown
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from prokd.training.config import config_from_dict
from prokd.training.job import TrainJob
from prokd.training.loop import run_training
from prokd.training.runs import environment, prepare_data


def _epoch_seconds(job: TrainJob) -> float:
    return float(run_training(job, progress=False)["epoch_seconds_mean"])


def _measure(
    run_config,
    tmp: Path,
    volumes,
    student: str,
    teachers,
    ks: list[int],
    cached: bool,
    repeats: int,
) -> list[dict]:
    """One setting: the no-KD epoch and each K's, ``repeats`` times in alternating order."""
    configs = [0, *ks]
    seconds: dict[int, list[float]] = {k: [] for k in configs}
    builds: dict[int, float] = {}
    for repeat in range(repeats):
        order = configs if repeat % 2 == 0 else configs[::-1]
        for k in order:
            name = f"k{k}-{run_config.train.augment}-{cached}-r{repeat}"
            cache_dir = tmp / f"cache-{k}-{run_config.train.augment}" if cached and k else None
            start = time.perf_counter()
            epoch = _epoch_seconds(
                TrainJob.from_config(
                    run_config,
                    tmp / name,
                    volumes,
                    [],
                    model=student,
                    teachers=teachers[:k],
                    soft_target_dir=cache_dir,
                )
            )
            if cache_dir is not None and k not in builds:  # the first run builds the cache
                builds[k] = time.perf_counter() - start - epoch
            seconds[k].append(epoch)
    rows = []
    for k in configs:
        ratios = [a / b for a, b in zip(seconds[k], seconds[0], strict=True)]
        row = {
            "teachers": k,
            "augment": run_config.train.augment,
            "views": run_config.distill.augmented_views if k else 0,
            "soft_target_cache": cached and k > 0,
            "epoch_seconds": statistics.median(seconds[k]),
            "epoch_seconds_runs": seconds[k],
            "ratio_to_nokd": statistics.median(ratios),
            "ratio_runs": ratios,
        }
        if k in builds:
            row["cache_build_seconds"] = builds[k]
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/phantom", help="six-site folder (prokd phantom)")
    parser.add_argument(
        "--out", default="benchmarks/results/kd_epoch_cost", help="output path stem"
    )
    parser.add_argument("--teacher", default="unet-medium")
    parser.add_argument("--student", default="unet-w8")
    parser.add_argument("--slices", type=int, default=256, help="slices per epoch")
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--views", type=int, default=4, help="augmented views per slice")
    parser.add_argument("--repeats", type=int, default=5, help="runs of every configuration")
    args = parser.parse_args()
    started = time.perf_counter()

    config = config_from_dict(
        {
            "data": {"root": args.data},
            "train": {"epochs": 1, "slices_per_epoch": args.slices, "batch_size": 16},
        }
    )
    data = prepare_data(config)
    volumes = data.volumes(data.split.train)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teachers = []
        for k in range(max(args.teachers)):
            path = Path(tmp) / f"untrained-teacher-{k}.pt"
            network = build_model(args.teacher)
            save_checkpoint(model_payload(network, args.teacher, config.preprocess), path)
            teachers.append(load_trained_model(path))
        for augment, cached in ((True, False), (False, False), (False, True), (True, True)):
            views = args.views if augment and cached else 0
            run_config = config.replace(
                train={"augment": augment}, distill={"augmented_views": views}
            )
            rows += _measure(
                run_config,
                Path(tmp),
                volumes,
                args.student,
                teachers,
                args.teachers,
                cached,
                args.repeats,
            )
    result = {
        "command": "python benchmarks/kd_epoch_cost.py",
        "student": args.student,
        "teacher": args.teacher,
        "slices_per_epoch": args.slices,
        "repeats": args.repeats,
        "rows": rows,
        "environment": environment(),
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        f"Student {args.student}, teachers {args.teacher}, {args.slices} slices per epoch "
        f"at {config.preprocess.size}x{config.preprocess.size}, "
        f"{result['environment']['torch_threads']} torch threads; made by "
        f"`{result['command']}` on {cpu_model()} in {result['wall_seconds'] / 60:.0f} min. "
        f"Every configuration ran {args.repeats} times, the configurations of a setting "
        "alternating (forward, then backward) run by run: epoch s is the median (range in "
        "brackets), x no-KD the median over runs of the ratio to the no-KD epoch of the same "
        "run. 'views': augmented views per slice in the soft-target cache (0: stored slices). "
        "'cache build s' is the one-off cost of computing the cache over every training slice "
        "(and view), before the first epoch.",
        "",
        "| teachers | augment | soft-target cache | views | epoch s | x no-KD | cache build s |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        build = f"{r['cache_build_seconds']:.1f}" if "cache_build_seconds" in r else ""
        spread = f"{min(r['epoch_seconds_runs']):.1f}-{max(r['epoch_seconds_runs']):.1f}"
        lines.append(
            f"| {r['teachers']} | {r['augment']} | {r['soft_target_cache']} | {r['views']} | "
            f"{r['epoch_seconds']:.1f} [{spread}] | {r['ratio_to_nokd']:.2f} | {build} |"
        )
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
