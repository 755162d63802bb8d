"""A study's finished cells kept where a later session finds them (``prokd study --records``).

A study's run folder holds models, checkpoints and caches, and may not outlive the session
that made it, while a study of many hours spans sessions. What the summary reads of a
finished cell is small: its config, split, results, per-model test metrics, QC rows, time,
inputs and environment. :func:`keep_cell` copies that record into the records folder (meant
to be committed beside the published results) once the cell and its QC rows are done;
:func:`restore_cell` copies it back into a run folder that lacks the cell, which then counts
as finished and is not trained again. A restored cell has no models, so no later cell reuses
its steps. Each fold's localiser is kept the same way, so that every cell of a fold places
its grids with the same localiser whichever session trains it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from prokd.errors import DataError
from prokd.evaluation.bench import cpu_model
from prokd.io_atomic import atomic_path
from prokd.training.cell_inputs import CELL_INPUTS
from prokd.training.fold_qc import QC_ROWS
from prokd.training.folds import fold_localiser_file

CELL_TIME = "cell_seconds.json"  # wall time of the invocation that finished the cell
# Files of a finished cell folder that its summary and checks read.
CELL_FILES = (
    "config.yaml",
    "split.json",
    "results.json",
    "environment.json",
    CELL_TIME,
    CELL_INPUTS,
    QC_ROWS,
)
MODEL_FILES = ("metrics.csv", "summary.json")  # of each evaluated model: evaluation/<model>/


def finished_results(cell_dir: Path) -> dict[str, Any] | None:
    """A cell's ``results.json``, or ``None`` while the cell has not finished."""
    results = cell_dir / "results.json"
    return json.loads(results.read_text()) if results.exists() else None


def cell_volume_rows(cell_dir: Path, regime: str, seed: int) -> list[dict[str, Any]]:
    """A finished cell's per-volume test rows (regime, seed, model, case, patient, site,
    Dice, HD95, ASSD in mm), so that each figure of a summary can be recomputed; none for
    an unfinished cell."""
    results = finished_results(cell_dir)
    rows = []
    for row in results["rows"] if results else []:
        path = cell_dir / "evaluation" / row["model"] / "metrics.csv"
        with open(path, newline="") as handle:
            for line in csv.DictReader(handle):
                rows.append(
                    {
                        "regime": regime,
                        "seed": seed,
                        "model": row["model"],
                        "case": line["case"],
                        "patient": line.get("patient") or line["case"],
                        "site": line["site"],
                        **{k: float(line[k]) for k in ("dice", "hd95", "assd")},
                    }
                )
    return rows


def record_files(cell_dir: Path) -> list[Path]:
    """The cell's record: its files in :data:`CELL_FILES` and each evaluated model's
    metrics, relative to ``cell_dir``, as far as they exist."""
    names = [Path(n) for n in CELL_FILES if (cell_dir / n).is_file()]
    evaluation = cell_dir / "evaluation"
    models = sorted(p for p in evaluation.iterdir() if p.is_dir()) if evaluation.is_dir() else []
    names += [
        Path("evaluation") / m.name / n for m in models for n in MODEL_FILES if (m / n).is_file()
    ]
    return names


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def keep_cell(cell_dir: Path, record_dir: Path) -> None:
    """Copy a finished cell's record into ``record_dir`` (each file written atomically,
    ``results.json`` last: a record without it is not a finished cell)."""
    names = record_files(cell_dir)
    if Path("results.json") not in names:
        raise DataError(cell_dir, "not a finished cell (no results.json): nothing to keep")
    for name in sorted(names, key=lambda n: n == Path("results.json")):
        keep_file(cell_dir / name, record_dir / name)


def restore_cell(record_dir: Path, cell_dir: Path) -> bool:
    """Copy a kept cell's record into ``cell_dir`` when the record is of a finished cell and
    ``cell_dir`` has not finished (``results.json`` last); returns whether it did."""
    if not (record_dir / "results.json").is_file() or (cell_dir / "results.json").exists():
        return False
    names = record_files(record_dir)
    for name in sorted(names, key=lambda n: n == Path("results.json")):
        _copy(record_dir / name, cell_dir / name)
    return True


def keep_file(source: Path, target: Path) -> None:
    """Copy one file (of a cell's record, or a fold's localiser) into the records, or back,
    unless ``target`` already holds it."""
    if not target.is_file() or _differs(source, target):
        _copy(source, target)


def _differs(a: Path, b: Path) -> bool:
    return a.read_bytes() != b.read_bytes()


def keep_records(out: Path, records: Path, folder: str, fold: str | None) -> None:
    """Keep the finished cell ``out/<folder>`` in ``records``, and its fold's localiser."""
    keep_cell(out / folder, records / folder)
    if fold is not None and fold_localiser_file(out, fold).exists():
        keep_file(fold_localiser_file(out, fold), fold_localiser_file(records, fold))


def restore_records(
    records: Path, out: Path, folders: list[str], folds: tuple[str, ...] = ()
) -> None:
    """Copy the kept localisers of ``folds`` and the kept cells among ``folders`` from
    ``records`` into ``out`` where ``out`` lacks them."""
    for source in folds:
        if fold_localiser_file(records, source).exists():
            keep_file(fold_localiser_file(records, source), fold_localiser_file(out, source))
    for folder in folders:
        restore_cell(records / folder, out / folder)


def made_by(seconds: float, commit: str | None) -> dict[str, Any]:
    """What a finished cell's ``cell_seconds.json`` records: its wall time, when it finished,
    the commit of the code that ran it (:func:`prokd.training.runs.git_commit` when the study
    process started) and the machine."""
    return {
        "seconds": seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": commit,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
    }


def cells_made_by(out: Path, folders: list[str]) -> dict[str, dict[str, Any]]:
    """Each finished cell's ``cell_seconds.json`` (how long, and, for cells finished since
    it was recorded, when, on which commit and machine), by cell folder."""
    timed = {folder: out / folder / CELL_TIME for folder in folders}
    return {f: json.loads(t.read_text()) for f, t in timed.items() if t.is_file()}
