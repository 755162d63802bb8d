"""``prokd study``: a grid of regimes x seeds, one experiment per cell, and the evidence.

A study file names a base experiment config, the seeds, and the regimes (each a set of
overrides of the base config, and optionally its own ``seeds``), and may name pools: groups
of regimes summarised together (the folds of a leave-one-case-out design), and may declare
``folds`` (leave one source out, :mod:`prokd.training.folds`): each regime then runs once
per held-out source and is pooled over them. Every cell is a
whole ``prokd experiment`` in ``<out>/<regime>/seed<N>``; finished cells are skipped and an
interrupted one resumes. A step that would train the same model as a finished step of
another cell under ``<out>`` (equal network, data, seed and settings; see
``Experiment.step_key``) is copied instead. The summary gives, per regime, mean ± std over
seeds of test Dice for every model, and paired comparisons with the seed as the unit of
replication (each seed's mean difference over its test volumes; t interval and t-test over
seeds, Holm-corrected across the study's regimes), listed in ``comparisons``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prokd.errors import ConfigError, ProkdError
from prokd.evaluation.bench import cpu_model, study_latency
from prokd.evaluation.stats import (
    describe,
    holm,
    patient_level_comparison,
    seed_level_comparison,
)
from prokd.evaluation.study_report import write_study_report
from prokd.io_atomic import atomic_path
from prokd.training.cell_inputs import check_cell_inputs
from prokd.training.cell_records import (
    CELL_TIME,
    cell_volume_rows,
    cells_made_by,
    finished_results,
    keep_records,
    made_by,
    restore_records,
)
from prokd.training.config import Config, config_from_dict, load_config
from prokd.training.contrasts import Contrast, parse_contrasts, regime_contrasts
from prokd.training.experiment import run_experiment
from prokd.training.fold_qc import cell_qc_rows, pool_qc, qc_rows_missing
from prokd.training.folds import Folds, parse_folds, train_fold_localisers
from prokd.training.results import COMPARISONS, case_dice, case_patients, paired_scores
from prokd.training.runs import git_commit
from prokd.yaml_files import read_yaml

STUDY_KEYS = ("base", "seeds", "regimes", "pools", "description", "folds", "contrasts")


@dataclass(frozen=True)
class Cell:
    """One experiment of the grid: a regime's config with one seed."""

    regime: str
    seed: int
    config: Config
    fold: str | None = None  # the source a leave-one-source-out fold holds out

    @property
    def folder(self) -> str:
        """The cell's folder inside the study folder."""
        return f"{self.regime}/seed{self.seed}"


@dataclass(frozen=True)
class Study:
    """A parsed study file."""

    path: Path
    description: str
    base: Path
    seeds: tuple[int, ...]
    cells: tuple[Cell, ...]
    pools: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    folds: Folds | None = None
    contrasts: tuple[Contrast, ...] = ()

    @property
    def regimes(self) -> list[str]:
        """Regime names in the file's order."""
        return list(dict.fromkeys(c.regime for c in self.cells))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; every regime's config is validated up front.

    Raises:
        ConfigError: ``<path>: <key>: <problem>`` for a missing file, bad YAML, unknown keys,
            no seeds or regimes, or a regime whose overrides make an invalid config.
    """
    path = Path(path)
    values = read_yaml(path, "study file")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping with base, seeds and regimes")
    unknown = sorted(set(values) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (known: {', '.join(STUDY_KEYS)})")
    if "base" not in values:
        raise ConfigError(f"{path}: base: missing (the experiment config the regimes change)")
    base = path.parent / str(values["base"])
    load_config(base)  # a clear error for a missing or invalid base
    base_values = read_yaml(base, "base config")
    seeds = values.get("seeds")
    _check_seeds(seeds, f"{path}: seeds")
    regimes = values.get("regimes")
    if not (isinstance(regimes, dict) and regimes):
        raise ConfigError(f"{path}: regimes: expected a mapping of name -> config overrides")
    folds = parse_folds(values.get("folds"), path)
    cells, names, fold_pools = [], [], {}
    for name, overrides in regimes.items():
        if not isinstance(overrides, dict | type(None)):
            raise ConfigError(f"{path}: regimes.{name}: expected a mapping of config overrides")
        overrides = dict(overrides or {})
        regime_seeds = overrides.pop("seeds", seeds)  # a regime may run fewer seeds
        _check_seeds(regime_seeds, f"{path}: regimes.{name}.seeds")
        merged = _merge(base_values or {}, overrides)
        variants = [(str(name), None, merged)]
        if folds is not None:
            variants = [
                (folds.regime(str(name), s), s, _merge(merged, folds.overrides(s)))
                for s in folds.sources
            ]
            fold_pools[str(name)] = [v[0] for v in variants]
        for regime, fold, values_of in variants:
            names.append(regime)
            for seed in regime_seeds:
                seeded = _merge(values_of, {"split": {"seed": seed}, "train": {"seed": seed}})
                try:
                    config = config_from_dict(seeded)
                except ConfigError as err:
                    raise ConfigError(f"{path}: regimes.{regime}: {err}") from None
                cells.append(Cell(regime, seed, config, fold))
    pools = _pools({**fold_pools, **(values.get("pools") or {})}, names, path)
    contrasts = parse_contrasts(values.get("contrasts") or [], [*names, *pools], path)
    description = str(values.get("description", ""))
    return Study(path, description, base, tuple(seeds), tuple(cells), pools, folds, contrasts)


def _check_seeds(seeds: Any, where: str) -> None:
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
        raise ConfigError(f"{where}: expected a non-empty list of integers, got {seeds!r}")


def _pools(values: Any, regimes: list[str], path: Path) -> dict[str, tuple[str, ...]]:
    """Pool name -> its regimes (summarised together, e.g. the folds of a cross-validation).

    Raises:
        ConfigError: not a mapping of names to lists of known regimes, or a name that is
            also a regime's.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: pools: expected a mapping of name -> list of regimes")
    pools = {}
    for name, members in values.items():
        if not (isinstance(members, list) and members):
            raise ConfigError(f"{path}: pools.{name}: expected a non-empty list of regimes")
        unknown = [m for m in members if m not in regimes]
        if unknown:
            raise ConfigError(f"{path}: pools.{name}: unknown regime {unknown[0]!r}")
        if name in regimes:
            raise ConfigError(f"{path}: pools.{name}: a regime has that name")
        pools[str(name)] = tuple(members)
    return pools


