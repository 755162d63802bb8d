"""Leave one source out over every real source, with simulated protocols, TAPS beside.

Superseded by the ``prokd study`` files ``configs/studies/loso-bank.yaml`` (folds declared
in the study file, fold localisers, tested in ``tests/training/test_folds.py``) and
``loso-bank-bundled-localiser.yaml``; this script stays to regenerate the results it
committed (``benchmarks/results/loso_protocols*.md``, re-read per patient by
``loso_patients.py``).

Sources: Prostate158 and MSD Task05 (expert labels), PROSTATEx and PROSTATE-3T (AI-made
reference masks, ``data/ai-labelled`` as ``make prostate-localiser`` links it). Per fold
the prostate-t2 recipe (``configs/prostate-t2.yaml``, the grid placed by the localiser,
``train.protocols`` on) trains without any volume of the held-out source, labelled or not;
its validation split (from the other sources) picks the epoch; nothing of the held-out
source chooses anything. The fold's student and TAPS then segment the held-out volumes as
acquired and as ``prokd simulate`` makes them (endorectal coil, large field of view,
sagittal and coronal series). The student runs through ``prokd predict``'s code
(localiser, mirrored pass, QC verdict); TAPS through its adapter, thresholded and
post-processed the same way.

The QC verdict is calibrated on validation folds: each fold's student also segments its
own validation volumes (from the other sources, as acquired and under every simulated
protocol), and the strictness level its validation volumes choose
(:func:`prokd.evaluation.qc_calibration.choose_level`) judges its test volumes. The level
that all folds' validation volumes choose together is the one prokd ships
(``prokd.inference.reliability.CALIBRATED_LEVEL``).

The localiser is nested too (``--localiser fold``, the default): stage ``localisers`` trains
one per fold on the bundled localiser's data (``configs/prostate-localiser.yaml``) without
any volume of the held-out source, and the fold's student is placed by it in training and
at test (``preprocess.localiser``). With ``--localiser bundled`` every fold uses the
bundled localiser, which has seen every source (the run of 2026-12-03 morning,
``benchmarks/results/loso_protocols-bundled-localiser.md``). The summary says which.

Stages, each resumable (a stage skips what it finds done), so that TAPS and training run
side by side on one thread each:

    .venv/bin/python benchmarks/loso_protocols.py simulate
    .venv/bin/python benchmarks/loso_protocols.py localisers --folds msd prostatex &
    .venv/bin/python benchmarks/loso_protocols.py localisers --folds prostate158 prostate3t
    .venv/bin/python benchmarks/loso_protocols.py targets --shard 0/2 &  # TAPS, training
    .venv/bin/python benchmarks/loso_protocols.py targets --shard 1/2    # volumes
    .venv/bin/python benchmarks/loso_protocols.py taps --threads 1 &
    .venv/bin/python benchmarks/loso_protocols.py train --threads 1 [--localiser bundled]
    .venv/bin/python benchmarks/loso_protocols.py validate --threads 1
    .venv/bin/python benchmarks/loso_protocols.py train --variant no-protocols [...]  # levers
    .venv/bin/python benchmarks/loso_protocols.py train --variant no-taps [...]
    .venv/bin/python benchmarks/loso_protocols.py train --variant with-hipmri [...]
    .venv/bin/python benchmarks/loso_protocols.py summarise

Each lever of the recipe is measured on its own with ``train --variant``: the fold
students retrained without it (``no-protocols``: no simulated coil or resliced-series
training slices; ``no-taps``: no TAPS targets, so the labelled volumes alone), or with
one lever added (``with-hipmri``: the synthetic large-field pelvis images of ``prokd
synth-pelvis``, their exact masks standing in for TAPS), segment the same test volumes,
and the summary gives the Dice with the lever minus without, paired by volume.

Writes ``benchmarks/results/loso_protocols.json`` and ``.md``; rows per volume in
``runs/loso/rows-<model>.jsonl`` (``rows-validation.jsonl``: the folds' validation
volumes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import yaml

from prokd.data.io import volume_stem
from prokd.data.layouts import Case, find_cases
from prokd.data.simulate import PROTOCOLS, write_simulated
from prokd.data.validate import load_case
from prokd.distill.volume_teachers import native_probabilities
from prokd.evaluation.bench import cpu_model
from prokd.evaluation.metrics import volume_metrics
from prokd.evaluation.qc_calibration import PRIOR_LEVEL, choose_level, qc_rates, total_rates
from prokd.evaluation.stats import paired_comparison
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import segment_image
from prokd.inference.postprocess import probability_mask
from prokd.inference.reliability import LEVELS
from prokd.inference.segment import with_crop_centre
from prokd.inference.volume_models import load_volume_model
from prokd.io_atomic import write_json_and_markdown
from prokd.training.config import load_config
from prokd.training.runs import default_cache_dir, prepare_data

SHARED = Path("../shared/data")
RUNS = Path("runs/loso")
SIM = Path("data/sim")
SOURCES = {  # source -> (dataset root, site filter)
    "prostate158": (SHARED / "real/prostate158", None),
    "msd": (SHARED / "real/msd-task05", None),
    "prostatex": (Path("data/ai-labelled"), "prostatex"),
    "prostate3t": (Path("data/ai-labelled"), "prostate3t"),
}
UNLABELLED = {  # unlabelled training folders, by the source they belong to
    "prostatex": SHARED / "unlabeled/prostatex",
    "prostate3t": SHARED / "unlabeled/prostate3t",
    "slicetracker": SHARED / "unlabeled/slicetracker",
}
# Simulated volumes per source and protocol (the first ones): TAPS takes 1-2 minutes a
# volume on one thread, several on a large field of view, and the study runs on 2 cores.
SIMULATED_PER_SOURCE = {"coil": 2, "sagittal": 2, "coronal": 2, "large-fov": 1}


def test_cases(source: str) -> list[tuple[str, Case]]:
    """(protocol, case) pairs of a source: as acquired, then each simulated protocol."""
    root, site = SOURCES[source]
    _, cases = find_cases(root)
    pairs = [("acquired", c) for c in cases if site is None or c.site == site]
    for protocol in PROTOCOLS:
        _, simulated = find_cases(SIM / protocol / root.name)
        chosen = [c for c in simulated if site is None or c.site.startswith(f"{site}-")]
        chosen = chosen[: SIMULATED_PER_SOURCE[protocol]]
        pairs += [(protocol, c) for c in chosen]
    return pairs


def validation_cases(source: str) -> list[tuple[str, Case]]:
    """(protocol, case) pairs of a fold's validation volumes (its ``split.json``): as
    acquired, then under every simulated protocol."""
    split = json.loads((RUNS / source / "train" / "split.json").read_text())
    found: dict[Path, list[Case]] = {}

    def cases_in(root: Path) -> list[Case]:
        if root not in found:
            found[root] = find_cases(root)[1]
        return found[root]

    pairs = []
    for key in split["val"]:
        site, case_id = key.split("/", 1)
        root, _ = SOURCES[site]
        pairs.append(("acquired", next(c for c in cases_in(root) if c.case_id == case_id)))
        stem = case_id.replace("/", "_")
        for protocol in PROTOCOLS:
            simulated = cases_in(SIM / protocol / root.name)
            pairs += [(protocol, c) for c in simulated if volume_stem(c.image) == stem]
    return pairs


def _done(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    return {(r["fold"], r["case"]) for r in map(json.loads, path.read_text().splitlines())}


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def _scores(mask: np.ndarray, case: Case) -> dict[str, float]:
    loaded = load_case(case)
    truth = sitk.GetArrayFromImage(loaded.mask) > 0
    spacing = tuple(reversed(loaded.image.GetSpacing()))
    metrics = volume_metrics(mask > 0, truth, spacing).as_dict()
    return {k: metrics[k] for k in ("dice", "hd95", "pred_ml", "true_ml")}


def stage_simulate(_: argparse.Namespace) -> None:
    roots = {root for root, _ in SOURCES.values()}
    for protocol in PROTOCOLS:
        for root in sorted(roots):
            out = SIM / protocol / root.name
            if not out.exists():
                write_simulated(root, out, protocol, seed=0, show_progress=True)


def stage_targets(args: argparse.Namespace) -> None:
    """TAPS on every volume a fold trains on (the cache its distillation reads), one
    ``--shard I/N`` of them per process."""
    torch.set_num_threads(args.threads)
    index, count = (int(part) for part in args.shard.split("/"))
    data = prepare_data(load_config("configs/prostate-t2.yaml"))
    taps = load_volume_model("taps")
    volumes = sorted(data.cases + data.unlabelled, key=lambda c: c.case_id)
    for case in volumes[index::count]:
        start = time.perf_counter()
        native_probabilities(taps, case, default_cache_dir())
        print(f"targets {case.case_id} {time.perf_counter() - start:.0f}s", flush=True)


def stage_taps(args: argparse.Namespace) -> None:
    """TAPS's test rows: each fold's held-out volumes (``--folds``: those folds only)."""
    torch.set_num_threads(args.threads)
    taps = load_volume_model("taps")
    rows = RUNS / "rows-taps.jsonl"
    done = _done(rows)
    for source in args.folds or list(SOURCES):
        for protocol, case in test_cases(source):
            if (source, case.case_id) in done:
                continue
            start = time.perf_counter()
            probabilities, _ = native_probabilities(taps, case, default_cache_dir())
            mask = probability_mask(probabilities, taps.threshold)
            seconds = time.perf_counter() - start  # a cached volume reads in well under 1 s
            row = {"fold": source, "protocol": protocol, "case": case.case_id, "seconds": seconds}
            row["cached"] = seconds < 1.0  # computed by an earlier run: its time is not TAPS's
            _append(rows, {**row, **_scores(mask, case)})
            print(f"taps {source} {protocol} {case.case_id} {row['seconds']:.0f}s", flush=True)


def fold_config(source: str, threads: int, localiser: str) -> dict[str, Any]:
    """The prostate-t2 recipe without any volume of ``source``, its grids placed by the
    bundled localiser or (``localiser="fold"``) by the fold's own."""
    config = yaml.safe_load(Path("configs/prostate-t2.yaml").read_text())
    labelled = [s for s in config["data"]["sources"] if s.get("labelled", True)]
    sources = [s for s in labelled if s.get("site") != source]
    sources += [
        {"root": str(root), "labelled": False}
        for name, root in UNLABELLED.items()
        if name != source
    ]
    if source != "msd":
        sources.append(next(s for s in config["data"]["sources"] if s.get("channel") == 0))
    config["data"]["sources"] = sources
    config["preprocess"] = {**config.get("preprocess", {}), "crop_centre": "gland"}
    if localiser == "fold":
        config["preprocess"]["localiser"] = str(fold_localiser(source).resolve())
    config["train"].update({"protocols": True, "threads": threads})
    return config


