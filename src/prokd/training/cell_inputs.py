"""What a finished study cell was made from beyond its config: the view banks it read.

A bank grows in place (``prokd bank`` adds views to its folder), and a study never reruns a
finished cell, so cells of one study could silently be taught by different banks. Each
finished cell records how many views each of its banks held (``cell_inputs.json``, the first
time the study sees it finished); a later run refuses a cell whose banks have changed since.
"""

from __future__ import annotations

import json
from pathlib import Path

from prokd.data.view_store import entry_count
from prokd.errors import ConfigError
from prokd.io_atomic import atomic_path
from prokd.training.config import load_config

CELL_INPUTS = "cell_inputs.json"


def bank_views(cell_dir: Path) -> dict[str, int]:
    """Finished views of each view bank the cell's saved config reads, by bank folder."""
    config = load_config(cell_dir / "config.yaml")
    return {s.root: entry_count(s.root) for s in config.data.sources if s.bank}


def check_cell_inputs(cell_dir: Path) -> None:
    """Record a finished cell's bank views the first time; afterwards compare them.

    Raises:
        ConfigError: a bank holds another number of views than when the cell was recorded.
    """
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
