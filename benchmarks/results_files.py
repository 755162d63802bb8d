"""Where every benchmark's results go: ``<stem>.json`` beside ``<stem>.md``, atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prokd.io_atomic import atomic_path


def write_results(stem: str | Path, result: dict[str, Any], markdown: list[str]) -> Path:
    """Write the JSON result and its markdown page; print the page; return the JSON path."""
    stem = Path(stem)
    with atomic_path(stem.with_suffix(".json")) as path:
        path.write_text(json.dumps(result, indent=1))
    with atomic_path(stem.with_suffix(".md")) as path:
        path.write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))
    return stem.with_suffix(".json")
