"""Dataset inventory for ``prokd inspect``: per-case facts and every validation problem."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from prokd.data.layouts import Case, find_cases
from prokd.data.validate import load_case
from prokd.errors import DataError


@dataclass
class CaseInventory:
    """What ``inspect`` reports of one case; ``error`` is set when the case is unusable."""

    case: Case
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    gland_ml: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def inventory_case(case: Case) -> CaseInventory:
    """Load and validate one case, turning a ``DataError`` into a recorded problem."""
    record = CaseInventory(case)
    try:
        loaded = load_case(case)
    except DataError as err:
        record.error = str(err)
        return record
    record.shape = tuple(reversed(loaded.image.GetSize()))
    record.spacing = tuple(reversed(loaded.image.GetSpacing()))
    record.gland_ml = [loaded.gland_volume_ml(r) for r in range(len(loaded.masks))]
    record.warnings = loaded.warnings
    return record


def inspect_dataset(root: str | Path, layout: str | None = None) -> tuple[str, list[CaseInventory]]:
    """``prokd inspect``: the layout of ``root`` and the inventory of every case.

    Raises:
        DataError: missing folder, unknown layout or no cases.
    """
    layout, cases = find_cases(root, layout)
    return layout, inspect_cases(cases)


def inspect_cases(cases: list[Case]) -> list[CaseInventory]:
    """The inventory of every case (labelled or not), with a progress bar."""
    return [inventory_case(c) for c in tqdm(cases, desc="inspect", unit="case", leave=False)]


def format_inventory(layout: str, records: list[CaseInventory]) -> str:
    """Human-readable table: one line per case, a per-site count, then every problem."""
    lines = [f"layout: {layout}"]
    sites = Counter(r.case.site for r in records)
    lines.append("cases per site: " + ", ".join(f"{s} {n}" for s, n in sorted(sites.items())))
    w = max([24, *(len(r.case.case_id) for r in records)])
    lines.append(
        f"{'case':<{w}} {'site':<12} {'shape (z,y,x)':<16} {'spacing mm (z,y,x)':<20} gland ml"
    )
    for r in records:
        if r.error:
            lines.append(f"{r.case.case_id:<{w}} {r.case.site:<12} UNUSABLE")
            continue
        shape = "x".join(str(v) for v in r.shape)
        spacing = "x".join(f"{v:.3g}" for v in r.spacing)
        ml = " / ".join(f"{v:.1f}" for v in r.gland_ml) if r.case.labelled else "unlabelled"
        lines.append(f"{r.case.case_id:<{w}} {r.case.site:<12} {shape:<16} {spacing:<20} {ml}")
    problems = [f"error: {r.error}" for r in records if r.error]
    problems += [f"warning: {w}" for r in records for w in r.warnings]
    usable = sum(r.error is None for r in records)
    lines.append(f"{usable} of {len(records)} cases usable")
    lines.extend(problems)
    return "\n".join(lines)


def dicom_inventory(folder: str | Path) -> tuple[str, bool]:
    """``prokd inspect`` of a folder of DICOM series: every series with its number,
    description, plane, size and spacing, the one ``predict`` chooses in each study marked
    ``*``, and every series that cannot be read as a volume with the reason.

    Returns:
        The text, and whether every series is usable.

    Raises:
        DataError: no DICOM image series under the folder.
    """
    from prokd.data.dicom import by_study, choose_series, find_series

    series = find_series(folder)
    if not series:
        raise DataError(folder, "no dataset layout, volume files or DICOM series found")
    studies = by_study(series)
    lines = [f"DICOM: {len(series)} series in {len(studies)} studies"]
    for study in studies:
        lines.append(f"patient {study[0].patient_id or '?'}, study ...{study[0].study_uid[-12:]}")
        try:
            chosen: str | None = choose_series(study).uid
        except DataError:
            chosen = None
        for s in study:
            mark = "*" if s.uid == chosen else " "
            problem = f"  UNUSABLE: {s.problem}" if s.problem else ""
            lines.append(f" {mark} {s.summary()}{problem}")
    lines.append("* the series prokd predict segments in each study (--series overrides)")
    return "\n".join(lines), all(s.problem is None for s in series)
