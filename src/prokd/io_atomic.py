"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prokd.errors import DataError

TEMP_PREFIX = ".prokd-tmp."  # every temporary file or folder prokd writes starts so


def temporary_name(target: Path) -> str:
    """Prefix of a temporary sibling of ``target`` (see :func:`remove_stale_temporaries`)."""
    return f"{TEMP_PREFIX}{target.name}."


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left under ``folder`` by a killed process; returns how many.

    Only call this on a folder no other prokd process is writing into (a run folder at the
    start of a run or resume).
    """
    removed = 0
    for path in sorted(Path(folder).rglob(f"{TEMP_PREFIX}*"), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.npz``) so writers that
    pick a format by extension still work. On any exception the temporary file is removed
    and ``target`` is left untouched.

    Raises:
        DataError: naming ``target``, when its folder cannot be made or the write fails at
            the operating-system level (no permission, disk full, a file in the way).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(target.suffixes)
        fd, name = tempfile.mkstemp(prefix=temporary_name(target), suffix=suffix, dir=target.parent)
    except OSError as err:
        raise DataError(target, f"cannot write ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        raise DataError(target, f"cannot write ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target``; on success it replaces ``target``
    whole (a folder there is removed first), so ``target`` never holds a half-written
    result. On any exception the temporary folder goes and ``target`` is left untouched.

    Raises:
        DataError: naming ``target``, when its parent folder cannot be written.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=temporary_name(target), dir=target.parent))
    except OSError as err:
        raise DataError(target, f"cannot write ({err.strerror or err})") from None
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json_and_markdown(
    stem: str | Path, result: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """``<stem>.json`` (the result) and ``<stem>.md`` (its page), each written atomically."""
    stem = Path(stem)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown.rstrip("\n") + "\n")
    return json_path, md_path