def _without_protocols(config: dict[str, Any]) -> None:
    config["train"]["protocols"] = False


def _without_taps(config: dict[str, Any]) -> None:
    config["data"]["sources"] = [s for s in config["data"]["sources"] if s.get("labelled", True)]
    config.pop("distill", None)
    config["train"]["pseudo_labels"] = False


def _with_hipmri(config: dict[str, Any]) -> None:
    config["data"]["sources"].append(
        {"root": "data/hipmri-synth", "layout": "six-site", "mask_as_teacher": True}
    )


# Levers of the recipe, each taken out on its own (the full recipe: "full"): the simulated
# endorectal coil and resliced-series training slices; TAPS's targets on every real volume
# (without: the labelled volumes alone, no distillation, no unlabelled volume). And one
# lever the recipe lacks, added on its own: the 37 synthetic large-field pelvis images made
# from the HipMRI label maps (``make prostate-localiser`` writes them), their exact masks
# standing in for TAPS.
VARIANTS = {
    "full": None,
    "no-protocols": _without_protocols,
    "no-taps": _without_taps,
    "with-hipmri": _with_hipmri,
}
ADDED_LEVERS = ("with-hipmri",)  # the variant has the lever, the full recipe does not


def variant_name(stem: str, variant: str) -> str:
    """``stem`` for the full recipe, ``stem-<variant>`` for a lever taken out."""
    return stem if variant == "full" else f"{stem}-{variant}"


