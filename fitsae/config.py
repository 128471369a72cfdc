"""Strict, layered experiment configuration.

Each layer of fitsae declares its own section as a dataclass (``fitsae.data.config``,
``fitsae.models.config``, ``fitsae.train.config``); this module only knows how to turn a
YAML mapping into such dataclasses and back. Precedence is dataclass defaults, then the
``--config FILE.yaml``, then ``--set section.key=value`` overrides. Strictness is the point:
an unknown or misspelled key is an error naming the key, never silently ignored, because a
typo in a cluster job otherwise costs a whole allocation before anyone notices.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union

import yaml

from fitsae.errors import FitsaeError

T = TypeVar("T")

__all__ = ["ConfigError", "from_dict", "to_dict", "apply_overrides", "load", "dump", "parse_yaml"]


class ConfigError(FitsaeError, ValueError):
    """A configuration value or key that fitsae cannot accept; the message names it."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a number, as YAML 1.2 and users do.

    PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-3``): a learning rate written
    ``3e-3`` came back as the string '3e-3' and the strict loader refused it as not a number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def parse_yaml(text: str) -> Any:
    """One YAML document, safely (no Python objects), exponents without a dot read as numbers."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def from_dict(cls: type[T], mapping: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``, rejecting unknown keys and wrong types.

    Missing keys keep their dataclass defaults, so a YAML file only states what differs.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in mapping.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def to_dict(instance: Any) -> dict:
    """Plain-YAML-friendly dict of a (nested) config dataclass; tuples become lists."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(instance)


def apply_overrides(mapping: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides to a nested mapping, in order.

    Values are parsed as YAML (:func:`parse_yaml`) so ``--set train.steps=10`` is an int,
    ``--set optimizer.learning_rate=3e-3`` a float and ``--set data.paths=[a.fits,b.fits]`` a
    list. Keys are validated later by :func:`from_dict`.
    """
    result = _deep_copy(mapping)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({err})") from err
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(mapping: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in mapping.items()}


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with :func:`parse_yaml`; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping of sections")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults → ``path`` (YAML) → ``overrides``, validated strictly into ``cls``.

    An error says where the bad value came from: ``(in FILE)`` when the file alone is invalid,
    ``(from --set ITEM)`` when leaving out that one override makes the rest valid.
    """
    mapping = read_yaml(path) if path else {}
    merged = apply_overrides(mapping, overrides)  # its own errors name the --set item
    try:
        return from_dict(cls, merged)
    except ConfigError as err:
        raise ConfigError(f"{err}{_blame(cls, mapping, list(overrides), path)}") from err


def _blame(cls, mapping: dict, overrides: list[str], path) -> str:
    """`` (from --set ITEM)`` / `` (in FILE)``: the source of a config error, found by leaving sources out."""
    def valid(items) -> bool:
        try:
            from_dict(cls, apply_overrides(mapping, items))
        except ConfigError:
            return False
        return True

    culprits = [item for i, item in enumerate(overrides) if valid(overrides[:i] + overrides[i + 1:])]
    if culprits:
        return " (from " + ", ".join(f"--set {item}" for item in culprits) + ")"
    if path and not valid([]):
        return f" (in {path})"
    sources = ([str(path)] if path else []) + [f"--set {item}" for item in overrides]
    return f" (from {' with '.join(sources)})" if sources else ""


def dump(instance: Any, path: str | Path) -> None:
    """Write the full, resolved config so a run records every value it used."""
    Path(path).write_text(yaml.safe_dump(to_dict(instance), sort_keys=False))
