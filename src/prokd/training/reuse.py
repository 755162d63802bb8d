"""Twin steps: a step whose training depends on exactly what a finished step's did gives
the same model (training is seeded), so it is copied instead of trained; and so is an
evaluation of the same model on the same test cases."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from prokd.data.io import file_sha256
from prokd.data.splits import Split
from prokd.io_atomic import atomic_folder, atomic_path
from prokd.training.config import Config
from prokd.training.job import TrainJob
from prokd.training.run_log import training_finished

STEP_KEY = "step_key.json"  # in a finished step's run folder: what its training depended on


def step_key(
    job: TrainJob,
    config: Config,
    split: Split,
    weighting: str,
    volume_fingerprints: list[str],
    placement: str | None = None,
) -> dict[str, Any]:
    """What a step's trained model and its test evaluation depend on, as JSON reads it
    back: steps with equal keys give the same model. ``placement`` is the contents digest
    of the localiser that places ``gland`` grids (``None`` for other grids: the key then
    stays as it was before localisers were keyed)."""
    distilled = job.distilled
    loss = dataclasses.asdict(job.loss)
    if not distilled:  # the teacher terms and their options do not act
        loss = {k: v for k, v in loss.items() if k == "dice" or k.startswith("lovasz")}
    train = dataclasses.asdict(job.train)
    if not (distilled and train["pseudo_labels"]):  # added later: keys stay as they were
        del train["pseudo_labels"]
    channels = job.settings.channels
    network = job.model_name if channels == 1 else f"{job.model_name}, {channels} input channels"
    key = {
        "model": network,
        "data": dataclasses.asdict(config.data),
        "settings": json.loads(job.settings.fingerprint()),
        "train": train,
        "loss": loss,
        "train_cases": [v.case_id for v in job.train_volumes],
        "val_cases": list(split.val),
        "test_cases": list(split.test),
        "unlabelled_cases": [v.case_id for v in job.unlabelled_volumes],
        "teachers": [file_sha256(t.path) for t in job.teachers],
        "volume_teachers": volume_fingerprints,
        "weighting": weighting if distilled else None,
        "temperature": config.distill.temperature(weighting) if distilled else None,
        "soft_targets": job.soft_target_dir is not None,
        "augmented_views": job.augmented_views if distilled else 0,
    }
    if placement is not None:
        key["placement"] = placement
    return comparable(json.loads(json.dumps(key)))  # tuples become lists, as read back


def comparable(key: dict[str, Any]) -> dict[str, Any]:
    """A step key without what cannot act on its model: a step without teachers never
    sees unlabelled data, so its unlabelled folders and sources (view banks included) are
    left out, and a no-KD student is reused across regimes that differ only there. Keys
    saved before this rule compare equal once passed through it."""
    if key.get("weighting") is not None:  # distilled: unlabelled data acts
        return key
    data = dict(key["data"], unlabelled=[])
    data["sources"] = [s for s in data["sources"] if s["labelled"]]
    return dict(key, data=data)


def save_step_key(run_dir: Path, key: dict[str, Any]) -> None:
    """Record in a finished step's run folder what its training depended on."""
    with atomic_path(run_dir / STEP_KEY) as tmp:
        tmp.write_text(json.dumps({"key": key}, indent=1))


def find_twin(name: str, key: dict[str, Any], reuse_from: tuple[Path, ...]) -> Path | None:
    """The experiment folder among ``reuse_from`` where step ``name`` finished with an
    equal key, or ``None``."""
    for folder in reuse_from:
        run_dir = folder / "models" / name
        saved = run_dir / STEP_KEY
        if training_finished(run_dir) and saved.exists():
            if comparable(json.loads(saved.read_text())["key"]) == key:
                return folder
    return None


def copy_folder(source: Path, target: Path) -> None:
    """Copy a folder whole: it appears under ``target`` only once complete."""
    with atomic_folder(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def copy_twin(twin: Path, out: Path, name: str) -> None:
    """Copy step ``name``'s model and test evaluation from experiment ``twin`` into ``out``."""
    for part in ("models", "evaluation"):
        if (twin / part / name).is_dir():
            copy_folder(twin / part / name, out / part / name)


def evaluated(summary: Path, fingerprint: list[str]) -> bool:
    """Whether ``summary`` is a finished evaluation of the model with this fingerprint."""
    return summary.exists() and json.loads(summary.read_text()).get("checkpoints") == fingerprint


def find_evaluation(
    name: str, fingerprint: list[str], test_cases: tuple[str, ...], reuse_from: tuple[Path, ...]
) -> Path | None:
    """An evaluation folder among ``reuse_from`` of the same model (equal fingerprint) on
    the same test cases, or ``None``."""
    for folder in reuse_from:
        source = folder / "evaluation" / name
        split_file = folder / "split.json"
        if (
            evaluated(source / "summary.json", fingerprint)
            and split_file.exists()
            and Split.load(split_file).test == test_cases
        ):
            return source
    return None
