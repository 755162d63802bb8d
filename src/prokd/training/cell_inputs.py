"""What a finished study cell was made from: its config and the view banks it read.

A study never reruns a finished cell, so a regime changed in the study file since would
silently keep cells made with the old settings: a finished cell whose saved config is not
the one the study file now gives it is refused, naming the first setting that differs. A
bank grows in place (``prokd bank`` adds views to its folder), and a study never reruns a
finished cell, so cells of one study could silently be taught by different banks. Each
finished cell records how many views each of its banks held (``cell_inputs.json``, the first
time the study sees it finished); a later run refuses a cell whose banks have changed since.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prokd.data.view_store import entry_count
from prokd.errors import ConfigError
from prokd.io_atomic import atomic_path
from prokd.training.config import Config, load_config

CELL_INPUTS = "cell_inputs.json"


def bank_views(cell_dir: Path) -> dict[str, int]:
    """Finished views of each view bank the cell's saved config reads, by bank folder."""
    config = load_config(cell_dir / "config.yaml")
    return {s.root: entry_count(s.root) for s in config.data.sources if s.bank}


def check_cell_inputs(cell_dir: Path, expected: Config) -> None:
    """Compare a finished cell's saved config with ``expected`` (the study's, as it would
    run the cell now: its localiser's path is not compared, since a fold's localiser file
    may be restored elsewhere); record its bank views the first time, and afterwards compare
    them.

    Raises:
        ConfigError: the configs differ, or a bank holds another number of views than when
            the cell was recorded.
    """
    saved = load_config(cell_dir / "config.yaml")
    expected = expected.replace(preprocess={"localiser": saved.preprocess.localiser})
    difference = first_difference(saved.to_dict(), expected.to_dict())
    if difference is not None:
        key, was, now_value = difference
        raise ConfigError(
            f"{cell_dir}: made with {key} = {was!r}, the study file now gives {now_value!r}; "
            "delete the cell's folder (and its kept record) to make it again, or give the "
            "changed regime another name"
        )
    now = bank_views(cell_dir)
    record = cell_dir / CELL_INPUTS
    if not record.exists():
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"bank_views": now}, indent=1) + "\n")
        return
    for root, count in json.loads(record.read_text())["bank_views"].items():
        if now.get(root) != count:
            raise ConfigError(
                f"{cell_dir}: made with {count} views of the bank {root}, which now holds "
                f"{now.get(root, 0)}; delete the cell's folder to make it again, or give a "
                "grown bank another folder"
            )


def first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (in ``a``'s order) whose values differ between two nested
    mappings, with both values; ``None`` when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(name), b.get(name), f"{key}.{name}".lstrip("."))
            if found is not None:
                return found
        return None
    return None if a == b else (key, a, b)
