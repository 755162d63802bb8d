"""What a DICOM node is told: where it listens, who may send, where results go, what it
makes; from the command line or a YAML file with the same keys (the command line wins)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from prokd.errors import ConfigError

OUTPUTS = ("seg", "rtstruct", "overlay")  # what the node can send back for a study
AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}$")  # no backslash


def check_ae_title(title: str, key: str) -> str:
    """An AE title (1-16 printable ASCII characters, no backslash, not starting with a
    space), stripped.

    Raises:
        ConfigError: naming ``key``.
    """
    title = str(title).strip()
    if not AE_TITLE.match(title):
        raise ConfigError(f"{key}: {title!r} is not an AE title (1-16 characters, no '\\')")
    return title


@dataclass(frozen=True)
class Destination:
    """A DICOM node results are sent to by C-STORE."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, key: str = "--destination") -> Destination:
        """``AET@HOST:PORT``.

        Raises:
            ConfigError: naming ``key``, for anything else.
        """
        match = re.fullmatch(r"(.+)@(.+):(\d+)", str(text).strip())
        if not match:
            raise ConfigError(f"{key}: {text!r} is not AET@HOST:PORT")
        port = int(match.group(3))
        if not 0 < port < 65536:
            raise ConfigError(f"{key}: port {port} is not between 1 and 65535")
        return cls(check_ae_title(match.group(1), key), match.group(2), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """Settings of ``prokd serve`` (see its ``--help`` for each)."""

    port: int
    work_dir: Path
    destinations: tuple[Destination, ...]
    ae_title: str = "PROKD"
    bind: str = "0.0.0.0"
    model: str = "prostate-t2"
    outputs: tuple[str, ...] = ("seg",)
    allow: tuple[str, ...] = ()
    quiet_seconds: float = 10.0
    workers: int = 1
    retry_seconds: float = 5.0
    retry_max_seconds: float = 300.0


def _outputs(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = tuple(str(item).strip() for item in items if str(item).strip())
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown or not names:
        raise ConfigError(f"{key}: {', '.join(unknown) or 'nothing'}; choose from {OUTPUTS}")
    return names


def _number(value: Any, key: str, kind: type, low: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a number") from None
    if number < low:
        raise ConfigError(f"{key}: {number} is below {low}")
    return number


def node_config(values: dict[str, Any], where: str = "") -> NodeConfig:
    """A checked :class:`NodeConfig` from a mapping of its keys (``destinations`` as
    ``AET@HOST:PORT`` texts, ``outputs`` as a list or a comma-separated text).

    Raises:
        ConfigError: an unknown key, a missing port, work folder or destination, or a bad
            value; each message names the key (prefixed with ``where``, a file).
    """
    prefix = f"{where}: " if where else ""
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{prefix}unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    for key in ("port", "work_dir", "destinations"):
        if not values.get(key):
            raise ConfigError(f"{prefix}{key} is required")
    destinations = values["destinations"]
    if isinstance(destinations, str):
        destinations = [destinations]
    defaults = NodeConfig(port=1, work_dir=Path("."), destinations=())
    get = values.get
    return replace(
        defaults,
        port=_number(get("port"), f"{prefix}port", int, 1),
        work_dir=Path(get("work_dir")),
        destinations=tuple(Destination.parse(d, f"{prefix}destinations") for d in destinations),
        ae_title=check_ae_title(get("ae_title", defaults.ae_title), f"{prefix}ae_title"),
        bind=str(get("bind", defaults.bind)),
        model=str(get("model", defaults.model)),
        outputs=_outputs(get("outputs", defaults.outputs), f"{prefix}outputs"),
        allow=tuple(check_ae_title(a, f"{prefix}allow") for a in get("allow") or ()),
        quiet_seconds=_number(get("quiet_seconds", 10.0), f"{prefix}quiet_seconds", float, 0),
        workers=_number(get("workers", 1), f"{prefix}workers", int, 1),
        retry_seconds=_number(get("retry_seconds", 5.0), f"{prefix}retry_seconds", float, 0.1),
        retry_max_seconds=_number(
            get("retry_max_seconds", 300.0), f"{prefix}retry_max_seconds", float, 0.1
        ),
    )


def load_node_config(path: str | Path | None, overrides: dict[str, Any]) -> NodeConfig:
    """The YAML file's settings (if any) with ``overrides`` (the command line's options that
    were given, ``None`` values dropped) on top.

    Raises:
        ConfigError: an unreadable file, a file that is not a mapping, or a bad setting.
    """
    # YAML only when a file is read: every command's parser imports this module (OUTPUTS),
    # prokd predict's cold start among them
    from prokd.yaml_files import read_yaml

    values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml(path, "node config") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a node config is a mapping of settings")
    values.update({k: v for k, v in overrides.items() if v not in (None, [], ())})
    return node_config(values, str(path) if path is not None else "")
