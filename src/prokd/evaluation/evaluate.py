"""Evaluation of a model on whole cases: per-volume metrics on the original grid, per site."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from prokd.data.io import Geometry
from prokd.data.layouts import Case, find_cases
from prokd.data.preprocess import PreprocessSettings, preprocess_volume, to_original_grid
from prokd.data.validate import load_case
from prokd.distill.volume_teachers import (
    SLICE_MODEL_SUFFIXES,
    VolumeTeacher,
    is_volume_teacher,
    load_volume_teacher,
)
from prokd.errors import warn_all
from prokd.evaluation.metrics import METRIC_NAMES, volume_metrics
from prokd.inference.model_files import load_model_file
from prokd.inference.postprocess import postprocess_mask
from prokd.inference.predict import SliceModel, predict_slices
from prokd.io_atomic import atomic_path

if TYPE_CHECKING:
    import torch

OVERLAYS = "overlays.npz"


@dataclass
class ModelEvaluation:
    """One model's evaluation: a row per case, and overlay slices of the first cases.

    ``overlays`` maps ``<case>/image``, ``<case>/truth`` and ``<case>/probability`` to the
    case's largest-gland slice (original grid), so reports draw figures without predicting.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    overlays: dict[str, np.ndarray] = field(default_factory=dict)


def _largest_gland_slice(truth: np.ndarray) -> int:
    return int(truth.reshape(len(truth), -1).sum(1).argmax())


def evaluate_cases(
    models: dict[str, tuple[SliceModel, PreprocessSettings] | VolumeTeacher],
    cases: list[Case],
    progress: bool = True,
    postprocess: bool = True,
    overlay_cases: int = 0,
) -> dict[str, ModelEvaluation]:
    """Per model, one row per case: site, metrics against the first reader, inference time.

    Each case is read and preprocessed once (per distinct preprocessing) and predicted by
    every model; ``seconds`` is the model's prediction time plus the preprocessing time. A
    model may also be a volume teacher (:mod:`prokd.distill.volume_teachers`), which maps
    the whole volume itself (its time is all of it) and is thresholded at its own
    ``threshold``.
    Where a case has a second reader, ``reader2_*`` columns hold the inter-reader metrics
    (reader 2 scored against reader 1): the human ceiling for that case. Masks are
    post-processed (largest component, holes filled) as ``prokd predict`` writes them,
    unless ``postprocess`` is false. The first ``overlay_cases`` cases also keep their
    largest-gland slice (image, truth, probability) for the report's overlay figure.
    Empty reference masks are reported as :class:`~prokd.errors.DataWarning`.
    """
    results = {name: ModelEvaluation() for name in models}
    for index, case in enumerate(
        tqdm(cases, desc="evaluate", unit="case", leave=False, disable=not progress)
    ):
        loaded = load_case(case)
        warn_all(loaded.warnings)
        spacing = tuple(reversed(loaded.image.GetSpacing()))
        truth = sitk.GetArrayFromImage(loaded.mask) > 0
        ceiling = {}
        if len(loaded.masks) > 1:
            reader2 = sitk.GetArrayFromImage(loaded.masks[1]) > 0
            metrics = volume_metrics(reader2, truth, spacing).as_dict()
            ceiling = {f"reader2_{k}": metrics[k] for k in METRIC_NAMES}
        prepared: dict[PreprocessSettings, tuple[np.ndarray, Geometry, float]] = {}
        for name, model in models.items():
            threshold = 0.5
            if isinstance(model, tuple):
                slice_model, settings = model
                if settings not in prepared:
                    start = time.perf_counter()
                    slices, _, grid = preprocess_volume(loaded.image, None, settings)
                    prepared[settings] = (slices, grid, time.perf_counter() - start)
                slices, grid, preprocess_seconds = prepared[settings]
                start = time.perf_counter()
                probabilities = to_original_grid(
                    predict_slices(slice_model, slices, context_slices=settings.context_slices),
                    grid,
                    loaded.image,
                )
                seconds = time.perf_counter() - start + preprocess_seconds
            else:
                start = time.perf_counter()
                probabilities = model.probabilities(loaded.image)
                seconds = time.perf_counter() - start
                threshold = model.threshold
            mask = probabilities >= threshold
            if postprocess:
                mask = postprocess_mask(mask) > 0
            metrics = volume_metrics(mask, truth, spacing)
            if index < overlay_cases:
                k = _largest_gland_slice(truth)
                image = sitk.GetArrayViewFromImage(loaded.image)[k].astype(np.float32)
                results[name].overlays.update(
                    {
                        f"{case.case_id}/image": image,
                        f"{case.case_id}/truth": truth[k],
                        f"{case.case_id}/probability": probabilities[k].astype(np.float32),
                    }
                )
            results[name].rows.append(
                {
                    "model": name,
                    "case": case.case_id,
                    "site": case.site,
                    **metrics.as_dict(),
                    "seconds": seconds,
                    **ceiling,
                }
            )
    return results


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "median": float(np.median(array)),
        "n": int(array.size),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and median of every metric, overall and per site."""
    keys = [
        k
        for k in rows[0]
        if k not in ("model", "case", "site")
        and all(isinstance(r.get(k), int | float) for r in rows)
    ]
    reader_keys = sorted({k for r in rows for k in r if k.startswith("reader2_")})

    def block(subset: list[dict[str, Any]]) -> dict[str, Any]:
        out = {k: _stats([r[k] for r in subset]) for k in keys}
        for k in reader_keys:
            values = [r[k] for r in subset if k in r]
            if values:
                out[k] = _stats(values)
        return out

    sites = sorted({r["site"] for r in rows})
    return {
        "overall": block(rows),
        "sites": {s: block([r for r in rows if r["site"] == s]) for s in sites},
    }


def write_evaluation(
    evaluation: ModelEvaluation, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``metrics.csv`` (one row per case), ``overlays.npz`` (if any) and ``summary.json``.

    ``extra`` fields go into the summary (e.g. the fingerprint of the evaluated checkpoint);
    the summary is written last, so its presence means the evaluation is complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = evaluation.rows
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if evaluation.overlays:
        with atomic_path(out_dir / OVERLAYS) as tmp:
            np.savez_compressed(tmp, **evaluation.overlays)
    summary = {**summarise(rows), **(extra or {})}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Short text table: metrics overall and per site (mean ± std)."""

    def line(name: str, block: dict[str, Any]) -> str:
        cells = [f"{k} {block[k]['mean']:.3f}±{block[k]['std']:.3f}" for k in METRIC_NAMES]
        ceiling = block.get("reader2_dice")
        if ceiling:
            cells.append(f"reader2 dice {ceiling['mean']:.3f}")
        n = block["dice"]["n"]
        return f"{name:<14} n={n:<3} " + "  ".join(cells)

    lines = [line("overall", summary["overall"])]
    lines += [line(site, block) for site, block in summary["sites"].items()]
    return "\n".join(lines)