def fold_localiser(source: str) -> Path:
    """Where the fold's own localiser is exported."""
    return RUNS / source / "localiser.onnx"


def localiser_config(source: str, threads: int) -> dict[str, Any]:
    """The bundled localiser's recipe without any volume of ``source``: the AI-referenced
    sources are linked one by one, so that one of them can be left out."""
    config = yaml.safe_load(Path("configs/prostate-localiser.yaml").read_text())
    sources = [
        s
        for s in config["data"]["sources"]
        if s.get("site") != source and Path(s["root"]) != Path("data/ai-labelled")
    ]
    linked = RUNS / source / "localiser-data"  # a six-site layout: one folder per source
    for name in ("prostatex", "prostate3t"):
        if name != source:
            (linked / name).mkdir(parents=True, exist_ok=True)
            for path in sorted((Path("data/ai-labelled") / name).iterdir()):
                target = linked / name / path.name
                if not target.exists():
                    target.symlink_to(path.resolve())
    config["data"]["sources"] = [*sources, {"root": str(linked), "layout": "six-site"}]
    config["train"].update({"threads": threads})
    return config


def _train_and_export(config: dict[str, Any], run: Path, model_file: Path) -> None:
    """``prokd train`` (resumed when begun) then ``prokd export`` to ONNX."""
    run.mkdir(parents=True, exist_ok=True)
    config_file = run.parent / f"{run.name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    resume = ["--resume"] if (run / "last.pt").exists() else []
    prokd = [sys.executable, "-m", "prokd.cli"]
    subprocess.run([*prokd, "train", str(config_file), "--out", str(run), *resume], check=True)
    export = [*prokd, "export", str(run), "--format", "onnx", "--out", str(model_file)]
    subprocess.run(export, check=True)


