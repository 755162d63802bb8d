"""What a training run writes about itself: ``log.csv``, TensorBoard scalars and
``train_summary.json``; and whether a run folder holds a finished training."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from prokd.inference.trained import BEST
from prokd.io_atomic import atomic_path
from prokd.training.distributed import Context
from prokd.training.job import TrainJob

SUMMARY = "train_summary.json"
LOG = "log.csv"


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``log.csv``: one row per epoch (atomically)."""
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / LOG) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


class TensorBoardLog:
    """Scalars to TensorBoard when the ``tensorboard`` package is installed; else nothing."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        """An epoch's scalars, at step ``row["epoch"]``."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()


def write_summary(
    job: TrainJob, state: dict[str, Any], slices: int, seconds: float, context: Context
) -> dict[str, Any]:
    """``train_summary.json`` (rank 0): the best epoch, the data and teachers of the run."""
    history = state["history"]
    summary = {
        "model": job.model_name,
        "best_val_dice": state["best"] if job.val_volumes else None,
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "stopped_early": len(history) < job.train.epochs,
        "seconds_this_session": seconds,
        "epoch_seconds_mean": float(np.mean([r["train_seconds"] for r in history])),
        "train_slices": slices,
        "train_cases": [v.case_id for v in job.train_volumes],
        "unlabelled_cases": [v.case_id for v in job.unlabelled_volumes],
        "val_cases": [v.case_id for v in job.val_volumes],
        "teachers": [str(t.path) for t in job.teachers],
        "volume_teachers": job.volume_teachers,
        "weighting": job.weighting.name if job.distilled else None,
        "world_size": context.world_size,
        "device": str(context.device),
    }
    if context.is_main:
        with atomic_path(job.run_dir / SUMMARY) as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
    return summary


def training_finished(run_dir: Path) -> bool:
    """Whether a run folder holds a completed training (summary and best checkpoint)."""
    return (Path(run_dir) / SUMMARY).exists() and (Path(run_dir) / BEST).exists()


def best_val_dice(run_dir: Path) -> float | None:
    """The best validation Dice a finished run recorded (``None``: none, or no validation)."""
    summary = Path(run_dir) / SUMMARY
    value = json.loads(summary.read_text()).get("best_val_dice") if summary.exists() else None
    return None if value is None else float(value)