def run_study(
    study: Study,
    out: str | Path,
    data_root: str | None = None,
    progress: bool = True,
    jobs: int = 1,
    publish: str | Path | None = None,
    run_cells: bool = True,
    command: str = "run_study()",
    only: tuple[str, ...] = (),
    records: str | Path | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell (unless ``run_cells`` is false), then summarise the finished
    cells into ``<out>/study.json``, ``study.md`` and plots; with ``publish``, also as
    ``<publish>/<study name>.md`` (JSON and figures beside it); ``command`` is how the
    summary says it was made; ``only`` runs just those regimes' cells (the summary still
    covers every finished cell); with ``records``, finished cells and fold localisers are
    kept there and restored from there (:mod:`prokd.training.cell_records`). Returns the
    summary.

    Raises:
        ConfigError: ``only`` names a regime the study does not have, or a finished cell's
            view bank has changed since the cell was made.
        ProkdError: no cell has finished.
    """
    out = Path(out)
    unknown = sorted(set(only) - set(study.regimes))
    if unknown:
        raise ConfigError(
            f"--only: {unknown[0]!r} is not a regime of {study.path} "
            f"(regimes: {', '.join(study.regimes)})"
        )
    started, commit = time.perf_counter(), git_commit()  # the code this process runs
    records = Path(records) if records is not None else None
    if records is not None:
        folds = study.folds.sources if study.folds is not None else ()
        restore_records(records, out, [c.folder for c in study.cells], folds)
    chosen = [
        (index, cell)
        for index, cell in enumerate(study.cells if run_cells else ())
        if not only or cell.regime in only
    ]
    for index, cell in chosen:
        cell_dir = out / cell.folder
        if finished_results(cell_dir) is None:
            if progress:
                print(f"study cell {index + 1}/{len(study.cells)}: {cell.folder}", flush=True)
            tick = time.perf_counter()
            others = tuple(p for p in sorted(out.glob("*/seed*")) if p != cell_dir)
            config = cell_config(study, cell, out, progress)
            run_experiment(config, cell_dir, data_root, progress, jobs=jobs, reuse_from=others)
            with atomic_path(cell_dir / CELL_TIME) as tmp:
                tmp.write_text(json.dumps(made_by(time.perf_counter() - tick, commit), indent=1))
        settle_cell(study, cell, out, records, data_root, progress)
    settled = {cell.folder for _, cell in chosen}
    for cell in study.cells:  # every other finished cell, finished before
        if cell.folder not in settled and finished_results(out / cell.folder) is not None:
            check_cell_inputs(out / cell.folder, ran_config(cell.config, data_root))
            measured = study.folds is None or study.folds.qc is None
            if records is not None and (measured or not qc_rows_missing(out / cell.folder)):
                keep_records(out, records, cell.folder, cell.fold)
    summary = summarise_study(study, out)
    if not summary["regimes"]:
        raise ProkdError(f"{out}: no finished cell to summarise")
    summary["latency"] = study_latency(summary)
    summary["command"] = command
    summary["machine"] = f"{cpu_model()}, {os.cpu_count()} cores"
    summary["seconds_this_session"] = time.perf_counter() - started
    write_study_report(summary, out)
    if publish is not None:
        write_study_report(summary, publish, study.path.stem)
    return summary


def settle_cell(
    study: Study,
    cell: Cell,
    out: Path,
    records: Path | None,
    data_root: str | None = None,
    progress: bool = False,
) -> None:
    """A finished cell's bank views checked (recorded the first time), its QC rows measured
    where the study nests a QC level, and its record kept in ``records``; nothing for an
    unfinished cell."""
    cell_dir = out / cell.folder
    if finished_results(cell_dir) is None:
        return
    check_cell_inputs(cell_dir, ran_config(cell.config, data_root))
    if study.folds is not None and study.folds.qc is not None and qc_rows_missing(cell_dir):
        cell_qc_rows(cell_dir, cell_config(study, cell, out), study.folds.qc, progress)
    if records is not None:
        keep_records(out, records, cell.folder, cell.fold)


def ran_config(config: Config, data_root: str | None) -> Config:
    """A cell's config as its experiment saves it (``--data`` replaces the data root)."""
    return config if not data_root else config.replace(data={"root": str(Path(data_root))})


