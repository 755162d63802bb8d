"""Experiment report: a markdown table made from ``results.json`` (never typed by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prokd.io_atomic import atomic_path
from prokd.metrics import __doc__ as METRICS_DOC


def _pm(cell: dict[str, float], digits: int = 3) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def results_table(results: dict[str, Any]) -> str:
    """One row per model: params, validation Dice, test metrics, per-site Dice, KD gain."""
    rows = results["rows"]
    sites = sorted({s for r in rows for s in r["site_dice"]})
    header = [
        "model",
        "role",
        "params",
        "val Dice",
        "Dice",
        "IoU",
        "HD95 mm",
        "ASSD mm",
        "s / volume",
        "KD gain",
        *[f"Dice {s}" for s in sites],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        gain = "" if r["kd_gain"] is None else f"{r['kd_gain']:+.3f}"
        val = "" if r["val_dice"] is None else f"{r['val_dice']:.3f}"
        cells = [
            r["model"],
            r["role"],
            f"{r['params']:,}",
            val,
            _pm(r["dice"]),
            _pm(r["iou"]),
            _pm(r["hd95"], 1),
            _pm(r["assd"], 2),
            f"{r['seconds_per_volume']:.2f}",
            gain,
            *[f"{r['site_dice'].get(s, float('nan')):.3f}" for s in sites],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(results: dict[str, Any], path: str | Path) -> Path:
    """Write ``report.md`` for an experiment's results."""
    chosen = results.get("strategy_selected_on_validation")
    text = [
        "# prokd experiment report",
        "",
        f"Test volumes: {results['test_cases']}. Metrics per 3D volume on the original grid, "
        "mean ± std over test volumes. KD gain: test Dice minus that of the student without "
        "KD. 's / volume': prediction time per volume in this process (preprocessing included).",
        "",
        results_table(results),
        "",
        "Limit-trained subsets (training cases each): "
        + ", ".join(f"{k} {v}" for k, v in results["limit_subsets"].items())
        + ".",
        "",
        f"Procedure-2 weighting chosen on validation Dice (not on test): {chosen or 'none'}.",
    ]
    if results.get("strategies_skipped"):
        text.append(
            f"Skipped (no validation cases to weigh by): "
            f"{', '.join(results['strategies_skipped'])}."
        )
    text += ["", "## Metric definitions", "", METRICS_DOC.strip()]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(text) + "\n")
    return path
