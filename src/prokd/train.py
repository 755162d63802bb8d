"""One training loop for supervised networks and distilled students.

Supervised (teachers, the no-KD student) and distilled runs (student + frozen teachers) share
this loop. Every epoch re-seeds its random streams from ``(seed, epoch)``, and ``last.pt``
holds model, optimizer, scheduler, adapter and early-stopping state, so a run resumed from
its last checkpoint ends exactly as an uninterrupted one on the same machine.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from prokd.checkpoint import BEST, LAST, TrainedModel, model_payload, save_checkpoint
from prokd.config import LossConfig, TrainConfig
from prokd.data.cache import PreprocessedVolume
from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import SliceDataset, training_augmentation
from prokd.distill.ensemble import TeacherEnsemble
from prokd.distill.soft_targets import SoftTargetCache
from prokd.distill.weighting import TeacherWeighting, UniformWeighting
from prokd.errors import ConfigError, ProkdError
from prokd.io_atomic import atomic_path
from prokd.losses.composite import CompositeLoss
from prokd.losses.distillation import FeatureDistillation
from prokd.metrics import dice_score
from prokd.models import build_model, get_spec
from prokd.models.taps import FeatureTaps, tap_shapes
from prokd.predict import predict_slices

SUMMARY = "train_summary.json"
LOG = "log.csv"


@dataclass
class TrainJob:
    """Everything one training run needs."""

    run_dir: Path
    model_name: str
    train_volumes: list[PreprocessedVolume]
    val_volumes: list[PreprocessedVolume]
    settings: PreprocessSettings
    train: TrainConfig
    loss: LossConfig
    teachers: list[TrainedModel] = field(default_factory=list)
    weighting: TeacherWeighting = field(default_factory=UniformWeighting)
    soft_target_dir: Path | None = None  # opt-in soft-target cache (needs augment off)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_slices(
    has_gland: np.ndarray, count: int, foreground_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Slice indices for one epoch, ``foreground_fraction`` of them containing gland.

    Draws without replacement while a group has enough slices; falls back to the other group
    when one is empty.
    """
    fg, bg = np.flatnonzero(has_gland), np.flatnonzero(~has_gland)
    n_fg = int(round(count * foreground_fraction)) if len(bg) else count
    n_fg = n_fg if len(fg) else 0
    parts = []
    for pool, n in ((fg, n_fg), (bg, count - n_fg)):
        if n:
            parts.append(rng.choice(pool, size=n, replace=n > len(pool)))
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=int)
    return rng.permutation(indices)


def validation_dice(network: torch.nn.Module, volumes: list[PreprocessedVolume]) -> float:
    """Mean Dice over 3D volumes (on the slice grid), not over slices."""
    scores = [dice_score(predict_slices(network, v.image) >= 0.5, v.mask > 0) for v in volumes]
    return float(np.mean(scores))


def _collate(dataset: SliceDataset, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


def _write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / LOG) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


