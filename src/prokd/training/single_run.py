"""``prokd train``: one network from a config, into a run folder, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prokd.errors import ConfigError, ProkdError
from prokd.inference.teacher_files import load_teacher
from prokd.inference.volume_models import is_volume_model, load_volume_model
from prokd.io_atomic import remove_stale_temporaries
from prokd.training.checkpoints import LAST
from prokd.training.config import Config
from prokd.training.distributed import ONE_PROCESS, Context
from prokd.training.job import TrainJob
from prokd.training.loop import refuse_existing_checkpoint, run_training, validation_dice
from prokd.training.runs import prepare_data, saved_config_differs, write_run_metadata


def check_run_folder(out: Path, config: Config, resume: bool) -> None:
    """Refuse a run folder before anything is written into it.

    Raises:
        ProkdError: ``out`` holds a checkpoint and ``resume`` is false, or ``resume`` is
            asked for a folder without a checkpoint.
        ConfigError: resuming with a config other than the one the run was started with.
    """
    refuse_existing_checkpoint(out, resume)
    if resume and not (out / LAST).exists():
        raise ProkdError(f"{out}: nothing to resume (no {LAST}); drop --resume to start")
    if resume and saved_config_differs(out, config):
        raise ConfigError(
            f"{out / 'config.yaml'}: the run was started with another config; resume with the "
            "same config or train into a new --out"
        )


def train_single(
    config: Config,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    context: Context = ONE_PROCESS,
) -> dict[str, Any]:
    """Train ``config.model`` (distilled from ``distill.teachers`` if any) into ``out``.

    Teachers are prokd run folders, checkpoints or site teacher files (ONNX exports with
    feature taps, each with its site in ``distill.teacher_sites`` for the ``site``
    weighting), and volume teachers (``taps``, a YAML
    file declaring a 3D ONNX model, or ``module:function``), which come after them in the
    teacher order and give KL targets only. Distilled runs also learn from the unlabelled
    volumes (held-back training cases and ``data.unlabelled``). Validation scores of the
    teachers feed the ``validation`` weighting (not available with volume teachers). Under
    ``torchrun`` every rank calls this; rank 0 alone writes. Returns the training summary.
    """
    out = Path(out)
    check_run_folder(out, config, resume)
    if resume and context.is_main:
        remove_stale_temporaries(out)  # left by the killed run this one continues
    data = prepare_data(config)
    specs = config.distill.teachers
    black_box = {t: is_volume_model(t) for t in specs}  # an ONNX spec opens its file to tell
    teachers = [load_teacher(t) for t in specs if not black_box[t]]
    volume_teachers = [load_volume_model(t) for t in specs if black_box[t]]
    val = data.volumes(data.split.val, "preprocess val")
    scores = None  # volume teachers have no validation score: none is computed then
    if val and teachers and not volume_teachers:
        scores = [
            validation_dice(t.network, val, context_slices=t.settings.context_slices)
            for t in teachers
        ]
    train = data.volumes(data.split.train, "preprocess train")
    unlabelled = data.unlabelled_volumes() if specs else []
    if volume_teachers:
        train = data.with_teacher_maps(train, volume_teachers)
        unlabelled = data.with_teacher_maps(unlabelled, volume_teachers)
    job = TrainJob.from_config(
        config,
        out,
        train,
        val,
        teachers=teachers,
        weighting=config.distill.weighting,
        teacher_val_dice=scores,
        teacher_sites=list(config.distill.teacher_sites) or None,
        soft_target_dir=out / "soft_targets" if config.distill.soft_target_cache else None,
        unlabelled_volumes=unlabelled,
        volume_teachers=[t.name for t in volume_teachers],
    )
    if context.is_main:
        write_run_metadata(out, config, data)
    return run_training(job, resume=resume, progress=progress, context=context)
