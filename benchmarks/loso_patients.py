"""The leave-one-source-out study of ``loso_protocols.py`` again, with the patient as the unit.

Reads the per-volume rows committed in ``benchmarks/results/loso_protocols.json`` (the fold
students and TAPS on 42 test volumes: 14 patients, each as acquired and in up to four
simulated protocols) and writes ``benchmarks/results/loso_protocols-patients.{json,md}``:

- per held-out patient: the student's and TAPS's Dice averaged over the patient's volumes;
- student minus TAPS with each patient's mean difference as one observation (t 95% CI,
  t-test and Wilcoxon p over patients), over all patients, over the held-out ones
  (ProstateX-0000 is exploratory: its series and AI reference chose settings of the recipe),
  and again without the simulated cells (source x protocol) where TAPS itself scores below
  0.7, which say more about the simulation than about the student.

    .venv/bin/python benchmarks/loso_patients.py
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from prokd.evaluation.stats import patient_level_comparison
from prokd.io_atomic import write_json_and_markdown

EXPLORATORY = {"prostatex/ProstateX-0000"}  # chose slab widths, the localiser's recipe, ...
TAPS_FLOOR = 0.7  # a simulated cell where the teacher scores below this is left out


def patient_of(row: dict[str, Any]) -> str:
    """``<fold>/<patient>``: the case's last part without the simulated copy's source prefix
    and without an acquisition suffix (``ProstateX-0001_s6`` is patient ProstateX-0001)."""
    stem = row["case"].split("/")[-1]
    stem = re.sub(rf"^{re.escape(row['fold'])}_", "", stem)
    return f"{row['fold']}/{re.sub(r'_s[0-9]+$', '', stem)}"


def weak_cells(taps_rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(fold, protocol, TAPS mean Dice) of the simulated cells where TAPS is below the floor."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in taps_rows:
        cells[(row["fold"], row["protocol"])].append(row["dice"])
    return [
        (fold, protocol, float(np.mean(v)))
        for (fold, protocol), v in sorted(cells.items())
        if protocol != "acquired" and np.mean(v) < TAPS_FLOOR
    ]


def summarise(payload: dict[str, Any]) -> dict[str, Any]:
    """Per-patient rows and the patient-level comparisons of student and TAPS."""
    student, taps = payload["rows"]["student"], payload["rows"]["taps"]
    by_key = {(r["fold"], r["protocol"], r["case"]): r for r in taps}
    pairs = [(s, by_key[(s["fold"], s["protocol"], s["case"])]) for s in student]
    dropped = weak_cells(taps)
    dropped_keys = {(f, p) for f, p, _ in dropped}
    patients: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s, t in pairs:
        patients[patient_of(s)].append((s["dice"], t["dice"]))

    def compare(keep) -> dict[str, Any]:
        chosen = [(patient_of(s), s["dice"], t["dice"]) for s, t in pairs if keep(s)]
        return patient_level_comparison(chosen)

    return {
        "source": "benchmarks/results/loso_protocols.json",
        "patients": [
            {
                "patient": p,
                "volumes": len(v),
                "student_dice": float(np.mean([a for a, _ in v])),
                "taps_dice": float(np.mean([b for _, b in v])),
                "exploratory": p in EXPLORATORY,
            }
            for p, v in sorted(patients.items())
        ],
        "dropped_cells": [{"fold": f, "protocol": p, "taps_dice": d} for f, p, d in dropped],
        "comparisons": {
            "all patients": compare(lambda s: True),
            "held-out patients": compare(lambda s: patient_of(s) not in EXPLORATORY),
            "held-out patients, acquired only": compare(
                lambda s: patient_of(s) not in EXPLORATORY and s["protocol"] == "acquired"
            ),
            f"held-out patients, cells with TAPS >= {TAPS_FLOOR}": compare(
                lambda s: (
                    patient_of(s) not in EXPLORATORY
                    and (s["fold"], s["protocol"]) not in dropped_keys
                )
            ),
        },
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    lines = [
        "# Leave one source out (loso_protocols), the patient as the unit",
        "",
        f"From the per-volume rows of `{summary['source']}` (one seed; the fold students of "
        "the prostate-t2 recipe and TAPS on the same volumes). A patient's volumes (as "
        "acquired and its simulated protocols; two acquisitions of ProstateX-0001) are one "
        "patient. *exploratory*: ProstateX-0000 chose settings of the recipe, so no figure "
        "called held out includes it.",
        "",
        "| patient | volumes | student Dice | TAPS Dice | gap |",
        "|---|---|---|---|---|",
    ]
    for p in summary["patients"]:
        name = p["patient"] + (" (*exploratory*)" if p["exploratory"] else "")
        lines.append(
            f"| {name} | {p['volumes']} | {p['student_dice']:.3f} | {p['taps_dice']:.3f} | "
            f"{p['student_dice'] - p['taps_dice']:+.3f} |"
        )
    lines += [
        "",
        "Student minus TAPS, each patient's mean difference one observation (t 95% CI; "
        "t-test and Wilcoxon p over patients):",
        "",
        "| set | patients | volumes | mean | 95% CI | p (t) | p (Wilcoxon) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in summary["comparisons"].items():
        p_t = "" if c["p"] is None else f"{c['p']:.3g}"
        lines.append(
            f"| {name} | {c['n_patients']} | {c['n_volumes']} | {c['mean']:+.3f} | "
            f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {p_t} | {c['wilcoxon_p']:.3g} |"
        )
    dropped = ", ".join(
        f"{d['fold']} {d['protocol']} (TAPS {d['taps_dice']:.3f})" for d in summary["dropped_cells"]
    )
    lines += [
        "",
        f"Simulated cells where TAPS scores below {TAPS_FLOOR}, left out of the last row: "
        f"{dropped or 'none'}. Where the teacher itself fails, a cell says more about the "
        "simulation than about the student.",
        "",
        f"Made by `{command}` (seconds, on any machine: it reads the committed rows only).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="benchmarks/results/loso_protocols.json")
    parser.add_argument("--out", default="benchmarks/results/loso_protocols-patients")
    args = parser.parse_args()
    summary = summarise(json.loads(Path(args.rows).read_text()))
    command = "python benchmarks/loso_patients.py"
    summary["command"] = command
    write_json_and_markdown(Path(args.out), summary, markdown(summary, command))


if __name__ == "__main__":
    main()