def cell_config(study: Study, cell: Cell, out: Path, progress: bool = False) -> Config:
    """A cell's config as it runs: a fold's cells place their grids with the fold's own
    localiser when the study trains one (trained first, when not yet done)."""
    if study.folds is None or study.folds.localiser is None or cell.fold is None:
        return cell.config
    localiser = train_fold_localisers(study.folds, [cell.fold], out, progress)[cell.fold]
    return cell.config.replace(preprocess={"localiser": str(localiser)})


def summarise_study(study: Study, out: Path) -> dict[str, Any]:
    """Per regime: mean ± std over seeds of every model's test Dice, and seed-level paired
    comparisons; per pool (regimes named together in the study file, such as the folds of a
    leave-one-case-out design) the same over all its cells, a seed's folds together; and
    ``comparisons``, every regime's and pool's comparisons as one list with Holm-corrected
    p-values; from the cells' stored results only."""
    regimes = {}
    for regime in study.regimes:
        summary = _summarise_cells([c for c in study.cells if c.regime == regime], out)
        if summary is not None:
            regimes[regime] = summary
    for name, members in study.pools.items():
        summary = _summarise_cells([c for c in study.cells if c.regime in members], out)
        if summary is not None:
            regimes[name] = {**summary, "pooled_from": list(members)}
    if study.folds is not None and study.folds.qc is not None:
        for name, members in study.pools.items():
            if name in regimes:
                folders = {c.folder: out / c.folder for c in study.cells if c.regime in members}
                regimes[name]["qc"] = pool_qc(folders, study.folds.qc)
    exploratory = set(study.folds.exploratory) if study.folds else set()
    fold_of = {c.regime: c.fold for c in study.cells}
    for name, r in regimes.items():
        members = r.get("pooled_from", [name])
        r["exploratory_folds"] = sorted(  # of the members that have finished cells
            {fold_of[m] for m in members if fold_of[m] in exploratory and m in regimes}
        )
    # A tuning pick compares pools (a setting over all its folds) when the study has any.
    scored = {
        n: r["selection_val_dice"]
        for n, r in regimes.items()
        if r["selection_val_dice"] is not None and ("pooled_from" in r) == bool(study.pools)
    }
    rows = [r for c in study.cells for r in cell_volume_rows(out / c.folder, c.regime, c.seed)]
    return {
        "study": str(study.path),
        "comparisons": comparison_list(regimes),
        "contrasts": regime_contrasts(study.contrasts, study.pools, fold_of, exploratory, rows),
        "rows": rows,
        "best_on_validation": max(scored, key=scored.get) if scored else None,
        "description": study.description,
        "seeds": list(study.seeds),
        "regimes": regimes,
        "regimes_not_run": [r for r in study.regimes if r not in regimes],
        "made_by": cells_made_by(out, [c.folder for c in study.cells]),
    }


