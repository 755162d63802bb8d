"""Experiment configuration: YAML -> validated dataclasses.

Defaults live here; a YAML file states only what differs. Unknown or misspelled keys, wrong
types and impossible values are one-line ``ConfigError``s naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prokd.data.layouts import LAYOUTS
from prokd.data.preprocess import PreprocessSettings
from prokd.data.splits import LIMIT_MODES
from prokd.distill.weighting import (
    WEIGHTINGS,
    AgreementWeighting,
    ConfidenceWeighting,
    LabelAwareWeighting,
    SiteWeighting,
    ValidationWeighting,
)
from prokd.errors import ConfigError, warn_all
from prokd.inference.volume_models import is_volume_model
from prokd.io_atomic import atomic_path
from prokd.losses.composite import LossWeights
from prokd.losses.distillation import FEATURE_NORMS
from prokd.losses.lovasz import CLASS_MODES
from prokd.models import MODELS
from prokd.typed_mapping import Check, build_dataclass
from prokd.yaml_files import read_yaml


@dataclass(frozen=True)
class SourceConfig:
    """One more dataset folder: its layout (detected when unset), the site name its cases
    get (the layout's sites when unset), and whether its masks are used.

    ``mask_as_teacher``: the masks are exact (images synthesised from label maps), so volume
    teachers are not run on these cases; the mask stands in for every volume teacher's map.

    ``bank``: ``root`` is a view bank (``prokd bank``); its views (of ``bank_sources`` and
    ``bank_kinds`` only, when given) are unlabelled training data, each on its patient's
    side of the split: a view of a validation or test patient never trains, and a labelled
    volume's view as acquired is left out (the volume trains with its label).

    ``test_only``: the masks only score: its cases are the test set when their site is
    ``split.test_site`` and take no other part (e.g. AI-made reference masks of volumes
    whose images train, unlabelled, in the other folds of a leave-one-source-out study).
    """

    root: str
    layout: str | None = None
    site: str | None = None
    labelled: bool = True
    channel: int | None = None  # T2 channel of 4D images in a plain folder (MSD imagesTs: 0)
    mask_as_teacher: bool = False
    bank: bool = False
    bank_sources: tuple[str, ...] = ()
    bank_kinds: tuple[str, ...] = ()
    test_only: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the cases are. ``root`` may be given on the command line (``--data``);
    ``sources`` add labelled or unlabelled folders to it (or replace it)."""

    root: str | None = None
    layout: str | None = None
    cache_dir: str | None = None  # default: $PROKD_CACHE or ~/.cache/prokd
    unlabelled: tuple[str, ...] = ()  # folders of volumes distilled students use without masks
    sources: tuple[SourceConfig, ...] = ()
    exclude_sites: tuple[str, ...] = ()  # no case of these sites, labelled or not, is used


@dataclass(frozen=True)
class SplitConfig:
    """Per-site train/val/test fractions (by patient), the split seed, and the regime.

    ``test_site`` set: leave-one-site-out (test on that site, train and validate on the
    others; ``test_fraction`` unused). ``test_case`` set: leave-one-case-out (test on that
    case id and the other cases of its patient). ``labelled_per_site`` > 0: only that many training
    patients per site keep their labels; the others' volumes become unlabelled data.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    test_site: str | None = None
    test_case: str | None = None  # leave-one-case-out: test on this case (and its patient)
    labelled_per_site: int = 0  # 0: every training case is labelled


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one network."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without a better validation Dice before stopping
    slices_per_epoch: int = 0  # 0: one pass over the training slices
    foreground_fraction: float = 0.6  # share of sampled slices that contain gland
    augment: bool = True
    site_style: bool = False  # with augment: also bias field, lower resolution, field of view
    protocols: bool = False  # with augment: also endorectal coil and resliced-series slices
    seed: int = 0
    threads: int = 0  # torch threads; 0 keeps torch's default
    amp: bool = False  # bfloat16 autocast of the forward pass on CUDA (ignored on CPU)
    unlabelled_share: float = 0.5  # share of each batch from unlabelled slices (distilled runs)
    # Distilled runs: Dice and Lovász also score unlabelled slices, against the teachers'
    # pseudo-labels (mean gland probability > 0.5); off, only the teacher terms reach them.
    pseudo_labels: bool = False


@dataclass(frozen=True)
class LossConfig(LossWeights):
    """Weights of the composite loss (inherited: dice, lovasz, kl, feature) and its options."""

    temperature: float = 4.0
    feature_norm: str = "pixel"
    lovasz_per_image: bool = False
    lovasz_classes: str = "present"


@dataclass(frozen=True)
class DistillConfig:
    """Teachers of a distilled run (``prokd train``): run folders or checkpoints."""

    teachers: tuple[str, ...] = ()
    teacher_sites: tuple[str, ...] = ()  # the site each teacher was trained at ("site" weighting)
    weighting: str = "uniform"
    soft_target_cache: bool = False  # teacher outputs computed once and reused
    augmented_views: int = 0  # with augmentation: views per slice the cache holds
    # softmax temperature of each strategy's weights (defaults: the strategies' own)
    validation_temperature: float = ValidationWeighting.default_temperature
    confidence_temperature: float = ConfidenceWeighting.default_temperature
    label_aware_temperature: float = LabelAwareWeighting.default_temperature
    agreement_temperature: float = AgreementWeighting.default_temperature
    site_temperature: float = SiteWeighting.default_temperature

    def temperature(self, weighting: str) -> float | None:
        """The configured temperature of a weighting strategy, its ``<name>_temperature``
        field (``None``: it has none)."""
        return getattr(self, f"{weighting.replace('-', '_')}_temperature", None)


BASELINES = ("best-teacher", "self-training")


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole protocol of ``prokd experiment``."""

    teacher: str = "unet-large"
    limit_teacher: str = "unet-large"
    student: str = "unet-w8"
    limit_mode: str = "site"  # one limit-trained teacher per site, or "random"
    limit_k: int = 3
    limit_fraction: float = 0.0  # 0: 1 / limit_k
    # Procedure 2's weightings, one student each; none: procedure 2 (and its limit-trained
    # teachers) is left out.
    strategies: tuple[str, ...] = ("uniform", "validation", "confidence", "label-aware")
    teacher_epochs: int = 0  # 0: train.epochs
    student_epochs: int = 0  # 0: train.epochs
    student_augment: bool | None = None  # None: train.augment (students may differ from teachers)
    # Site-teacher regime: one teacher per site on that site's labels (limit_mode "site");
    # the procedure-2 students, the no-KD student and the baselines train at this site, on its
    # labels and on every other training volume without its mask. None: labels are pooled.
    centre_site: str | None = None
    # Students that isolate distillation: "best-teacher" (distilled from the limit-trained
    # teacher with the best validation Dice) and "self-training" (taught by the no-KD student
    # on the same labelled and unlabelled slices: semi-supervised, no other teacher).
    baselines: tuple[str, ...] = ()
    # Procedure 2 with one strong generic teacher: its students learn from ``teacher`` (a
    # trained or a volume teacher, e.g. TAPS through a view bank) beside the limit-trained
    # teachers, weighted by the same strategy.
    p2_teacher: bool = False


@dataclass(frozen=True)
class Config:
    """A whole run or experiment."""

    model: str = "unet-w8"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), for YAML/JSON."""
        return _plain(asdict(self))

    def replace(self, **sections: Any) -> Config:
        """A copy with some sections or fields replaced (``train={"epochs": 2}`` merges)."""
        updates = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = dataclasses.replace(current, **value)
            updates[key] = value
        return dataclasses.replace(self, **updates)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _known(registry: dict[str, Any], what: str) -> tuple[str, typing.Callable[[Any], bool]]:
    return f"unknown {what} (known: {', '.join(registry)})", lambda v: v in registry


def _one_of(options: tuple[str, ...]) -> tuple[str, typing.Callable[[Any], bool]]:
    return f"must be one of {', '.join(repr(o) for o in options)}", lambda v: v in options


def _all_known(registry: dict[str, Any], what: str) -> tuple[str, typing.Callable[[Any], bool]]:
    return f"unknown {what} (known: {', '.join(registry)})", lambda v: set(v) <= set(registry)


CHECKS: dict[str, Check] = {
    "model": _known(MODELS, "model"),
    "data.layout": _known(LAYOUTS, "layout"),
    "data.sources[].layout": _known(LAYOUTS, "layout"),
    "distill.weighting": _known(WEIGHTINGS, "teacher weighting"),
    "experiment.teacher": (
        f"unknown model (known: {', '.join(MODELS)}; or a volume teacher: taps, a .yaml "
        "spec, an exported .onnx/.ts slice model, module:function, bank:DIR)",
        lambda v: v in MODELS or is_volume_model(v),
    ),
    "experiment.limit_teacher": _known(MODELS, "model"),
    "experiment.student": _known(MODELS, "model"),
    "experiment.strategies": _all_known(WEIGHTINGS, "teacher weighting"),
    "train.epochs": ("must be at least 1", lambda v: v >= 1),
    "train.batch_size": ("must be at least 1", lambda v: v >= 1),
    "train.lr": ("must be positive", lambda v: v > 0),
    "train.weight_decay": ("must be >= 0", lambda v: v >= 0),
    "train.patience": ("must be at least 1", lambda v: v >= 1),
    "train.slices_per_epoch": ("must be >= 0", lambda v: v >= 0),
    "train.foreground_fraction": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "train.threads": ("must be >= 0", lambda v: v >= 0),
    "train.unlabelled_share": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "split.labelled_per_site": ("must be >= 0", lambda v: v >= 0),
    "distill.validation_temperature": ("must be positive", lambda v: v > 0),
    "distill.confidence_temperature": ("must be positive", lambda v: v > 0),
    "distill.label_aware_temperature": ("must be positive", lambda v: v > 0),
    "distill.agreement_temperature": ("must be positive", lambda v: v > 0),
    "distill.site_temperature": ("must be positive", lambda v: v > 0),
    "loss.temperature": ("must be positive", lambda v: v > 0),
    "loss.feature_norm": _one_of(FEATURE_NORMS),
    "loss.lovasz_classes": _one_of(CLASS_MODES),
    "loss.dice": ("must be >= 0", lambda v: v >= 0),
    "loss.lovasz": ("must be >= 0", lambda v: v >= 0),
    "loss.kl": ("must be >= 0", lambda v: v >= 0),
    "loss.feature": ("must be >= 0", lambda v: v >= 0),
    "distill.augmented_views": ("must be >= 0", lambda v: v >= 0),
    "experiment.limit_mode": _one_of(LIMIT_MODES),
    "experiment.baselines": (
        f"unknown baseline (known: {', '.join(BASELINES)})",
        lambda v: set(v) <= set(BASELINES),
    ),
    "experiment.limit_k": ("must be at least 1", lambda v: v >= 1),
    "experiment.limit_fraction": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "experiment.teacher_epochs": ("must be >= 0", lambda v: v >= 0),
    "experiment.student_epochs": ("must be >= 0", lambda v: v >= 0),
}


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Validated :class:`Config` from a (possibly partial) nested dict."""
    config = build_dataclass(Config, values or {}, CHECKS)
    e = config.experiment
    if e.centre_site is not None and (e.limit_mode != "site" or not e.strategies):
        raise ConfigError(
            "experiment.centre_site: the site-teacher regime needs limit_mode: site and at "
            "least one strategy (its site teachers are procedure 2's teachers)"
        )
    sites, teachers = config.distill.teacher_sites, config.distill.teachers
    if sites and len(sites) != len(teachers):
        raise ConfigError(
            f"distill.teacher_sites: {len(sites)} sites for {len(teachers)} teachers "
            "(give one site per teacher, in the same order)"
        )
    if e.p2_teacher:
        _check_p2_teacher(e)
    if "best-teacher" in e.baselines and not e.strategies:
        raise ConfigError("experiment.baselines: best-teacher needs procedure 2's teachers")
    for i, source in enumerate(config.data.sources):
        if source.bank and source.labelled:
            raise ConfigError(
                f"data.sources[{i}].bank: a view bank's views are unlabelled; set labelled: false"
            )
        for key in ("bank_sources", "bank_kinds"):
            if getattr(source, key) and not source.bank:
                raise ConfigError(f"data.sources[{i}].{key}: only for a bank (bank: true)")
        if source.test_only and not source.labelled:
            raise ConfigError(f"data.sources[{i}].test_only: {source.root} is unlabelled")
        if source.test_only and config.split.test_site is None:
            raise ConfigError(
                f"data.sources[{i}].test_only: needs split.test_site (its cases only test)"
            )
        if source.mask_as_teacher and not source.labelled:
            raise ConfigError(
                f"data.sources[{i}].mask_as_teacher: {source.root} is unlabelled (labelled: "
                "false), so it has no mask to stand in for the teachers"
            )
    return config