def stage_localisers(args: argparse.Namespace) -> None:
    """Each fold's localiser, trained without the held-out source."""
    for source in args.folds or list(SOURCES):
        if not fold_localiser(source).exists():
            config = localiser_config(source, args.threads)
            _train_and_export(config, RUNS / source / "localiser-train", fold_localiser(source))


def stage_train(args: argparse.Namespace) -> None:
    """Each fold's student (the full recipe, or ``--variant``: one lever taken out or added), then
    its test rows."""
    rows = RUNS / f"{variant_name('rows-student', args.variant)}.jsonl"
    for source in args.folds or list(SOURCES):
        model_file = RUNS / source / f"{variant_name('student', args.variant)}.onnx"
        if not model_file.exists():
            if args.localiser == "fold" and not fold_localiser(source).exists():
                sys.exit(f"{fold_localiser(source)}: run the localisers stage first")
            config = fold_config(source, args.threads, args.localiser)
            if VARIANTS[args.variant] is not None:
                VARIANTS[args.variant](config)
            run = RUNS / source / variant_name("train", args.variant)
            _train_and_export(config, run, model_file)
        torch.set_num_threads(args.threads)
        _segment_all(source, test_cases(source), rows, model_file)


def _segment_all(
    source: str, pairs: list[tuple[str, Case]], rows: Path, model_file: Path | None = None
) -> None:
    """The fold student's masks, QC signals and scores for ``pairs``, appended to ``rows``
    (``model_file``: default the fold's full-recipe student)."""
    model_file = model_file or RUNS / source / "student.onnx"
    model = with_crop_centre(load_model_file(model_file), "gland")
    done = _done(rows)
    for protocol, case in pairs:
        if (source, case.case_id) in done:
            continue
        result = segment_image(model, load_case(case).image)
        row = {
            "fold": source,
            "protocol": protocol,
            "case": case.case_id,
            "seconds": result.seconds,
            "reliable": result.qc.reliable,
            "reasons": result.qc.reasons,
            "signals": result.qc.signals,
        }
        _append(rows, {**row, **_scores(result.mask, case)})


def stage_validate(args: argparse.Namespace) -> None:
    """Each fold's student on its own validation volumes, for the QC calibration."""
    torch.set_num_threads(args.threads)
    for source in args.folds or list(SOURCES):
        _segment_all(source, validation_cases(source), RUNS / "rows-validation.jsonl")


def _read(model: str) -> list[dict[str, Any]]:
    path = RUNS / f"rows-{model}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _judged(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    return [(r["signals"], r["dice"]) for r in rows]


def qc_calibration(
    student: list[dict[str, Any]], validation: list[dict[str, Any]]
) -> dict[str, Any]:
    """QC rates on the test volumes at the level set beforehand and at each fold's level
    chosen on its own validation volumes (nested), and the level all validation volumes
    choose together (the shipped one), on them and on the test volumes."""
    folds = sorted({r["fold"] for r in student})
    tests = {f: [r for r in student if r["fold"] == f] for f in folds}
    levels = {f: choose_level(_judged([r for r in validation if r["fold"] == f])) for f in folds}
    nested = total_rates([qc_rates(_judged(tests[f]), LEVELS[levels[f]]) for f in folds])
    shipped = choose_level(_judged(validation))
    return {
        "prior_level": PRIOR_LEVEL,
        "prior": qc_rates(_judged(student), LEVELS[PRIOR_LEVEL]).as_dict(),
        "fold_levels": levels,
        "nested": nested.as_dict(),
        "validation_volumes": {f: sum(r["fold"] == f for r in validation) for f in folds},
        "shipped_level": shipped,
        "shipped_on_validation": qc_rates(_judged(validation), LEVELS[shipped]).as_dict(),
        "shipped_on_test": qc_rates(_judged(student), LEVELS[shipped]).as_dict(),
    }


