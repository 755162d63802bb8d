"""Nested mappings (read from YAML) -> typed, frozen dataclasses, each key and value checked:
unknown keys, wrong types and impossible values are one-line ``ConfigError``s naming the
dotted key."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from prokd.errors import ConfigError

# A value's check: the message when it fails, and the test.
Check = tuple[str, Callable[[Any], bool]]


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _convert(value: Any, kind: Any, key: str, checks: Mapping[str, Check]) -> Any:
    """Check ``value`` against the annotation ``kind``; return it converted."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, checks)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", checks) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]", checks)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if dataclasses.is_dataclass(kind):
        return build_dataclass(kind, value, checks, f"{key}.")
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(kind)}")


def build_dataclass(cls: type, values: Any, checks: Mapping[str, Check], prefix: str = "") -> Any:
    """An instance of the (frozen) dataclass ``cls`` from a nested mapping: every key known,
    every value of its annotated type (nested dataclasses built the same way), and each
    value passing its check in ``checks`` (keyed by dotted path, list indices as ``[]``).

    Raises:
        ConfigError: ``<dotted key>: <problem>`` for the first bad key or value.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: missing (required here)")
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{path}: unknown key (known here: {known})")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = build_dataclass(kind, value, checks, f"{path}.")
        else:
            kwargs[key] = _convert(value, kind, path, checks)
            check = checks.get(re.sub(r"\[\d+\]", "[]", path))
            if check and kwargs[key] is not None:
                message, ok = check
                if not ok(kwargs[key]):
                    raise ConfigError(f"{path}: {message}, got {value!r}")
    return cls(**kwargs)