def comparison_list(regimes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every regime's (and pool's) seed-level comparisons as one list: ``name``, ``regime``,
    ``a``, ``b``, ``mean``, ``ci``, ``p``, ``p_holm``, ``n_seeds``, ``n_volumes`` (and the
    rest of the comparison). ``p_holm`` corrects each comparison's p over the study's
    regimes (pools, which repeat regimes, over the pools)."""
    entries = [
        {"name": name, "regime": regime, **c, "pool": "pooled_from" in r}
        for regime, r in regimes.items()
        for name, c in r["comparisons"].items()
    ]
    for name, pool in {(e["name"], e["pool"]) for e in entries}:
        family = [e for e in entries if e["name"] == name and e["pool"] == pool]
        for entry, adjusted in zip(family, holm([e["p"] for e in family]), strict=True):
            entry["p_holm"] = adjusted
    return entries


def _summarise_cells(cells: list[Cell], out: Path) -> dict[str, Any] | None:
    """Mean ± std over the finished cells of every model's test Dice, HD95, ASSD and
    seconds per volume, and seed-level paired comparisons; ``None`` when no cell has
    finished."""
    results = {c.folder: finished_results(out / c.folder) for c in cells}
    done = {folder: r for folder, r in results.items() if r is not None}
    if not done:
        return None
    # HD95 and ASSD in mm; seconds per test volume: prediction with preprocessing, every
    # model of a cell in one process with the same threads.
    metrics: dict[str, dict[str, list[float]]] = {"dice": {}, "hd95": {}, "assd": {}, "seconds": {}}
    validation: dict[str, list[float]] = {}
    roles = {row["model"]: row["kind"] for r in done.values() for row in r["rows"]}
    for r in done.values():
        for row in r["rows"]:
            for metric, values in metrics.items():
                value = row["seconds_per_volume"] if metric == "seconds" else row[metric]["mean"]
                values.setdefault(row["model"], []).append(value)
            if row["val_dice"] is not None:
                validation.setdefault(row["model"], []).append(row["val_dice"])
    chosen = [r["strategy_selected_on_validation"] for r in done.values()]
    seed_of = {c.folder: c.seed for c in cells}
    pairs: dict[str, list[tuple[int, str, float, float]]] = {}
    patient_pairs: dict[str, list[tuple[str, float, float]]] = {}
    for folder, r in done.items():
        evaluation = out / folder / "evaluation"
        dice = {row["model"]: case_dice(evaluation / row["model"]) for row in r["rows"]}
        patients = case_patients(evaluation / r["rows"][0]["model"])
        pick = r["strategy_selected_on_validation"]
        for label, (_, _, cases, a, b) in paired_scores(dice, pick).items():
            pairs.setdefault(label, []).extend(
                (seed_of[folder], case, x, y) for case, x, y in zip(cases, a, b, strict=True)
            )
            patient_pairs.setdefault(label, []).extend(
                (patients[case], x, y) for case, x, y in zip(cases, a, b, strict=True)
            )
    comparisons = {
        label: {
            "a": a,
            "b": b,
            **seed_level_comparison(pairs[label]),
            "patients": patient_level_comparison(patient_pairs[label]),
        }
        for label, a, b in COMPARISONS
        if label in pairs
    }
    gaps = [r["teacher_gap"] for r in done.values()]
    timed = [out / folder / CELL_TIME for folder in done]
    seconds = [json.loads(t.read_text())["seconds"] for t in timed if t.exists()]
    teacher = np.mean(metrics["dice"]["teacher"])
    chosen_rows = [
        next(row for row in r["rows"] if row["model"] == name)
        for r, name in zip(done.values(), chosen, strict=True)
        if name
    ]
    chosen_dice = [row["dice"]["mean"] for row in chosen_rows]
    chosen_val = describe([row["val_dice"] for row in chosen_rows]) if chosen_rows else None
    p1_val = describe(validation["student-kd-p1"]) if "student-kd-p1" in validation else None
    selection = chosen_val or p1_val  # procedure 2's chosen student; procedure 1's if it is off
    return {
        "seeds": sorted({c.seed for c in cells if c.folder in done}),
        "cells": len(done),
        "seeds_missing": sorted({c.seed for c in cells if c.folder not in done}),
        **{key: {m: describe(v) for m, v in values.items()} for key, values in metrics.items()},
        "val_dice": {m: describe(v) for m, v in validation.items()},
        "roles": roles,
        "chosen_strategies": chosen,
        "chosen_p2_dice": describe(chosen_dice) if chosen_dice else None,
        "chosen_p2_val_dice": chosen_val,
        "chosen_p2_over_teacher": float(np.mean(chosen_dice) / teacher) if chosen_dice else None,
        "selection_val_dice": selection["mean"] if selection else None,
        "teacher_gap": describe(gaps),
        "comparisons": comparisons,
        "cell_seconds": sum(seconds),
        "config": next(iter(done.values()))["config"],
    }
