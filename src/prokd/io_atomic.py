"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prokd.errors import DataError


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
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
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
