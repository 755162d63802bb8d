"""Run folders: data preparation from a config, and the metadata every run records."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from prokd.data.cache import PreprocessCache, PreprocessedVolume
from prokd.data.layouts import Case, find_cases, unlabelled_cases
from prokd.data.splits import (
    Split,
    held_out_case,
    held_out_site,
    hold_back_labels,
    split_by_site,
)
from prokd.data.view_store import bank_cases
from prokd.distill.volume_teachers import slice_grid_probabilities
from prokd.errors import ConfigError
from prokd.inference.localise import ModelLocator
from prokd.inference.volume_models import VolumeModel
from prokd.io_atomic import atomic_path
from prokd.training.config import Config, SourceConfig, load_config, save_config

PACKAGES = ("torch", "monai", "numpy", "SimpleITK", "scipy", "onnxruntime", "prokd")


def default_cache_dir() -> Path:
    """``$PROKD_CACHE``, else ``~/.cache/prokd``."""
    return Path(os.environ.get("PROKD_CACHE", Path.home() / ".cache" / "prokd"))


@dataclass
class PreparedData:
    """Cases, their split, and a loader of preprocessed volumes.

    ``unlabelled`` are the volumes of the ``data.unlabelled`` folders; together with the
    split's held-back training cases they are the unlabelled data of distilled students.
    ``mask_teachers`` are the cases whose mask stands in for every volume teacher
    (``data.sources[].mask_as_teacher``).
    """

    layout: str
    cases: list[Case]
    split: Split
    cache: PreprocessCache
    config: Config
    unlabelled: list[Case]
    mask_teachers: frozenset[str] = frozenset()

    def volumes(
        self, case_ids: tuple[str, ...] | list[str], desc: str = "preprocess"
    ) -> list[PreprocessedVolume]:
        """Preprocessed volumes of the given cases (cached on disk)."""
        by_id = {c.case_id: c for c in self.cases}
        ids = list(case_ids)
        return [
            self.cache.load(by_id[i], self.config.preprocess)
            for i in tqdm(ids, desc=desc, unit="case", leave=False, disable=len(ids) < 4)
        ]

    def unlabelled_volumes(self) -> list[PreprocessedVolume]:
        """Held-back training cases (masks dropped) and the unlabelled folders' volumes."""
        held = [v.without_mask() for v in self.volumes(self.split.unlabelled, "preprocess")]
        ids = [c.case_id for c in self.unlabelled]
        disable = len(ids) < 4
        return held + [
            self.cache.load(c, self.config.preprocess)
            for c in tqdm(self.unlabelled, desc="unlabelled", leave=False, disable=disable)
        ]

    def case(self, case_id: str) -> Case:
        """The manifest entry of a case id (labelled, or from an unlabelled folder)."""
        return next(c for c in [*self.cases, *self.unlabelled] if c.case_id == case_id)

    def with_teacher_maps(
        self, volumes: list[PreprocessedVolume], teachers: list[VolumeModel]
    ) -> list[PreprocessedVolume]:
        """The volumes carrying every volume teacher's probabilities on their slice grid
        (computed once per volume and teacher, then read from the cache). A labelled volume
        of a ``mask_as_teacher`` source carries its mask instead, for every teacher."""

        def maps(volume: PreprocessedVolume) -> list[np.ndarray]:
            if volume.labelled and volume.case_id in self.mask_teachers:
                return [volume.mask] * len(teachers)  # with_teacher_maps makes them float32
            case = self.case(volume.case_id)
            root = self.cache.root
            return [slice_grid_probabilities(t, case, volume.grid, root) for t in teachers]

        return [
            v.with_teacher_maps(maps(v))
            for v in tqdm(volumes, desc="volume teachers", unit="case", leave=False)
        ]


def source_cases(
    source: SourceConfig,
    labelled: frozenset[str] = frozenset(),
    held_out: frozenset[str] = frozenset(),
) -> list[Case]:
    """The cases of one ``data.sources`` entry: labelled (its layout's cases) or not (every
    image volume, masks unused; a view bank's views, less those as acquired of the
    ``labelled`` case ids and those mixed with a ``held_out`` patient's volume). A source
    with a ``site`` puts all its cases in that site, their ids prefixed with it.

    Raises:
        DataError: unreadable folder or layout.
    """
    if source.bank:
        kinds = source.bank_kinds
        return bank_cases(source.root, source.bank_sources, kinds, labelled, held_out)
    cases = (
        find_cases(source.root, source.layout)[1]
        if source.labelled
        else unlabelled_cases(source.root, source.channel)
    )
    if source.site is None:
        return cases
    return [
        replace(
            c,
            case_id=f"{source.site}/{c.case_id}",
            site=source.site,
            group=f"{source.site}/{c.patient}",
        )
        for c in cases
    ]


def _without_held_out_patients(
    unlabelled: list[Case], cases: list[Case], split: Split
) -> list[Case]:
    """The unlabelled volumes less those of a validation or test patient (a view bank's
    views of them): they would put those patients' images into training."""
    held_out = {c.patient for c in cases if c.case_id in {*split.val, *split.test}}
    return [c for c in unlabelled if c.patient not in held_out]