# Weightings that read a fact per teacher that ``experiment.teacher`` does not have.
NEEDS_TEACHER_SITE = ("site", "gate")


def _check_p2_teacher(e: ExperimentConfig) -> None:
    """``experiment.p2_teacher`` needs procedure 2, and weightings that any teacher fits."""
    if not e.strategies:
        raise ConfigError("experiment.p2_teacher: needs procedure 2 (at least one strategy)")
    unfit = [s for s in e.strategies if s in NEEDS_TEACHER_SITE]
    if unfit:
        raise ConfigError(
            f"experiment.p2_teacher: the {', '.join(unfit)} weighting needs each teacher's "
            "site or training cases, which experiment.teacher has none of"
        )


def given_keys(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf key a (nested) config mapping sets."""
    keys = []
    for key, value in (values or {}).items() if isinstance(values, dict) else ():
        if isinstance(value, dict) and value:
            keys += given_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def load_config(path: str | Path, ignored: typing.Sequence[str] = ()) -> Config:
    """Read and validate a YAML config.

    Args:
        path: the YAML file.
        ignored: key prefixes the calling command does not use; keys the file sets under
            them are reported as :class:`~prokd.errors.DataWarning` (one per key).

    Raises:
        ConfigError: ``<path>: <key>: <problem>`` for missing files, YAML errors, unknown keys,
            wrong types and impossible values.
    """
    path = Path(path)
    values = read_yaml(path, "config file")
    try:
        config = config_from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    unused = [
        key
        for key in given_keys(values)
        if any(key == prefix or key.startswith(f"{prefix}.") for prefix in ignored)
    ]
    warn_all(f"{path}: {key} is ignored by this command" for key in unused)
    return config


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
