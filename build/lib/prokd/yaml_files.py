"""Reading the YAML files users write (configs, studies, teacher specs) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prokd.errors import ConfigError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed contents of a YAML file.

    Raises:
        ConfigError: ``<path>: <what> not found``, or ``<path>: invalid YAML (line N)``.
    """
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"{path}: invalid YAML{line}") from None