def _rates_text(rates: dict[str, Any]) -> str:
    return (
        f"{rates['caught']} of the {rates['failed']} with Dice < 0.5 marked unreliable "
        f"(catch rate), {rates['false_alarms']} of the {rates['good']} with Dice >= 0.8 "
        f"(false alarms), {rates['middle_marked']} of the {rates['middle']} in between"
    )


def qc_lines(qc: dict[str, Any]) -> list[str]:
    """The QC paragraph of the markdown table."""
    levels = ", ".join(f"{fold} {level}" for fold, level in qc["fold_levels"].items())
    counts = ", ".join(f"{fold} {n}" for fold, n in qc["validation_volumes"].items())
    return [
        f"QC over the {qc['prior']['volumes']} test volumes of the student, strictness level "
        f"{qc['prior_level']} (set beforehand): {_rates_text(qc['prior'])}.",
        "",
        f"Calibrated on validation folds (nested): each fold's level chosen on its own "
        f"validation volumes ({counts}; levels {levels}): {_rates_text(qc['nested'])}.",
        "",
        f"Shipped level: {qc['shipped_level']}, chosen on all validation volumes together, "
        f"where it gives {_rates_text(qc['shipped_on_validation'])}; on the test volumes: "
        f"{_rates_text(qc['shipped_on_test'])}. Levels run from 0 (lenient) to 4 (strict), "
        "`prokd.inference.reliability.LEVELS`.",
    ]


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return row["fold"], row["case"]


