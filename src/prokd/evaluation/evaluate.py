"""Evaluation of a model on whole cases: per-volume metrics on the original grid, per site."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from prokd.data.layouts import Case, find_cases
from prokd.data.validate import load_case
from prokd.errors import warn_all
from prokd.evaluation.metrics import METRIC_NAMES, volume_metrics
from prokd.evaluation.stats import describe
from prokd.inference.postprocess import probability_mask
from prokd.inference.volume_models import VolumeModel, load_volume_model
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
    models: Mapping[str, VolumeModel],
    cases: list[Case],
    progress: bool = True,
    postprocess: bool = True,
    overlay_cases: int = 0,
) -> dict[str, ModelEvaluation]:
    """Per model, one row per case: site, metrics against the first reader, inference time.

    Each case is read once and segmented by every model
    (:class:`~prokd.inference.volume_models.VolumeModel`: preprocessing, prediction and the
    mapping back to the case's grid; ``seconds`` is all of it, the model's
    ``last_seconds``), thresholded at the model's own ``threshold``. Where a case has a
    second reader, ``reader2_*`` columns hold the inter-reader metrics (reader 2 scored
    against reader 1): the human ceiling for that case. Masks are post-processed (largest
    component, holes filled) as ``prokd predict`` writes them, unless ``postprocess`` is
    false. The first ``overlay_cases`` cases also keep their largest-gland slice (image,
    truth, probability) for the report's overlay figure. Empty reference masks are reported
    as :class:`~prokd.errors.DataWarning`.
    """
    results = {name: ModelEvaluation() for name in models}
    for index, case in enumerate(
        tqdm(cases, desc="evaluate", unit="case", leave=False, disable=not progress)
    ):
        loaded = load_case(case)
        warn_all(loaded.warnings)
        spacing = tuple(reversed(loaded.image.GetSpacing()))
        truth = sitk.GetArrayFromImage(loaded.mask) > 0
        ceiling = _reader_ceiling(loaded.masks, truth, spacing)
        for name, model in models.items():
            probabilities = model.probabilities(loaded.image)
            seconds = model.last_seconds
            mask = probability_mask(probabilities, model.threshold, postprocess) > 0
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
            row = {"model": name, "case": case.case_id, "site": case.site, "patient": case.patient}
            results[name].rows.append({**row, **metrics.as_dict(), "seconds": seconds, **ceiling})
    return results


def _reader_ceiling(
    masks: list[sitk.Image], truth: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, float]:
    """``reader2_*``: the second reader's mask scored against the first (none without)."""
    if len(masks) < 2:
        return {}
    reader2 = sitk.GetArrayFromImage(masks[1]) > 0
    metrics = volume_metrics(reader2, truth, spacing).as_dict()
    return {f"reader2_{k}": metrics[k] for k in METRIC_NAMES}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and median of every metric, overall and per site."""
    keys = [
        k
        for k in rows[0]
        if k not in ("model", "case", "site")
        and all(isinstance(r.get(k), int | float) for r in rows)
    ]
    reader_keys = sorted({k for r in rows for k in r if k.startswith("reader2_")})

    def block(subset: list[dict[str, Any]]) -> dict[str, Any]:
        out = {k: describe([r[k] for r in subset]) for k in keys}
        for k in reader_keys:
            values = [r[k] for r in subset if k in r]
            if values:
                out[k] = describe(values)
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
    model = load_volume_model(model_path, device)
    name, kind = model.name, model.kind
    layout, cases = find_cases(data_dir, layout)
    results = evaluate_cases({name: model}, cases, postprocess=postprocess)
    out = Path(out or Path("runs") / "evaluate" / f"{name}-{Path(data_dir).name}")
    summary = write_evaluation(results[name], out)
    return DatasetEvaluation(name, kind, layout, len(cases), summary, out)
