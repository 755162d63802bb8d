"""Epoch time of procedure 2 with K teachers against the no-KD student epoch.

Measured side by side in one process on the synthetic benchmark: the same student, the same
slices, one epoch each; teachers are untrained networks of the chosen architecture (their cost
does not depend on their weights). Four settings: live teachers with and without
augmentation; the soft-target cache without augmentation (teachers run once per stored
slice); and the cache with augmentation, holding ``--views`` pre-drawn augmented views per
slice (teachers run once per view, when the cache is built; the student then sees each slice
as one of its views and reads the teachers' outputs for exactly that image). The one-off
cache build time is reported on its own.

    .venv/bin/python benchmarks/kd_epoch_cost.py --data data/phantom \
        --out benchmarks/results/kd_epoch_cost

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

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
            base = _epoch_seconds(
                TrainJob.from_config(
                    run_config,
                    Path(tmp) / f"nokd-{augment}-{cached}",
                    volumes,
                    [],
                    model=args.student,
                )
            )
            rows.append(
                {
                    "teachers": 0,
                    "augment": augment,
                    "views": 0,
                    "soft_target_cache": False,
                    "epoch_seconds": base,
                    "ratio_to_nokd": 1.0,
                }
            )
            for k in args.teachers:
                name = f"k{k}-{augment}-{cached}"
                cache_dir = Path(tmp) / f"cache-{k}" if cached else None
                start = time.perf_counter()
                seconds = _epoch_seconds(
                    TrainJob.from_config(
                        run_config,
                        Path(tmp) / name,
                        volumes,
                        [],
                        model=args.student,
                        teachers=teachers[:k],
                        soft_target_dir=cache_dir,
                    )
                )
                row = {
                    "teachers": k,
                    "augment": augment,
                    "views": views,
                    "soft_target_cache": cached,
                    "epoch_seconds": seconds,
                    "ratio_to_nokd": seconds / base,
                }
                if cached:
                    row["cache_build_seconds"] = time.perf_counter() - start - seconds
                rows.append(row)
                print(row)
    result = {
        "student": args.student,
        "teacher": args.teacher,
        "slices_per_epoch": args.slices,
        "rows": rows,
        "environment": environment(),
    }
    lines = [
        f"Student {args.student}, teachers {args.teacher}, {args.slices} slices per epoch "
        f"at {config.preprocess.size}x{config.preprocess.size}, "
        f"{result['environment']['torch_threads']} torch threads; made by "
        f"`python benchmarks/kd_epoch_cost.py` on {cpu_model()}. "
        "'views': augmented views per slice in the soft-target cache (0: stored slices). "
        "'cache build s' is the one-off cost of computing the cache over every training slice "
        "(and view), before the first epoch.",
        "",
        "| teachers | augment | soft-target cache | views | epoch s | x no-KD | cache build s |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        build = f"{r['cache_build_seconds']:.1f}" if "cache_build_seconds" in r else ""
        lines.append(
            f"| {r['teachers']} | {r['augment']} | {r['soft_target_cache']} | {r['views']} | "
            f"{r['epoch_seconds']:.1f} | {r['ratio_to_nokd']:.2f} | {build} |"
        )
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
