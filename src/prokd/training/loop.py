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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from tqdm import tqdm

from prokd.data.cache import PreprocessedVolume
from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import SliceDataset, training_augmentation
from prokd.distill.ensemble import TeacherEnsemble
from prokd.distill.soft_targets import SoftTargetCache
from prokd.distill.weighting import TeacherWeighting, UniformWeighting, build_weighting
from prokd.errors import ConfigError, ProkdError
from prokd.evaluation.metrics import dice_score
from prokd.inference.predict import predict_slices
from prokd.inference.trained import BEST, TrainedModel, model_payload
from prokd.io_atomic import atomic_path
from prokd.losses.composite import CompositeLoss
from prokd.losses.distillation import FeatureDistillation
from prokd.models import build_model, get_spec
from prokd.models.taps import FeatureTaps, tap_shapes
from prokd.training.checkpoints import LAST, save_checkpoint
from prokd.training.config import Config, LossConfig, TrainConfig

SUMMARY = "train_summary.json"
LOG = "log.csv"


@dataclass
class TrainJob:
    """Everything one training run needs. Build it with :meth:`from_config`."""

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

    @classmethod
    def from_config(
        cls,
        config: Config,
        run_dir: Path,
        train_volumes: list[PreprocessedVolume],
        val_volumes: list[PreprocessedVolume],
        *,
        model: str | None = None,
        epochs: int | None = None,
        teachers: list[TrainedModel] | None = None,
        weighting: str = "uniform",
        teacher_val_dice: list[float] | None = None,
        soft_target_dir: Path | None = None,
    ) -> TrainJob:
        """The job a config describes; ``model`` and ``epochs`` override the config's.

        Raises:
            ConfigError: a teacher was trained with other preprocessing than the config's
                (its soft targets would be computed on other slices), or an unknown or
                unusable weighting.
        """
        teachers = list(teachers or [])
        for teacher in teachers:
            problem = settings_mismatch(teacher.settings, config.preprocess)
            if problem:
                raise ConfigError(
                    f"{teacher.path}: teacher preprocessing differs from the config's "
                    f"({problem}); train the student with the teacher's preprocessing"
                )
        train = config.train if epochs is None else replace(config.train, epochs=epochs)
        return cls(
            run_dir=Path(run_dir),
            model_name=model or config.model,
            train_volumes=train_volumes,
            val_volumes=val_volumes,
            settings=config.preprocess,
            train=train,
            loss=config.loss,
            teachers=teachers,
            weighting=build_weighting(weighting, teacher_val_dice),
            soft_target_dir=soft_target_dir if teachers else None,
        )


def settings_mismatch(teacher: PreprocessSettings, student: PreprocessSettings) -> str | None:
    """The first preprocessing field where two settings differ, or ``None``."""
    for key, value in asdict(student).items():
        if asdict(teacher)[key] != value:
            return f"{key}: teacher {asdict(teacher)[key]!r}, student {value!r}"
    return None


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


@dataclass
class _Setup:
    """The objects of a run: network, losses, optimisation, data and teacher outputs."""

    network: torch.nn.Module
    criterion: CompositeLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment: Compose | None
    dataset: SliceDataset
    taps: dict[str, str]
    ensemble: TeacherEnsemble | None
    soft_targets: SoftTargetCache | None


def _new_state() -> dict[str, Any]:
    return {"epoch": -1, "best": -math.inf, "best_epoch": -1, "stale": 0, "history": []}


