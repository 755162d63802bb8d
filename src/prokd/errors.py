"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class ProkdError(Exception):
    """Base class of every error caused by user input (files, configs, arguments)."""


class DataError(ProkdError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(ProkdError):
    """A configuration key is unknown, of the wrong type or has an impossible value."""
