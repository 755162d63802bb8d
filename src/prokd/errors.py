"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path


class ProkdError(Exception):
    """Base class of every error caused by user input (files, configs, arguments)."""


def error_summary(err: BaseException) -> str:
    """One short line from a library's (possibly multi-line or empty) error message.

    Prefers the line that says what failed (ITK puts it after file/line context).
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = next((line for line in lines if "rror" in line or "cannot" in line.lower()), "")
    return (message or (lines[-1] if lines else type(err).__name__))[:200]


class DataError(ProkdError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple:
        # rebuilt from its parts when it crosses a process boundary (prokd experiment --jobs)
        return (type(self), (self.path, self.problem))


class ConfigError(ProkdError):
    """A configuration key is unknown, of the wrong type or has an impossible value."""


class DataWarning(UserWarning):
    """Usable but suspicious input (an empty mask, an ignored config key): worth a line."""


def warn_all(messages: Iterable[str]) -> None:
    """Issue each message as a :class:`DataWarning` (the CLI prints one line per warning)."""
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=2)


def one_line_warnings(command_name: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints prokd's own warnings as one line each."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            print(f"prokd {command_name}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show