def config_cases(config: Config) -> list[Case]:
    """Every volume a config's data names, labelled first (``data.root`` and labelled
    sources), then unlabelled (``data.unlabelled`` and unlabelled sources), view banks
    left out.

    Raises:
        ConfigError: the config names no data.
        DataError: an unreadable folder.
    """
    data = config.data
    cases = find_cases(data.root, data.layout)[1] if data.root else []
    sources = [s for s in data.sources if not s.bank]
    cases += [c for s in sources if s.labelled for c in source_cases(s)]
    cases += [c for folder in data.unlabelled for c in unlabelled_cases(folder)]
    cases += [c for s in sources if not s.labelled for c in source_cases(s)]
    if not cases:
        raise ConfigError("data: no volume (set data.root or add data.sources)")
    return cases


def prepare_data(config: Config, data_root: str | None = None) -> PreparedData:
    """Find the cases of the configured dataset, split them, and list the unlabelled volumes.

    No volume of a ``split.test_site`` or of ``data.exclude_sites`` trains, labelled or not
    (unlabelled folders and view banks included); ``test_only`` sources' cases only test.

    Raises:
        ConfigError: no data folder given in the config or on the command line, or an
            unknown ``split.test_site``.
        DataError: unreadable dataset or unlabelled folder.
    """
    root = data_root or config.data.root
    sources = config.data.sources
    if not root and not any(source.labelled for source in sources):
        raise ConfigError(
            "data.root is not set: give --data DIR, set data.root, or add a labelled "
            "data.sources entry"
        )
    layout, cases = find_cases(root, config.data.layout) if root else ("sources", [])
    labelled = [(source, source_cases(source)) for source in sources if source.labelled]
    cases += [case for _, found in labelled for case in found]
    mask_teachers = frozenset(
        case.case_id for source, found in labelled if source.mask_as_teacher for case in found
    )
    s = config.split
    test_only = {c.case_id for source, found in labelled if source.test_only for c in found}
    cases = [
        c
        for c in cases
        if c.site not in config.data.exclude_sites
        and (c.case_id not in test_only or c.site == s.test_site)
    ]
    if s.test_site is not None and s.test_case is not None:
        raise ConfigError("split: give test_site or test_case, not both")
    if s.test_site is not None:
        split = held_out_site(cases, s.test_site, s.val_fraction, s.seed)
    elif s.test_case is not None:
        split = held_out_case(cases, s.test_case, s.val_fraction, s.seed)
    else:
        split = split_by_site(cases, s.val_fraction, s.test_fraction, s.seed)
    if s.labelled_per_site:
        split = hold_back_labels(cases, split, s.labelled_per_site, s.seed)
    unlabelled = [case for folder in config.data.unlabelled for case in unlabelled_cases(folder)]
    labelled_ids = frozenset(c.case_id for c in cases)
    held = frozenset(c.patient for c in cases if c.case_id in {*split.val, *split.test})
    unlabelled += [
        c
        for source in sources
        if not source.labelled
        for c in source_cases(source, labelled_ids, held)
    ]
    left_out = {*config.data.exclude_sites, s.test_site}  # a held-out site trains in no way
    unlabelled = [c for c in unlabelled if c.site not in left_out]
    unlabelled = _without_held_out_patients(unlabelled, cases, split)
    ids = [c.case_id for c in cases + unlabelled]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(
            f"data: case id {duplicate!r} comes from two folders; give the sources a site name"
        )
    gland = config.preprocess.crop_centre == "gland"
    locator = ModelLocator(config.preprocess.localiser) if gland else None
    cache = PreprocessCache(config.data.cache_dir or default_cache_dir(), locator)
    return PreparedData(layout, cases, split, cache, config, unlabelled, mask_teachers)


def git_commit() -> str | None:
    """Commit of the prokd source tree, if it is a git checkout, with ``-dirty`` appended
    when tracked files of the package (``src/prokd``) differ from it: the code that runs is
    then not that commit's."""

    def git(*words: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["git", *words],
                cwd=Path(__file__).parents[1],  # the package
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    dirty = changed is not None and changed.returncode == 0 and changed.stdout.strip() != ""
    return head.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded in every run folder."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "packages": versions,
        "argv": sys.argv,
    }


def saved_config_differs(run_dir: Path, config: Config) -> bool:
    """Whether ``run_dir`` holds a ``config.yaml`` other than ``config``, both resolved (a
    file written before a setting existed reads with that setting's default)."""
    saved = Path(run_dir) / "config.yaml"
    return saved.exists() and load_config(saved).to_dict() != config.to_dict()


def write_run_metadata(run_dir: Path, config: Config, data: PreparedData) -> None:
    """Resolved config, split and environment into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    data.split.save(run_dir / "split.json")
    with atomic_path(run_dir / "environment.json") as tmp:
        tmp.write_text(json.dumps({**environment(), "data_layout": data.layout}, indent=1))
