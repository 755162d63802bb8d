"""Figures of the report (matplotlib, no display needed), each saved as a PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from prokd.io_atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def dice_boxplot(metrics: dict[str, list[dict[str, str]]], path: Path) -> Path:
    """Box plot of per-volume test Dice: one box per model and site."""
    models = list(metrics)
    sites = sorted({row["site"] for rows in metrics.values() for row in rows})
    fig, ax = plt.subplots(figsize=(min(16.0, 1.2 * len(models) + 2.0), 4.5))
    width = 0.8 / max(len(sites), 1)
    colours = plt.cm.tab10(np.arange(len(sites)) % 10)
    for s, site in enumerate(sites):
        data = [[float(r["dice"]) for r in metrics[m] if r["site"] == site] for m in models]
        positions = np.arange(len(models)) + (s - (len(sites) - 1) / 2) * width
        boxes = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            showfliers=True,
            manage_ticks=False,
        )
        for patch in boxes["boxes"]:
            patch.set_facecolor(colours[s])
            patch.set_alpha(0.7)
        ax.plot([], [], "s", color=colours[s], label=site)
    ax.set_xticks(np.arange(len(models)))
    ax.set_xticklabels(models, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("Dice per test volume")
    lowest = min(float(r["dice"]) for rows in metrics.values() for r in rows)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(sites), 6), loc="lower left")
    return _save(fig, path)


def read_log(path: Path) -> list[dict[str, float]]:
    """Rows of a training ``log.csv`` as floats (blank cells dropped)."""
    with open(path, newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def training_curves(logs: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """Training loss and validation Dice per epoch of every run."""
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in logs.items():
        epochs = [r["epoch"] for r in rows]
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=name)
        if all("val_dice" in r for r in rows):
            dice_ax.plot(epochs, [r["val_dice"] for r in rows], label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss (all terms)", title="training loss")
    dice_ax.set(xlabel="epoch", ylabel="validation Dice per volume", title="validation Dice")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    dice_ax.legend(fontsize=7)
    return _save(fig, path)


def overlay_figure(cases: list[dict[str, np.ndarray | str]], path: Path) -> Path:
    """Per case: image, truth, teacher and student predictions, teacher disagreement.

    Each case dict holds 2D arrays ``image``, ``truth``, ``teacher``, ``student``,
    ``disagreement`` and a ``title``.
    """
    columns = ("image", "truth", "teacher", "student", "disagreement")
    fig, axes = plt.subplots(
        len(cases), len(columns), figsize=(2.6 * len(columns), 2.7 * len(cases)), squeeze=False
    )
    for row, case in zip(axes, cases, strict=True):
        for ax, column in zip(row, columns, strict=True):
            ax.imshow(case["image"], cmap="gray")
            if column in ("truth", "teacher", "student"):
                ax.contour(
                    case[column],
                    levels=[0.5],
                    colors="lime" if column == "truth" else "red",
                    linewidths=0.9,
                )
            elif column == "disagreement":
                shown = ax.imshow(case["disagreement"], cmap="magma", alpha=0.75, vmin=0)
                fig.colorbar(shown, ax=ax, fraction=0.046)
            ax.set_title(f"{case['title']}: {column}" if column == "image" else column, fontsize=8)
            ax.axis("off")
    return _save(fig, path)


def regime_plot(summary: dict, path: Path) -> Path:
    """Bars of mean test Dice per regime for the no-KD student, procedure 1, the chosen
    procedure-2 student and the teacher, with the std over seeds as error bars."""
    regimes = summary["regimes"]
    series = {
        "no-KD student": lambda r: r["dice"].get("student-nokd"),
        "procedure 1": lambda r: r["dice"].get("student-kd-p1"),
        "chosen procedure 2": lambda r: r["chosen_p2_dice"],
        "teacher": lambda r: r["dice"].get("teacher"),
    }
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(regimes) + 2), 4.0))
    width = 0.8 / len(series)
    for s, (label, pick) in enumerate(series.items()):
        cells = [pick(r) or {"mean": np.nan, "std": 0.0} for r in regimes.values()]
        x = np.arange(len(regimes)) + (s - (len(series) - 1) / 2) * width
        ax.bar(
            x, [c["mean"] for c in cells], width * 0.9, yerr=[c["std"] for c in cells], label=label
        )
    ax.set_xticks(np.arange(len(regimes)), list(regimes), rotation=20, ha="right")
    means = [c["mean"] for r in regimes.values() for c in r["dice"].values()]
    ax.set_ylim(max(0.0, min(means) - 0.1), min(1.0, max(means) + 0.05))
    ax.set_ylabel("test Dice (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pareto_plot(points: list[dict], path: Path) -> Path:
    """Student Dice against onnxruntime ms per volume, without and with KD (arrows)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for p in points:
        ax.annotate("", (p["ms"], p["kd"]), (p["ms"], p["nokd"]), arrowprops={"arrowstyle": "->"})
        ax.annotate(f"{p['regime']}\n{p['student']}", (p["ms"], p["kd"]), fontsize=7)
    ax.scatter([p["ms"] for p in points], [p["nokd"] for p in points], label="no KD")
    ax.scatter([p["ms"] for p in points], [p["kd"] for p in points], label="KD (chosen p2)")
    ax.set_xscale("log")
    ax.set_xlabel("onnxruntime ms per volume")
    ax.set_ylabel("test Dice (mean over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, path)