@dataclass
class DatasetEvaluation:
    """What ``prokd evaluate`` did: model, dataset, summary and output folder."""

    model: str
    kind: str
    layout: str
    cases: int
    summary: dict[str, Any]
    out: Path


def evaluate_model_file(
    model_path: str | Path,
    data_dir: str | Path,
    layout: str | None = None,
    out: str | Path | None = None,
    postprocess: bool = True,
    device: torch.device | str | None = None,
) -> DatasetEvaluation:
    """``prokd evaluate``: any model file, or a volume model (``taps``, a YAML spec,
    ``module:function``), on every case of a labelled dataset.

    Writes ``metrics.csv`` and ``summary.json`` into ``out`` (default
    ``runs/evaluate/<model>-<dataset>``).

    Raises:
        DataError: unreadable model or dataset.
    """
    spec = str(model_path)
    if is_volume_teacher(spec) and not spec.endswith(SLICE_MODEL_SUFFIXES):
        teacher = load_volume_teacher(spec)
        name, kind, model = teacher.name, "volume model", teacher
    else:
        loaded = load_model_file(model_path, device)
        name, kind, model = loaded.name, loaded.kind, (loaded.slice_model, loaded.settings)
    layout, cases = find_cases(data_dir, layout)
    results = evaluate_cases({name: model}, cases, postprocess=postprocess)
    out = Path(out or Path("runs") / "evaluate" / f"{name}-{Path(data_dir).name}")
    summary = write_evaluation(results[name], out)
    return DatasetEvaluation(name, kind, layout, len(cases), summary, out)
