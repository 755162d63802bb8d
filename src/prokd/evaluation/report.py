"""Reports of a run or experiment folder: ``report.md`` and a self-contained ``report.html``.

Everything shown is made from the files the runs wrote (``results.json``, per-case
``metrics.csv``, ``overlays.npz``, ``log.csv``), never typed by hand. The HTML embeds its figures,
so it opens anywhere without a server.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from prokd.errors import DataError, error_summary, warn_all
from prokd.evaluation.evaluate import OVERLAYS
from prokd.evaluation.markdown import Block, markdown_table, plus_minus, render_markdown
from prokd.evaluation.metrics import __doc__ as METRICS_DOC
from prokd.evaluation.plots import dice_boxplot, overlay_figure, read_log, training_curves
from prokd.evaluation.roles import LIMIT_TEACHER
from prokd.io_atomic import atomic_path


def results_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table: one row per model."""
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
    body = []
    for r in rows:
        body.append(
            [
                r["model"],
                r["role"],
                "" if r["params"] is None else f"{r['params']:,}",
                "" if r["val_dice"] is None else f"{r['val_dice']:.3f}",
                plus_minus(r["dice"]),
                plus_minus(r["iou"]),
                plus_minus(r["hd95"], 1),
                plus_minus(r["assd"], 2),
                f"{r['seconds_per_volume']:.2f}",
                "" if r["kd_gain"] is None else f"{r['kd_gain']:+.3f}",
                *[f"{r['site_dice'].get(s, float('nan')):.3f}" for s in sites],
            ]
        )
    return header, body


