"""The QC strictness level nested in a fold study (``folds.qc``): each fold's level is
chosen on that fold's own validation volumes, which never include its held-out source, and
judges the fold's test volumes; the rates are summed over the folds.

For every finished cell, the named model (e.g. ``student-kd-p1``) segments the cell's
validation and test volumes as ``prokd predict`` does (localiser, placement, mirrored pass,
QC signals) and each volume's signals and Dice on its own grid are kept in
``<cell>/qc_rows.json``, written after each volume so that a killed run resumes. The
level is chosen by :func:`prokd.evaluation.qc_calibration.choose_level`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from prokd.data.splits import Split
from prokd.data.validate import load_case
from prokd.evaluation.metrics import dice_score
from prokd.evaluation.qc_calibration import (
    PRIOR_LEVEL,
    QCRates,
    choose_level,
    qc_rates,
    total_rates,
)
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import segment_image
from prokd.inference.reliability import LEVELS
from prokd.io_atomic import atomic_path
from prokd.training.config import Config
from prokd.training.runs import prepare_data

QC_ROWS = "qc_rows.json"
ROLES = ("val", "test")


def cell_qc_rows(
    cell_dir: Path, config: Config, model: str, progress: bool = False
) -> list[dict[str, Any]]:
    """``model``'s QC signals and Dice on every validation and test volume of a finished
    cell (``role``, ``case``, ``patient``, ``site``, ``dice``, ``reliable``, ``signals``),
    read from ``<cell>/qc_rows.json`` where already measured.

    Raises:
        DataError: the cell has no trained ``model``.
    """
    path = cell_dir / QC_ROWS
    rows = _saved_rows(cell_dir)
    todo = qc_rows_missing(cell_dir)
    if not todo:
        return rows
    data = prepare_data(config)
    segmenter = load_model_file(cell_dir / "models" / model)
    for role, case_id in tqdm(todo, desc=f"QC rows {cell_dir.parent.name}", disable=not progress):
        case = data.case(case_id)
        loaded = load_case(case)
        result = segment_image(segmenter, loaded.image)
        truth = sitk.GetArrayFromImage(loaded.mask) > 0
        rows.append(
            {
                "role": role,
                "case": case_id,
                "patient": case.patient,
                "site": case.site,
                "dice": dice_score(np.asarray(result.mask) > 0, truth),
                "reliable": result.qc.reliable,
                "signals": result.qc.signals,
            }
        )
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"model": model, "rows": rows}, indent=1))
    return rows


def _saved_rows(cell_dir: Path) -> list[dict[str, Any]]:
    path = cell_dir / QC_ROWS
    return json.loads(path.read_text())["rows"] if path.exists() else []


def qc_rows_missing(cell_dir: Path) -> list[tuple[str, str]]:
    """The (role, case) of the cell's validation and test volumes whose QC row is not yet in
    ``<cell>/qc_rows.json``."""
    done = {(r["role"], r["case"]) for r in _saved_rows(cell_dir)}
    split = Split.load(cell_dir / "split.json")  # the cell's own, as it ran
    return [
        (role, case_id)
        for role in ROLES
        for case_id in getattr(split, role)
        if (role, case_id) not in done
    ]


def _judged(rows: list[dict[str, Any]], role: str) -> list[tuple[dict[str, Any], float]]:
    return [(r["signals"], r["dice"]) for r in rows if r["role"] == role]


def nested_qc(rows_by_fold: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """QC rates over the folds' test volumes at each fold's level chosen on its own
    validation volumes (``nested``), and at the level set beforehand (``prior``)."""
    levels = {fold: choose_level(_judged(rows, "val")) for fold, rows in rows_by_fold.items()}
    nested: list[QCRates] = []
    prior: list[QCRates] = []
    for fold, rows in rows_by_fold.items():
        nested.append(qc_rates(_judged(rows, "test"), LEVELS[levels[fold]]))
        prior.append(qc_rates(_judged(rows, "test"), LEVELS[PRIOR_LEVEL]))
    return {
        "fold_levels": levels,
        "validation_volumes": {
            fold: sum(r["role"] == "val" for r in rows) for fold, rows in rows_by_fold.items()
        },
        "nested": total_rates(nested).as_dict(),
        "prior_level": PRIOR_LEVEL,
        "prior": total_rates(prior).as_dict(),
    }


def pool_qc(cell_dirs: dict[str, Path], model: str) -> dict[str, Any] | None:
    """:func:`nested_qc` over the cells (label -> folder) of a pool whose QC rows are
    measured, with the model's name; ``None`` when none is."""
    rows = {
        label: json.loads((folder / QC_ROWS).read_text())["rows"]
        for label, folder in cell_dirs.items()
        if (folder / QC_ROWS).exists()
    }
    return {"model": model, **nested_qc(rows)} if rows else None