def _set_up(job: TrainJob, progress: bool) -> _Setup:
    """Network, loss, optimiser, schedule, augmentation, dataset and teacher outputs."""
    cfg = job.train
    if job.soft_target_dir is not None and cfg.augment:
        raise ConfigError(
            "distill.soft_target_cache needs train.augment: false "
            "(cached teacher outputs are per stored slice)"
        )
    dataset = SliceDataset(job.train_volumes, None)
    if len(dataset) == 0:
        raise ProkdError(f"{job.run_dir}: no training slices")
    seed_everything(cfg.seed)
    network = build_model(job.model_name)
    ensemble = TeacherEnsemble(job.teachers, job.loss.feature > 0) if job.teachers else None
    criterion = _build_loss(job, ensemble)
    parameters = list(network.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    augment = training_augmentation(cfg.seed) if cfg.augment else None
    dataset.augment = augment
    soft_targets = None
    if ensemble is not None and job.soft_target_dir is not None:
        soft_targets = SoftTargetCache.build(
            job.soft_target_dir, ensemble, dataset, job.settings, progress=progress
        )
    taps = get_spec(job.model_name).taps if criterion.feature_loss is not None else {}
    return _Setup(
        network, criterion, optimizer, scheduler, augment, dataset, taps, ensemble, soft_targets
    )


def _restore(setup: _Setup, last: Path) -> dict[str, Any]:
    """Load the resumable state of ``last.pt`` into the set-up; return the loop state."""
    saved = torch.load(last, map_location="cpu", weights_only=False)
    setup.network.load_state_dict(saved["model"])
    setup.criterion.load_state_dict(saved["criterion"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    return saved["state"]


def _train_epoch(job: TrainJob, setup: _Setup, epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch of optimisation, re-seeded from ``(seed, epoch)``; returns its log row."""
    cfg = job.train
    epoch_seed = cfg.seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    if setup.augment is not None:
        setup.augment.set_random_state(epoch_seed % 2**32)
    per_epoch = cfg.slices_per_epoch or len(setup.dataset)
    order = sample_slices(
        setup.dataset.has_gland(),
        per_epoch,
        cfg.foreground_fraction,
        np.random.default_rng([cfg.seed, epoch]),
    )
    setup.network.train()
    setup.criterion.train()
    sums: dict[str, float] = {}
    tick = time.perf_counter()
    bar = tqdm(
        range(0, len(order), cfg.batch_size),
        desc=f"{job.run_dir.name} epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=not progress,
    )
    for start in bar:
        batch = order[start : start + cfg.batch_size]
        images, labels = _collate(setup.dataset, batch)
        with FeatureTaps(setup.network, setup.taps) as tapped:
            logits = setup.network(images)
        teacher_logits = teacher_features = weights = None
        if setup.soft_targets is not None:
            teacher_logits, teacher_features = setup.soft_targets.fetch(batch)
        elif setup.ensemble is not None:
            teacher_logits, teacher_features = setup.ensemble(images)
        if teacher_logits is not None:
            weights = job.weighting(teacher_logits, labels)
        out = setup.criterion(
            logits, labels, tapped.features, teacher_logits, teacher_features, weights
        )
        setup.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        setup.optimizer.step()
        for key, value in out.as_floats().items():
            sums[key] = sums.get(key, 0.0) + value * len(images)
        bar.set_postfix({k: f"{v / (start + len(images)):.3f}" for k, v in sums.items()})
    setup.scheduler.step()
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": setup.optimizer.param_groups[0]["lr"]}
    row.update({k: v / len(order) for k, v in sums.items()})
    row["train_seconds"] = time.perf_counter() - tick
    return row


def _close_epoch(
    job: TrainJob, setup: _Setup, state: dict[str, Any], epoch: int, row: dict[str, Any]
) -> None:
    """Validate, update early stopping, and write ``best.pt``, ``last.pt`` and the log."""
    score = validation_dice(setup.network, job.val_volumes) if job.val_volumes else math.nan
    row["val_dice"] = score
    state["history"].append(row)
    improved = score > state["best"] if job.val_volumes else True
    if improved:
        state["best"], state["best_epoch"], state["stale"] = score, epoch + 1, 0
        payload = model_payload(
            setup.network, job.model_name, job.settings, epoch=epoch + 1, val_dice=score
        )
        save_checkpoint(payload, job.run_dir / BEST)
    else:
        state["stale"] += 1
    state["epoch"] = epoch
    save_checkpoint(
        {
            "model": setup.network.state_dict(),
            "criterion": setup.criterion.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "scheduler": setup.scheduler.state_dict(),
            "state": state,
        },
        job.run_dir / LAST,
    )
    _write_log(job.run_dir, state["history"])


def _write_summary(
    job: TrainJob, state: dict[str, Any], slices: int, seconds: float
) -> dict[str, Any]:
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
        "val_cases": [v.case_id for v in job.val_volumes],
        "teachers": [str(t.path) for t in job.teachers],
        "weighting": job.weighting.name if job.teachers else None,
    }
    with atomic_path(job.run_dir / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def run_training(job: TrainJob, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one network into ``job.run_dir``; returns the training summary.

    Stages: set-up (network, loss, optimiser, data, teacher outputs), restore from
    ``last.pt`` when resuming, then per epoch: train, validate, checkpoint. Writes
    ``last.pt`` (resumable state) and ``best.pt`` (best validation Dice per 3D volume, or the
    last epoch when there is no validation case) atomically every epoch, ``log.csv`` and
    ``train_summary.json``.

    Raises:
        ProkdError: no training slices, or an existing checkpoint without ``resume``.
    """
    cfg = job.train
    last = job.run_dir / LAST
    if last.exists() and not resume:  # before any expensive set-up (soft targets)
        raise ProkdError(f"{job.run_dir}: already holds a checkpoint; use --resume or a new --out")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    setup = _set_up(job, progress)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    state = _restore(setup, last) if last.exists() else _new_state()
    board = _TensorBoard(job.run_dir)
    started = time.perf_counter()
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if state["stale"] >= cfg.patience:
            break
        row = _train_epoch(job, setup, epoch, progress)
        _close_epoch(job, setup, state, epoch, row)
        board.log(row)
        if progress:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "lr"))
            tqdm.write(f"{job.run_dir.name} epoch {epoch + 1}: {parts}")
    return _write_summary(job, state, len(setup.dataset), time.perf_counter() - started)


def training_finished(run_dir: Path) -> bool:
    """Whether a run folder holds a completed training (summary and best checkpoint)."""
    return (Path(run_dir) / SUMMARY).exists() and (Path(run_dir) / BEST).exists()
