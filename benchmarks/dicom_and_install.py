"""The predict-only install beside the full one, DICOM series to DICOM SEG from process
start, and every DICOM input in ../shared/data/dicom either masked or refused in one line.

- Size on disk: each venv's ``site-packages`` (``.venv-base``: ``pip install .``, as
  ``make base-check`` makes it; ``.venv``: the full install with the train and test extras).
- Cold start: ``prokd predict prostate-t2`` in a fresh interpreter, process start to output
  written, for a NIfTI scan (Prostate158 001, 232x232x23) and for the ProstateX-0000 study
  folder to a DICOM SEG (the axial T2 chosen, 384x384x19); the installs alternate, run by
  run, and the median of ``--repeats`` is reported with their ratio.
- Sweep: ``prokd predict`` on every folder under ``../shared/data/dicom`` and on one file
  of every series: a mask, or a one-line error; never a traceback.

    make base-check && .venv/bin/python benchmarks/dicom_and_install.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from predict_memory import PROBE  # benchmarks/ is on the path when run as a script

from prokd.evaluation.bench import cpu_model
from prokd.io_atomic import write_json_and_markdown

DATA = Path("../shared/data")
INPUTS = {
    "NIfTI scan -> NIfTI mask": (DATA / "real/prostate158/001/t2.nii.gz", "mask.nii.gz"),
    "DICOM study -> DICOM SEG": (DATA / "dicom/ProstateX/ProstateX-0000", "seg.dcm"),
}
TARGET_SEG_S = 2.0


# Run by a venv's own python: MB on disk of prokd's installed dependency closure with the
# given extras (each distribution's files, from its RECORD), and the distributions counted.
CLOSURE = """
import json, sys
from importlib.metadata import PackageNotFoundError, distribution
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
seen, todo, total = set(), [("prokd", set(sys.argv[1:]))], 0
while todo:
    name, wanted = todo.pop()
    key = canonicalize_name(name)
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    for file in dist.files or []:
        path = file.locate()
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
            todo.append((req.name, set(req.extras)))
print(json.dumps([total / 1e6, sorted(seen)]))
"""


def _install_mb(venv: Path, extras: list[str]) -> tuple[float, list[str]]:
    """MB on disk of prokd and everything it pulls in with ``extras``, in ``venv``."""
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", CLOSURE, *extras],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total, names = json.loads(out)
    return total, names


def _cold_start(venv: Path, source: Path, output: Path) -> float:
    command = [str(venv / "bin/prokd"), "predict", "prostate-t2", str(source), str(output)]
    probe = [str(venv / "bin/python"), "-c", PROBE, json.dumps([*command, "--overwrite"])]
    out = subprocess.run(probe, check=True, capture_output=True, text=True).stdout
    _, wall, _ = json.loads(out.strip().splitlines()[-1])
    return wall


def _sweep_targets(root: Path) -> list[Path]:
    folders = sorted(p for p in root.rglob("*") if p.is_dir())
    files = [next(iter(sorted(f.glob("*.dcm")))) for f in folders if any(f.glob("*.dcm"))]
    return [root, *folders, *files]


def _sweep(venv: Path, root: Path, out: Path) -> list[dict[str, object]]:
    rows = []
    for index, target in enumerate(_sweep_targets(root)):
        output = out / (f"{index}.nii.gz" if target.is_file() else str(index))
        run = subprocess.run(
            [str(venv / "bin/prokd"), "predict", "prostate-t2", str(target), str(output)],
            capture_output=True,
            text=True,
        )
        errors = [line for line in run.stderr.splitlines() if line.strip()]
        masks = [line for line in run.stdout.splitlines() if " ml, " in line]
        warned = [line.split(": warning: ")[-1] for line in errors if ": warning: " in line]
        if run.returncode == 0 and masks:
            outcome = "mask"
        elif run.returncode != 0 and len(errors) == 1 and ": error: " in errors[0]:
            outcome = "one-line error"
        else:
            outcome = "FAILED"
        rows.append(
            {
                "input": str(target.relative_to(root.parent)),
                "outcome": outcome,
                "said": (masks[-1] if masks else errors[-1] if errors else "")[:300],
                "warnings": warned,
            }
        )
    return rows


def _short(said: str) -> str:
    """A sweep line without the temporary folder's path."""
    return said.split("/sweep/")[-1].replace("|", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-venv", default=".venv-base", type=Path)
    parser.add_argument("--full-venv", default=".venv", type=Path)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per cell")
    parser.add_argument("--out", default="benchmarks/results/dicom_and_install", help="stem")
    args = parser.parse_args()
    started = time.perf_counter()
    venvs = {"base": args.base_venv, "full": args.full_venv}
    # The full install is what `pip install 'prokd[train]'` brings: measured in .venv, which
    # also holds the test extra and TAPS, left out of the closure.
    measured = {
        "base": _install_mb(args.base_venv, []),
        "full": _install_mb(args.full_venv, ["train"]),
    }
    sizes = {name: mb for name, (mb, _) in measured.items()}
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, dict[str, list[float]]] = {k: {n: [] for n in venvs} for k in INPUTS}
        for _ in range(args.repeats):
            for label, (source, output) in INPUTS.items():
                for name, venv in venvs.items():  # the installs alternate, run by run
                    times[label][name].append(_cold_start(venv, source, Path(tmp) / output))
        sweep = _sweep(args.base_venv, DATA / "dicom", Path(tmp) / "sweep")
    cold = {
        label: {
            **{name: statistics.median(runs) for name, runs in by_venv.items()},
            "runs": by_venv,
        }
        for label, by_venv in times.items()
    }
    result = {
        "command": "python benchmarks/dicom_and_install.py",
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "install_mb": sizes,
        "distributions": {name: names for name, (_, names) in measured.items()},
        "base_over_full_size": sizes["base"] / sizes["full"],
        "cold_start_s": cold,
        "seg_target_s": TARGET_SEG_S,
        "sweep": sweep,
        "wall_seconds": time.perf_counter() - started,
    }
    seg = cold["DICOM study -> DICOM SEG"]
    lines = [
        "# The predict-only install, DICOM to DICOM SEG, and every DICOM input",
        "",
        f"Made by `{result['command']}` on {result['cpu']} in {result['wall_seconds']:.0f} s.",
        "",
        "## Size on disk",
        "",
        "prokd and every distribution it pulls in (the files in their RECORDs; pip and the",
        "venv itself not counted).",
        "",
        "| install | distributions | MB |",
        "|---|---:|---:|",
        f"| base (`pip install .`) | {len(measured['base'][1])} | {sizes['base']:.0f} |",
        f"| full (`pip install '.[train]'`) | {len(measured['full'][1])} | {sizes['full']:.0f} |",
        "",
        f"Base / full: {result['base_over_full_size']:.2f} (target at most 0.33).",
        "",
        "## Cold start: process start to output written",
        "",
        f"Median of {args.repeats} fresh processes per cell, the two installs alternating.",
        "",
        "| input | base s | full s | base / full |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {label} | {c['base']:.2f} | {c['full']:.2f} | {c['base'] / c['full']:.2f} |"
        for label, c in cold.items()
    ]
    lines += [
        "",
        f"DICOM SEG target: at most {TARGET_SEG_S:g} s from process start; base "
        f"{seg['base']:.2f} s, full {seg['full']:.2f} s.",
        "",
        "## Every DICOM input in ../shared/data/dicom (base install)",
        "",
        "| input | outcome | what prokd said | warnings |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{r['input']}` | {r['outcome']} | {_short(str(r['said']))} | "
        f"{'; '.join(r['warnings'])} |"
        for r in sweep
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