def comparison_rows(comparisons: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of paired per-volume comparisons (see ``evaluation.stats``)."""
    header = ["comparison", "a", "b", "volumes", "mean a - b", "std", "95% CI", "a wins", "p"]
    body = [
        [
            label,
            c["a"],
            c["b"],
            str(c["n"]),
            f"{c['mean']:+.3f}",
            f"{c['std']:.3f}",
            f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]",
            f"{c['wins']}/{c['n']}",
            f"{c['wilcoxon_p']:.3g}",
        ]
        for label, c in comparisons.items()
    ]
    return header, body


def results_table(results: dict[str, Any]) -> str:
    """The results table in markdown."""
    return markdown_table(*results_rows(results))


def console_summary(results: dict[str, Any]) -> str:
    """What ``prokd experiment`` prints: the results table, then the paired comparisons of
    its one seed."""
    return "\n".join(
        [
            results_table(results),
            f"paired over the {results['test_cases']} test volumes of this one seed "
            "(t 95% CI, Wilcoxon p; seeds: prokd study):",
            markdown_table(*comparison_rows(results["comparisons"])),
        ]
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            path, f"unreadable run file ({error_summary(err)}); re-run the command that wrote it"
        ) from None


def _read_metrics(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as err:
        raise DataError(path, f"unreadable evaluation ({error_summary(err)})") from None


def _overlays(run_dir: Path, results: dict[str, Any], path: Path) -> tuple[Path | None, str]:
    """Overlay figure from the slices evaluation stored; or ``None`` and why it is missing.

    Shows, for the cases whose slices the evaluation kept: truth, the well-trained teacher,
    the student chosen on validation (procedure 1 when no strategy was chosen) and the
    limit-trained teachers' disagreement (std of their probabilities).
    """
    evaluation = run_dir / "evaluation"
    student = results.get("strategy_selected_on_validation") or "student-kd-p1"
    names = ["teacher", student] + sorted(
        r["model"] for r in results["rows"] if r["kind"] == LIMIT_TEACHER
    )
    stored = {}
    for name in names:
        file = evaluation / name / OVERLAYS
        if not file.exists():
            return None, f"{file} is missing (re-run the evaluation to draw overlays)"
        with np.load(file) as entry:
            stored[name] = {key: entry[key] for key in entry.files}
    case_ids = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in stored["teacher"]))
    figures = []
    for case_id in case_ids:
        limit = [stored[n][f"{case_id}/probability"] for n in names[2:]]
        first = stored["teacher"]
        figures.append(
            {
                "title": case_id,
                "image": first[f"{case_id}/image"],
                "truth": first[f"{case_id}/truth"],
                "teacher": first[f"{case_id}/probability"],
                "student": stored[student][f"{case_id}/probability"],
                "disagreement": np.std(limit, axis=0)
                if limit
                else np.zeros_like(first[f"{case_id}/probability"]),
            }
        )
    if not figures:
        return None, "the evaluation kept no overlay slices"
    return overlay_figure(figures, path), ""


def _figure_blocks(run_dir: Path, results: dict[str, Any], figures: Path) -> list[Block]:
    """The experiment's figures: test Dice per volume, training curves, overlays."""
    blocks: list[Block] = []
    metrics = {
        r["model"]: _read_metrics(run_dir / "evaluation" / r["model"] / "metrics.csv")
        for r in results["rows"]
    }
    blocks.append(
        (
            "img",
            dice_boxplot(metrics, figures / "dice_boxplot.png"),
            "Test Dice per volume, by model and site.",
        )
    )
    logs = {p.parent.name: read_log(p) for p in sorted((run_dir / "models").glob("*/log.csv"))}
    if logs:
        blocks.append(
            (
                "img",
                training_curves(logs, figures / "training_curves.png"),
                "Training loss and validation Dice per epoch.",
            )
        )
    overlay, missing = _overlays(run_dir, results, figures / "overlays.png")
    if overlay is None:
        blocks.append(("p", f"Overlay figure not drawn: {missing}."))
        warn_all([f"{run_dir}: overlay figure not drawn: {missing}"])
    else:
        blocks.append(
            (
                "img",
                overlay,
                "Largest-gland slice of the first test cases: truth "
                "(green), teacher and chosen student (red), and the "
                "limit-trained teachers' disagreement (std of their "
                "probabilities).",
            )
        )
    return blocks


def experiment_blocks(run_dir: Path, figures: Path) -> list[Block]:
    """Report content of an experiment folder."""
    results = _read_json(run_dir / "results.json")
    chosen = results.get("strategy_selected_on_validation")
    blocks: list[Block] = [
        ("h1", f"prokd experiment report: {run_dir.name}"),
        (
            "p",
            f"Test volumes: {results['test_cases']}. Metrics per 3D volume on the original "
            "grid, mean ± std over test volumes. KD gain: test Dice minus that of the "
            "student without KD. 's / volume': prediction time per volume in this process "
            "(preprocessing included).",
        ),
        ("table", *results_rows(results)),
        (
            "p",
            "Limit-trained subsets (training cases each): "
            + ", ".join(f"{k} {v}" for k, v in results["limit_subsets"].items())
            + ".",
        ),
        (
            "p",
            f"Procedure-2 weighting chosen on validation Dice (not on test): {chosen or 'none'}.",
        ),
    ]
    if "teacher_gap" in results:
        blocks += [
            (
                "p",
                f"Teacher minus no-KD student, test Dice: {results['teacher_gap']:+.3f} "
                "(the most KD could give). Paired comparisons over the test volumes of this "
                "one seed: Dice difference a - b, t 95% CI of its mean, Wilcoxon signed-rank "
                "p ('adaptive': the validation-chosen procedure-2 student). They say how the "
                "models differ on these volumes in this run, not how much another training "
                "seed would move them: `prokd study` runs seeds.",
            ),
            ("table", *comparison_rows(results["comparisons"])),
        ]
    if results.get("strategies_skipped"):
        blocks.append(
            (
                "p",
                "Skipped (no validation cases to weigh by): "
                + ", ".join(results["strategies_skipped"])
                + ".",
            )
        )
    blocks += _figure_blocks(run_dir, results, figures)
    blocks += [("h2", "Metric definitions"), ("pre", METRICS_DOC.strip())]
    return blocks


def run_blocks(run_dir: Path, figures: Path) -> list[Block]:
    """Report content of a single training run folder."""
    blocks: list[Block] = [("h1", f"prokd training report: {run_dir.name}")]
    summary = run_dir / "train_summary.json"
    if summary.exists():
        data = _read_json(summary)
        rows = [[k, str(v)] for k, v in data.items() if not isinstance(v, list)]
        blocks.append(("table", ["field", "value"], rows))
    logs = {run_dir.name: read_log(run_dir / "log.csv")}
    blocks.append(
        (
            "img",
            training_curves(logs, figures / "training_curves.png"),
            "Training loss and validation Dice per epoch.",
        )
    )
    return blocks


def _render_html(blocks: list[Block], title: str) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="">'
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
        "pre{white-space:pre-wrap;background:#f7f7f7;padding:1em}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report_files/*.png`` into ``run_dir``.

    Raises:
        DataError: the folder is neither an experiment (``results.json``) nor a training run
            (``log.csv``).
    """
    run_dir = Path(run_dir)
    figures = run_dir / "report_files"
    figures.mkdir(parents=True, exist_ok=True)
    if (run_dir / "results.json").exists():
        blocks = experiment_blocks(run_dir, figures)
    elif (run_dir / "log.csv").exists():
        blocks = run_blocks(run_dir, figures)
    else:
        raise DataError(run_dir, "no results.json or log.csv: not a prokd run or experiment")
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text(render_markdown(blocks, run_dir))
    with atomic_path(html_path) as tmp:
        tmp.write_text(_render_html(blocks, blocks[0][1]))
    return md_path, html_path