class _TensorBoard:
    """Scalars to TensorBoard when the ``tensorboard`` package is installed; else nothing."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()


def _build_loss(job: TrainJob, ensemble: TeacherEnsemble | None) -> CompositeLoss:
    cfg = job.loss
    feature_loss = None
    if ensemble is not None and cfg.feature > 0:
        size = job.settings.size
        student = {
            t: s[0]
            for t, s in tap_shapes(
                build_model(job.model_name), get_spec(job.model_name).taps, size, size
            ).items()
        }
        feature_loss = FeatureDistillation(
            student, ensemble.feature_channels(size), cfg.feature_norm
        )
    return CompositeLoss(
        cfg, cfg.temperature, feature_loss, cfg.lovasz_per_image, cfg.lovasz_classes
    )


def run_training(job: TrainJob, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one network into ``job.run_dir``; returns the training summary.

    Writes ``last.pt`` (resumable state) and ``best.pt`` (best validation Dice per 3D volume,
    or the last epoch when there is no validation case) atomically every epoch, ``log.csv``
    and ``train_summary.json``.

    Raises:
        ProkdError: no training slices, or an existing checkpoint without ``resume``.
    """
    cfg = job.train
    run_dir = Path(job.run_dir)
    last = run_dir / LAST
    if last.exists() and not resume:  # before any expensive set-up (soft targets)
        raise ProkdError(f"{run_dir}: already holds a checkpoint; use --resume or a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    network = build_model(job.model_name)
    ensemble = TeacherEnsemble(job.teachers, job.loss.feature > 0) if job.teachers else None
    criterion = _build_loss(job, ensemble)
    parameters = list(network.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    augment = training_augmentation(cfg.seed) if cfg.augment else None
    dataset = SliceDataset(job.train_volumes, augment)
    if len(dataset) == 0:
        raise ProkdError(f"{run_dir}: no training slices")
    has_gland = dataset.has_gland()
    per_epoch = cfg.slices_per_epoch or len(dataset)
    taps = get_spec(job.model_name).taps if criterion.feature_loss is not None else {}
    soft_targets = None
    if ensemble is not None and job.soft_target_dir is not None:
        if cfg.augment:
            raise ConfigError(
                "distill.soft_target_cache needs train.augment: false "
                "(cached teacher outputs are per stored slice)"
            )
        soft_targets = SoftTargetCache.build(
            job.soft_target_dir, ensemble, dataset, progress=progress
        )

    state = {"epoch": -1, "best": -math.inf, "best_epoch": -1, "stale": 0, "history": []}
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=False)
        network.load_state_dict(saved["model"])
        criterion.load_state_dict(saved["criterion"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
    board = _TensorBoard(run_dir)
    started = time.perf_counter()
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if state["stale"] >= cfg.patience:
            break
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        if augment is not None:
            augment.set_random_state(epoch_seed % 2**32)
        order = sample_slices(
            has_gland, per_epoch, cfg.foreground_fraction, np.random.default_rng([cfg.seed, epoch])
        )
        network.train()
        criterion.train()
        sums: dict[str, float] = {}
        tick = time.perf_counter()
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(
            batches,
            desc=f"{run_dir.name} epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        for start in bar:
            batch = order[start : start + cfg.batch_size]
            images, labels = _collate(dataset, batch)
            with FeatureTaps(network, taps) as tapped:
                logits = network(images)
            teacher_logits = teacher_features = weights = None
            if soft_targets is not None:
                teacher_logits, teacher_features = soft_targets.fetch(batch)
            elif ensemble is not None:
                teacher_logits, teacher_features = ensemble(images)
            if teacher_logits is not None:
                weights = job.weighting(teacher_logits, labels)
            out = criterion(
                logits, labels, tapped.features, teacher_logits, teacher_features, weights
            )
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            for key, value in out.as_floats().items():
                sums[key] = sums.get(key, 0.0) + value * len(images)
            bar.set_postfix({k: f"{v / (start + len(images)):.3f}" for k, v in sums.items()})
        scheduler.step()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update({k: v / len(order) for k, v in sums.items()})
        row["train_seconds"] = time.perf_counter() - tick
        score = validation_dice(network, job.val_volumes) if job.val_volumes else math.nan
        row["val_dice"] = score
        state["history"].append(row)
        improved = score > state["best"] if job.val_volumes else True
        if improved:
            state["best"], state["best_epoch"], state["stale"] = score, epoch + 1, 0
            save_checkpoint(
                model_payload(
                    network, job.model_name, job.settings, epoch=epoch + 1, val_dice=score
                ),
                run_dir / BEST,
            )
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        save_checkpoint(
            {
                "model": network.state_dict(),
                "criterion": criterion.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
            },
            last,
        )
        _write_log(run_dir, state["history"])
        board.log(row)
        if progress:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "lr"))
            tqdm.write(f"{run_dir.name} epoch {epoch + 1}: {parts}")
    summary = {
        "model": job.model_name,
        "best_val_dice": state["best"] if job.val_volumes else None,
        "best_epoch": state["best_epoch"],
        "epochs_run": len(state["history"]),
        "seconds_this_session": time.perf_counter() - started,
        "epoch_seconds_mean": float(np.mean([r["train_seconds"] for r in state["history"]])),
        "train_slices": len(dataset),
        "teachers": [str(t.path) for t in job.teachers],
        "weighting": job.weighting.name if job.teachers else None,
    }
    with atomic_path(run_dir / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def training_finished(run_dir: Path) -> bool:
    """Whether a run folder holds a completed training (summary and best checkpoint)."""
    return (Path(run_dir) / SUMMARY).exists() and (Path(run_dir) / BEST).exists()
