"""YAML files and `--set a.b=value` overrides -> frozen dataclasses, validated; and back.

Generic: any dataclass whose fields are dataclasses, Literals, unions, dicts, tuples or plain
values. Unknown keys and ill-typed values are rejected with a message that names the field, the
value seen and what is allowed; a dataclass's own `__post_init__` checks name their field and
get the section's prefix here (`dropout: ...` -> `model.dropout: ...`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from orchestrator.common.errors import ConfigError, shown
from orchestrator.common.redact import redact

MAX_CONFIG_NODES = 100_000  # values in one config, aliases counted each time they are used


def _check_size(raw, source: str) -> None:
    """Refuse a config with more than MAX_CONFIG_NODES values (YAML aliases that nest: a
    kilobyte of text that stands for billions of values)."""
    budget, stack = MAX_CONFIG_NODES, [raw]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{source}: more than {MAX_CONFIG_NODES:,} values (nested YAML aliases?); "
                "a config is a few hundred"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def _yaml_load(text: str, source: str):
    """YAML text -> plain data, or ConfigError naming `source` and where the YAML is wrong."""
    try:
        raw = yaml.safe_load(text)
    except (ValueError, RecursionError) as error:  # e.g. an integer of over 4,300 digits
        raise ConfigError(f"{source}: not valid YAML ({type(error).__name__})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    _check_size(raw, source)
    return raw


def describe_type(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return ", ".join(repr(a) if isinstance(a, str) else str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true/false (on/off)"
    if origin is dict:
        return f"a mapping of names to {describe_type(typing.get_args(tp)[1])}"
    if origin is tuple:
        plural = {int: "integers", float: "numbers", str: "strings"}
        return "a list of " + plural.get(typing.get_args(tp)[0], "values")
    return {int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(tp, value, path: str):
    """`value` as type `tp`, or ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(option, value, path)
            except ConfigError:
                continue
    elif origin is Literal:
        for allowed in typing.get_args(tp):
            if value == allowed and type(value) is type(allowed):
                return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value, path)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{path}: got {shown(value)}; allowed: a finite number")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is dict:  # dict[str, X]: a YAML mapping with free keys
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict) and all(isinstance(k, key_type) for k in value):
            return {k: _coerce(value_type, v, f"{path}.{k}") for k, v in value.items()}
    elif origin is tuple:  # tuple[X, ...]: a YAML list
        (item_type, _) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    else:
        raise TypeError(f"{path}: unsupported config type {tp!r}")
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{path}: got {shown(value)}; allowed: a mapping of {tp.__name__} fields")
    raise ConfigError(f"{path}: got {shown(value)}; allowed: {describe_type(tp)}")


def from_dict(cls, raw: dict[str, Any], path: str = ""):
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and ill-typed values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(str(key) for key in set(raw) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key '{where}{shown(unknown[0])[1:-1]}'; allowed keys"
            f"{' in ' + path if path else ''}: " + ", ".join(fields)
        )
    kwargs = {
        name: _coerce(hints[name], value, f"{path}.{name}" if path else name)
        for name, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        message = str(error)
        # Components name their own fields ("dropout: ..."); prefix the section ("model.dropout").
        raise ConfigError(
            f"{path}.{message}" if path and not message.startswith(path) else message
        ) from None


def _set_override(raw: dict, assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"--set {shown(assignment)}: expected key=value, e.g. --set model.dropout=0.3"
        )
    value = _yaml_load(text, f"--set {key}: value {shown(text)}") if text else ""
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section"
            )
        node = child
    node[parts[-1]] = value


def load(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """Read a YAML config (or `cls`'s defaults when `path` is None) and apply overrides.

    A config file may name another as its `base` (a path relative to it): the file then holds
    only what differs; mappings merge key by key, any other value replaces the base's.
    """
    raw = _read_config_file(Path(path)) if path is not None else {}
    return _build(cls, raw, overrides)


def _read_config_file(path: Path, derived: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path}: cannot be read ({type(error).__name__})") from None
    raw = _mapping(_yaml_load(text, str(path)) or {}, str(path))
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(
            f"{path}: base: got {shown(base)}; allowed: the path of another config file, "
            "relative to this one"
        )
    base_path = (path.parent / base).resolve()
    if base_path in (*derived, path.resolve()):
        raise ConfigError(f"{path}: base: {base} is this file or derives from it (a cycle)")
    return _merged(_read_config_file(base_path, (*derived, path.resolve())), raw)


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _mapping(raw, source: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    return raw


def load_text(cls, text: str, overrides: list[str] = (), source: str = "config"):
    """A YAML config given as text (e.g. the one stored in a checkpoint), plus overrides."""
    return _build(cls, _mapping(_yaml_load(text, source) or {}, source), overrides)


def _build(cls, raw: dict[str, Any], overrides: list[str]):
    for assignment in overrides:
        _set_override(raw, assignment)
    return from_dict(cls, raw)


def to_dict(config) -> dict[str, Any]:
    """Plain data (tuples as lists), for YAML and MLflow."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """{'model.width': 0.25, ...}: one entry per leaf field, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in (to_dict(config) if dataclasses.is_dataclass(config) else config).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def to_yaml(config, redact_secrets: bool = True) -> str:
    """The config as YAML; secrets masked (common/redact.py) unless it travels to a
    process that needs them (a sweep's trials)."""
    tree = to_dict(config)
    return yaml.safe_dump(redact(tree) if redact_secrets else tree, sort_keys=False)
