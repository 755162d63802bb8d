"""One training loop for supervised networks and distilled students.

Supervised (teachers, the no-KD student) and distilled runs (student + frozen teachers) share
this loop. Every epoch re-seeds its random streams from ``(seed, epoch)``, and ``last.pt``
holds model, optimizer, scheduler, adapter and early-stopping state, so a run resumed from
its last checkpoint ends exactly as an uninterrupted one on the same machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from tqdm import tqdm

from prokd.data.cache import PreprocessedVolume
from prokd.data.slices import SliceDataset, training_augmentation, view_seed
from prokd.distill.ensemble import TeacherEnsemble, logits_from_probabilities, pseudo_labelled
from prokd.distill.soft_targets import SoftTargetCache
from prokd.errors import ConfigError, ProkdError
from prokd.evaluation.metrics import dice_score
from prokd.inference.predict import predict_slices
from prokd.inference.trained import BEST, model_payload
from prokd.losses.composite import CompositeLoss
from prokd.losses.distillation import FeatureDistillation
from prokd.models import build_model, get_spec
from prokd.models.taps import FeatureTaps, tap_shapes
from prokd.training.checkpoints import LAST, save_checkpoint
from prokd.training.distributed import (
    ONE_PROCESS,
    Context,
    average_gradients,
    data_parallel,
)
from prokd.training.job import TrainJob
from prokd.training.run_log import TensorBoardLog, write_log, write_summary
from prokd.training.sampling import batch_order, collate_slices, seed_everything


def validation_dice(
    network: torch.nn.Module,
    volumes: list[PreprocessedVolume],
    context: Context = ONE_PROCESS,
    context_slices: int = 0,
) -> float:
    """Mean Dice over 3D volumes (on the slice grid), not over slices; ``context_slices``
    as the network was trained with.

    Under data parallelism each rank scores every ``world_size``-th volume and the scores
    are gathered in volume order, so the mean is the one process's mean.
    """
    mine = [
        (i, dice_score(predict_slices(network, v.image, 32, context_slices) >= 0.5, v.mask > 0))
        for i, v in enumerate(volumes)
        if i % context.world_size == context.rank
    ]
    scores = sorted(pair for part in context.all_gather_object(mine) for pair in part)
    return float(np.mean([score for _, score in scores]))


def _build_loss(job: TrainJob, ensemble: TeacherEnsemble | None) -> CompositeLoss:
    cfg = job.loss
    feature_loss = None
    if ensemble is not None and cfg.feature > 0:  # volume teachers have no taps: {} each
        size = job.settings.size
        student = {
            t: s[0]
            for t, s in tap_shapes(
                build_model(job.model_name, job.settings.channels),
                get_spec(job.model_name).taps,
                size,
                size,
                job.settings.channels,
            ).items()
        }
        feature_loss = FeatureDistillation(
            student,
            ensemble.feature_channels(size) + [{} for _ in job.volume_teachers],
            cfg.feature_norm,
        )
    return CompositeLoss(
        cfg, cfg.temperature, feature_loss, cfg.lovasz_per_image, cfg.lovasz_classes
    )


@dataclass
class _Setup:
    """The objects of a run: network, losses, optimisation, data and teacher outputs.

    ``model`` is what the forward pass calls: the network itself, or its
    DistributedDataParallel wrapper when several ranks train together.
    """

    network: torch.nn.Module
    model: torch.nn.Module
    criterion: CompositeLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dataset: SliceDataset
    taps: dict[str, str]
    ensemble: TeacherEnsemble | None
    soft_targets: SoftTargetCache | None
    labelled: np.ndarray  # per training slice: from a labelled volume?


def _new_state() -> dict[str, Any]:
    return {"epoch": -1, "best": -math.inf, "best_epoch": -1, "stale": 0, "history": []}


def _set_up(job: TrainJob, progress: bool, context: Context = ONE_PROCESS) -> _Setup:
    """Network, loss, optimiser, schedule, augmentation, dataset and teacher outputs.

    The soft-target cache is built by rank 0 alone; the other ranks open it once it exists.
    """
    cfg = job.train
    _check_soft_target_settings(job)
    dataset = job.training_slices()
    if len(dataset) == 0:
        raise ProkdError(f"{job.run_dir}: no training slices")
    seed_everything(cfg.seed)
    network = build_model(job.model_name, job.settings.channels)
    ensemble = (
        TeacherEnsemble(job.teachers, job.loss.feature > 0, context.device)
        if job.teachers
        else None
    )
    criterion = _build_loss(job, ensemble)
    if context.distributed and context.device.type == "cuda":
        # SyncBatchNorm needs CUDA; on CPU (gloo) each rank keeps its own BN statistics.
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        criterion = torch.nn.SyncBatchNorm.convert_sync_batchnorm(criterion)
    network.to(context.device)
    criterion.to(context.device)
    parameters = list(network.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    dataset.augment = _augmentation(job)
    soft_targets = None
    if ensemble is not None and job.soft_target_dir is not None:
        if context.is_main:
            soft_targets = _open_soft_targets(job, ensemble, dataset, progress)
        context.barrier()
        if not context.is_main:
            soft_targets = _open_soft_targets(job, ensemble, dataset, progress=False)
    taps = get_spec(job.model_name).taps if criterion.feature_loss is not None else {}
    return _Setup(
        network,
        network,
        criterion,
        optimizer,
        scheduler,
        dataset,
        taps,
        ensemble,
        soft_targets,
        dataset.labelled(),
    )


def _check_soft_target_settings(job: TrainJob) -> None:
    """The soft-target cache serves unaugmented slices, or pre-drawn augmented views."""
    if job.soft_target_dir is None:
        return
    if job.train.augment and job.augmented_views < 1:
        raise ConfigError(
            "distill.soft_target_cache with train.augment: true needs "
            "distill.augmented_views >= 1 (teacher outputs are cached per augmented view)"
        )
    if not job.train.augment and job.augmented_views:
        raise ConfigError("distill.augmented_views needs train.augment: true")


def _open_soft_targets(
    job: TrainJob, ensemble: TeacherEnsemble, dataset: SliceDataset, progress: bool
) -> SoftTargetCache:
    """The job's soft-target cache over ``dataset``, built first if absent or stale."""
    cfg = job.train
    views = job.augmented_views if cfg.augment else 0
    return SoftTargetCache.build(
        job.soft_target_dir, ensemble, dataset, job.settings, views, cfg.seed, progress=progress
    )