def _cell(source: str, protocol: str, pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    s_dice = float(np.mean([s["dice"] for s, _ in pairs]))
    t_dice = float(np.mean([t["dice"] for _, t in pairs]))
    return {
        "source": source,
        "protocol": protocol,
        "volumes": len(pairs),
        "student_dice": s_dice,
        "taps_dice": t_dice,
        "gap": s_dice - t_dice,
        "target_met": s_dice >= t_dice - 0.03,
    }


def student_vs_taps(
    student: list[dict[str, Any]], taps: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (source, protocol) cells of the student's and TAPS's mean Dice on the same
    volumes, and per protocol over every source (``source``: ``all``)."""
    by_case = {(r["fold"], r["case"]): r for r in taps}
    pairs = [
        (r, by_case[(r["fold"], r["case"])]) for r in student if (r["fold"], r["case"]) in by_case
    ]
    cells, totals = [], []
    for protocol in ("acquired", *PROTOCOLS):
        chosen = [(s, t) for s, t in pairs if s["protocol"] == protocol]
        for source in SOURCES:
            in_source = [(s, t) for s, t in chosen if s["fold"] == source]
            if in_source:
                cells.append(_cell(source, protocol, in_source))
        if chosen:
            totals.append(_cell("all", protocol, chosen))
    if pairs:
        totals.append(_cell("all", "all", pairs))
    order = {source: i for i, source in enumerate(SOURCES)}
    return sorted(cells, key=lambda c: order[c["source"]]), totals


def lever_effects(
    with_lever: list[dict[str, Any]], without: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What one lever adds: per protocol (and over all), the Dice of the recipe with the
    lever minus that of the recipe without it, paired by volume."""
    by_case = {(r["fold"], r["case"]): r["dice"] for r in without}
    pairs = [
        (r, by_case[(r["fold"], r["case"])])
        for r in with_lever
        if (r["fold"], r["case"]) in by_case
    ]
    effects = []
    for protocol in ("acquired", *PROTOCOLS, "all"):
        chosen = [(r["dice"], d) for r, d in pairs if protocol in ("all", r["protocol"])]
        if chosen:
            a, b = zip(*chosen, strict=True)
            compared = paired_comparison(a, b)
            effects.append(
                {
                    "protocol": protocol,
                    "volumes": len(chosen),
                    "with_dice": float(np.mean(a)),
                    "without_dice": float(np.mean(b)),
                    "effect": compared["mean"],
                    "ci95": compared["ci95"],
                    "wilcoxon_p": compared["wilcoxon_p"],
                }
            )
    return effects


def _cell_line(cell: dict[str, Any]) -> str:
    met = "yes" if cell["target_met"] else "no"
    return (
        f"| {cell['source']} | {cell['protocol']} | {cell['volumes']} "
        f"| {cell['student_dice']:.3f} | {cell['taps_dice']:.3f} | {cell['gap']:+.3f} | {met} |"
    )


def ablation_lines(ablation: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The markdown table of the levers' effects (empty without a variant's rows)."""
    if not ablation:
        return []
    lines = [
        "Levers, each measured on its own (fold students retrained with the one lever taken "
        "out of the recipe, or added to it; effect = Dice with the lever minus without, paired "
        "by volume, t 95% CI, Wilcoxon p; one seed; the 'all' row counts a patient once per "
        "protocol):",
        "",
        "| variant | protocol | volumes | with lever | without | effect | 95% CI | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, effects in ablation.items():
        lines += [
            f"| {variant} | {e['protocol']} | {e['volumes']} | {e['with_dice']:.3f} "
            f"| {e['without_dice']:.3f} | {e['effect']:+.3f} "
            f"| [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}] | {e['wilcoxon_p']:.2g} |"
            for e in effects
        ]
    return [*lines, ""]


def stage_summarise(args: argparse.Namespace) -> None:
    student, taps = _read("student"), _read("taps")
    cells, totals = student_vs_taps(student, taps)
    ablation = {
        variant: lever_effects(rows, student)
        if variant in ADDED_LEVERS
        else lever_effects(student, rows)
        for variant in VARIANTS
        if variant != "full" and (rows := _read(variant_name("student", variant)))
    }
    qc = qc_calibration(student, _read("validation"))
    localisers = {source: fold_localiser_used(source) for source in SOURCES}
    payload = {
        "command": "python benchmarks/loso_protocols.py (simulate, localisers, targets, taps, "
        "train, validate, summarise)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "cells": cells,
        "totals": totals,
        "ablation": ablation,
        "qc": qc,
        "localisers": localisers,
        "rows": {"student": student, "taps": taps},
    }
    nested = all(used == "fold" for used in localisers.values())
    header = [
        "| held-out source | protocol | volumes | student Dice | TAPS Dice | gap | within 0.03 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = [
        "# Leave one source out, with simulated protocols, TAPS beside",
        "",
        *header,
        *map(_cell_line, cells),
        "",
        "Every source together, by protocol ('all': every test volume; a patient counts once "
        "per protocol):",
        "",
        *header,
        *map(_cell_line, totals),
        "",
        *ablation_lines(ablation),
        *qc_lines(qc),
        "",
        "Localiser: each fold's own, trained without the held-out source (nested)."
        if nested
        else "Localiser: the bundled one in every fold, trained on every source (not nested).",
        "",
        f"Made by `{payload['command']}` on {payload['machine']}, {args.note}.",
        "Speed is measured side by side in one process in `end_to_end.md`, not here.",
    ]
    write_json_and_markdown(Path(args.out), payload, "\n".join(lines) + "\n")


def fold_localiser_used(source: str) -> str:
    """``fold`` or ``bundled``: which localiser placed a fold's grids, from its config."""
    config = yaml.safe_load((RUNS / source / "train.yaml").read_text())
    return "fold" if "localiser" in config["preprocess"] else "bundled"


STAGES = {
    "simulate": stage_simulate,
    "localisers": stage_localisers,
    "targets": stage_targets,
    "taps": stage_taps,
    "train": stage_train,
    "validate": stage_validate,
    "summarise": stage_summarise,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", nargs="*", choices=list(SOURCES))
    parser.add_argument("--shard", default="0/1", help="targets: this share I/N of volumes")
    parser.add_argument("--out", default="benchmarks/results/loso_protocols")
    parser.add_argument("--note", default="", help="summarise: how long the stages took")
    parser.add_argument(
        "--variant",
        choices=list(VARIANTS),
        default="full",
        help="train: the full recipe or one lever taken out (rows-student-<variant>.jsonl)",
    )
    parser.add_argument(
        "--localiser",
        choices=("bundled", "fold"),
        default="fold",
        help="train: place the folds' grids with each fold's own localiser or the bundled one",
    )
    args = parser.parse_args()
    STAGES[args.stage](args)


if __name__ == "__main__":
    main()
