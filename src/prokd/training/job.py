"""What one training run needs: :class:`TrainJob`, built from a config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from prokd.data.cache import PreprocessedVolume
from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import SliceDataset
from prokd.distill.ensemble import TeacherEnsemble
from prokd.distill.weighting import (
    TeacherFacts,
    TeacherWeighting,
    UniformWeighting,
    build_weighting,
)
from prokd.errors import ConfigError
from prokd.inference.trained import TrainedModel
from prokd.training.config import Config, LossConfig, TrainConfig

if TYPE_CHECKING:
    from monai.transforms import Compose


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
    soft_target_dir: Path | None = None  # opt-in soft-target cache
    augmented_views: int = 0  # views per slice in that cache when augmentation is on
    unlabelled_volumes: list[PreprocessedVolume] = field(default_factory=list)  # teacher terms only
    volume_teachers: list[str] = field(default_factory=list)  # their maps are on the volumes

    @property
    def distilled(self) -> bool:
        """Whether the run learns from teachers (trained networks or volume teachers)."""
        return bool(self.teachers or self.volume_teachers)

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
        teacher_sites: list[str] | None = None,
        teacher_cases: list[frozenset[str]] | None = None,
        soft_target_dir: Path | None = None,
        unlabelled_volumes: list[PreprocessedVolume] | None = None,
        volume_teachers: list[str] | None = None,
    ) -> TrainJob:
        """The job a config describes; ``model`` and ``epochs`` override the config's.

        ``unlabelled_volumes`` are used by distilled runs only (a run without teachers has
        nothing to learn from them). ``volume_teachers`` names the volume teachers whose
        maps the training and unlabelled volumes carry, after the trained ``teachers``.
        ``teacher_val_dice``, ``teacher_sites`` (the site each teacher was trained at) and
        ``teacher_cases`` (the case ids each was trained on) are what weighting strategies
        may read, with the teachers themselves.

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
        volume_teachers = list(volume_teachers or [])
        distilled = bool(teachers or volume_teachers)
        unlabelled = list(unlabelled_volumes or []) if distilled else []
        facts = TeacherFacts(
            teacher_val_dice,
            teacher_sites,
            train_volumes + unlabelled,
            teacher_logits=TeacherEnsemble(teachers, with_features=False).logits
            if teachers
            else None,
            training_cases=teacher_cases,
            context_slices=config.preprocess.context_slices,
        )
        return cls(
            run_dir=Path(run_dir),
            model_name=model or config.model,
            train_volumes=train_volumes,
            val_volumes=val_volumes,
            settings=config.preprocess,
            train=train,
            loss=config.loss,
            teachers=teachers,
            weighting=build_weighting(weighting, facts, config.distill.temperature(weighting)),
            soft_target_dir=soft_target_dir if teachers else None,
            augmented_views=config.distill.augmented_views,
            unlabelled_volumes=unlabelled,
            volume_teachers=volume_teachers,
        )

    def training_slices(self, augment: Compose | None = None) -> SliceDataset:
        """The slices a run trains on: the labelled volumes', then the unlabelled ones'."""
        volumes = self.train_volumes + self.unlabelled_volumes
        return SliceDataset(volumes, augment, self.settings.context_slices)


def settings_mismatch(teacher: PreprocessSettings, student: PreprocessSettings) -> str | None:
    """The first preprocessing field where two settings differ, or ``None``."""
    theirs = asdict(teacher)
    for key, value in asdict(student).items():
        if theirs[key] != value:
            return f"{key}: teacher {theirs[key]!r}, student {value!r}"
    return None