def _augmentation(job: TrainJob) -> Compose | None:
    """A job's training augmentation (``None`` when it trains without)."""
    cfg = job.train
    if not cfg.augment:
        return None
    return training_augmentation(cfg.seed, cfg.site_style, cfg.protocols, job.settings.spacing_mm)


def build_soft_targets(job: TrainJob, progress: bool = True) -> SoftTargetCache:
    """Build (or open) a job's soft-target cache in this process, before its students train."""
    _check_soft_target_settings(job)
    augment = _augmentation(job)
    ensemble = TeacherEnsemble(job.teachers, job.loss.feature > 0)
    return _open_soft_targets(job, ensemble, job.training_slices(augment), progress)


def _restore(setup: _Setup, last: Path, context: Context) -> dict[str, Any]:
    """Load the resumable state of ``last.pt`` into the set-up; return the loop state."""
    saved = torch.load(last, map_location=context.device, weights_only=False)
    setup.network.load_state_dict(saved["model"])
    setup.criterion.load_state_dict(saved["criterion"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    return saved["state"]


def _step_loss(
    job: TrainJob,
    setup: _Setup,
    batch: np.ndarray,
    seeds: np.ndarray,
    rows: np.ndarray,
    context: Context,
    amp: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of this rank's share of one global batch, and the batch's loss parts (summed
    over its slices) for the log.

    The ground-truth terms are computed on the logits gathered from every rank (the global
    batch); the teacher terms on this rank's share, scaled by its share of the batch. DDP's
    gradient average then gives exactly the gradient of the one-process loss.
    """
    mine = context.shard(np.arange(len(batch)))
    images, labels, maps = collate_slices(setup.dataset, batch[mine], seeds[mine])
    images, labels = images.to(context.device), labels.to(context.device)
    with (
        torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=amp),
        FeatureTaps(setup.network, setup.taps) as tapped,
    ):
        logits = setup.model(images)
    logits = logits.float()
    teacher_logits, teacher_features = None, None
    if setup.soft_targets is not None:
        teacher_logits, teacher_features = setup.soft_targets.fetch(rows[mine], context.device)
    elif setup.ensemble is not None:
        teacher_logits, teacher_features = setup.ensemble(images)
    if maps is not None:  # volume teachers: KL targets from their probabilities, no features
        external = [logits_from_probabilities(maps[:, k : k + 1]) for k in range(maps.shape[1])]
        teacher_logits = (teacher_logits or []) + [z.to(context.device) for z in external]
        teacher_features = (teacher_features or []) + [{} for _ in external]
    sizes = context.shard_sizes(len(batch))
    labelled = torch.from_numpy(setup.labelled[batch]).to(context.device)
    supervised = labelled
    if job.train.pseudo_labels and teacher_logits is not None:  # every rank has teachers
        labels = pseudo_labelled(labels, teacher_logits, labelled[torch.from_numpy(mine)])
        supervised = torch.ones_like(labelled)
    parts = setup.criterion.supervised_parts(
        context.gather(logits, sizes), context.gather(labels, sizes), supervised
    )
    share = len(mine) * context.world_size / len(batch)
    local: dict[str, torch.Tensor] = {}
    if teacher_logits is not None:
        local = setup.criterion.teacher_parts(
            logits,
            tapped.features,
            teacher_logits,
            teacher_features,
            job.weighting(teacher_logits, labels, labelled[torch.from_numpy(mine)], images),
        )
    total = torch.stack(list(parts.values()) + [share * v for v in local.values()]).sum()
    logged = {k: float(v.detach()) * len(batch) for k, v in parts.items()}
    if local:
        sums = context.sum(torch.tensor([float(v.detach()) * len(mine) for v in local.values()]))
        logged.update(zip(local, sums.tolist(), strict=True))
    logged = {"loss": sum(logged.values()), **logged}
    return total, logged


def _train_epoch(
    job: TrainJob, setup: _Setup, epoch: int, progress: bool, context: Context
) -> dict[str, Any]:
    """One epoch of optimisation, re-seeded from ``(seed, epoch)``; returns its log row.

    Every rank draws the same epoch sample and takes its disjoint share of each batch.
    """
    cfg = job.train
    epoch_seed = cfg.seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    per_epoch = cfg.slices_per_epoch or len(setup.dataset)
    rng = np.random.default_rng([cfg.seed, epoch])
    order = batch_order(
        setup.dataset,
        per_epoch,
        cfg.batch_size,
        cfg.foreground_fraction,
        cfg.unlabelled_share,
        rng,
    )
    rows = order
    cached = setup.soft_targets
    if cached is not None and cached.views:  # each slice shown as one of its cached views
        views = rng.integers(0, cached.views, size=len(order))
        seeds = np.array([view_seed(cfg.seed, i, v) for i, v in zip(order, views, strict=True)])
        rows = cached.rows(order, views)
    else:
        seeds = rng.integers(0, 2**31, size=len(order))
    amp = cfg.amp and context.device.type == "cuda"
    setup.model.train()
    setup.criterion.train()
    sums: dict[str, float] = {}
    tick = time.perf_counter()
    bar = tqdm(
        range(0, len(order), cfg.batch_size),
        desc=f"{job.run_dir.name} epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=not (progress and context.is_main),
    )
    for start in bar:
        stop = start + cfg.batch_size
        total, logged = _step_loss(
            job, setup, order[start:stop], seeds[start:stop], rows[start:stop], context, amp
        )
        setup.optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(setup.criterion, context)
        setup.optimizer.step()
        for key, value in logged.items():
            sums[key] = sums.get(key, 0.0) + value
        done = min(stop, len(order))
        bar.set_postfix({k: f"{v / done:.3f}" for k, v in sums.items()})
    setup.scheduler.step()
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": setup.optimizer.param_groups[0]["lr"]}
    row.update({k: v / len(order) for k, v in sums.items()})
    row["train_seconds"] = time.perf_counter() - tick
    return row


def _close_epoch(
    job: TrainJob,
    setup: _Setup,
    state: dict[str, Any],
    epoch: int,
    row: dict[str, Any],
    context: Context,
) -> None:
    """Validate, update early stopping, and (rank 0) write ``best.pt``, ``last.pt``, the log."""
    score = (
        validation_dice(setup.network, job.val_volumes, context, job.settings.context_slices)
        if job.val_volumes
        else math.nan
    )
    row["val_dice"] = score
    state["history"].append(row)
    improved = score > state["best"] if job.val_volumes else True
    if improved:
        state["best"], state["best_epoch"], state["stale"] = score, epoch + 1, 0
    else:
        state["stale"] += 1
    state["epoch"] = epoch
    if not context.is_main:
        return
    if improved:
        payload = model_payload(
            setup.network, job.model_name, job.settings, epoch=epoch + 1, val_dice=score
        )
        save_checkpoint(payload, job.run_dir / BEST)
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
    write_log(job.run_dir, state["history"])


def refuse_existing_checkpoint(run_dir: Path, resume: bool) -> None:
    """A run folder that holds a checkpoint is continued only on request.

    Raises:
        ProkdError: ``run_dir`` holds ``last.pt`` and ``resume`` is false.
    """
    if (Path(run_dir) / LAST).exists() and not resume:
        raise ProkdError(f"{run_dir}: already holds a checkpoint; use --resume or a new --out")


def run_training(
    job: TrainJob, resume: bool = False, progress: bool = True, context: Context = ONE_PROCESS
) -> dict[str, Any]:
    """Train one network into ``job.run_dir``; returns the training summary.

    Stages: set-up (network, loss, optimiser, data, teacher outputs), restore from
    ``last.pt`` when resuming, then per epoch: train, validate, checkpoint. Writes
    ``last.pt`` (resumable state) and ``best.pt`` (best validation Dice per 3D volume, or the
    last epoch when there is no validation case) atomically every epoch, ``log.csv`` and
    ``train_summary.json``. Under ``torchrun`` (``context`` with several ranks) every rank
    trains its share of each batch and rank 0 alone writes files.

    Raises:
        ProkdError: no training slices, or an existing checkpoint without ``resume``.
    """
    cfg = job.train
    last = job.run_dir / LAST
    refuse_existing_checkpoint(job.run_dir, resume)  # before any expensive set-up
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    setup = _set_up(job, progress, context)
    if context.is_main:
        job.run_dir.mkdir(parents=True, exist_ok=True)
    state = _restore(setup, last, context) if last.exists() else _new_state()
    setup.model = data_parallel(setup.network, context)
    board = TensorBoardLog(job.run_dir) if context.is_main else None
    started = time.perf_counter()
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if state["stale"] >= cfg.patience:
            break
        row = _train_epoch(job, setup, epoch, progress, context)
        _close_epoch(job, setup, state, epoch, row, context)
        if board is not None:
            board.log(row)
        if progress and context.is_main:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "lr"))
            tqdm.write(f"{job.run_dir.name} epoch {epoch + 1}: {parts}")
    summary = write_summary(job, state, len(setup.dataset), time.perf_counter() - started, context)
    context.barrier()  # the other ranks read best.pt next: wait until rank 0 wrote it
    return summary
