"""Every field a user may set, read off the config dataclasses themselves: its dotted key, its
type and allowed values, its default and one line of meaning (the comment its component wrote
beside or above it). `config --fields` prints it; the docs' config reference is made from it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import json
import tokenize
import typing
from dataclasses import dataclass

from orchestrator.common.yaml_config import describe_type
from orchestrator.config.experiment import ExperimentConfig


@dataclass(frozen=True)
class Field:
    key: str  # e.g. "train.epochs"
    allowed: str  # the type, as an error message names it
    default: str  # as YAML would write it
    meaning: str  # the comment beside (or above) the field in its dataclass


def reference(cls=ExperimentConfig, prefix: str = "") -> list[Field]:
    """Every leaf field of `cls` (nested sections walked), in declaration order."""
    found = []
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    instance = cls()
    for item in dataclasses.fields(cls):
        key, kind = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(kind):
            found += reference(kind, f"{key}.")
            continue
        default = json.dumps(_plain(getattr(instance, item.name)))
        found.append(Field(key, describe_type(kind), default, comments.get(item.name, "")))
    return found


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.cache
def _comments(cls) -> dict[str, str]:
    """{field name: its comment}: the one on the field's line (with the lines that continue it,
    `#` and an indent), else the comment lines just above it, joined."""
    source = inspect.getsource(cls)
    names = {item.name for item in dataclasses.fields(cls)}
    found, above, line_of, beside = {}, [], {}, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if token.start[0] in line_of:  # beside a field
                beside = line_of[token.start[0]]
                found[beside] = text
            elif beside and token.string.startswith("#  "):  # continues the one beside
                found[beside] += " " + text
            else:
                above.append(text)
                beside = None
        elif token.type == tokenize.NAME and token.start[1] == 4 and token.string in names:
            line_of[token.start[0]] = token.string
            if above:
                found[token.string] = " ".join(above)
            above, beside = [], None
        elif token.type == tokenize.NL and not token.line.strip():
            above, beside = [], None  # a blank line ends a comment block
    return found


def format_reference(fields: list[Field]) -> str:
    """One block per field: key, allowed values, default, meaning."""
    blocks = []
    for item in fields:
        lines = [item.key, f"  allowed: {item.allowed}", f"  default: {item.default}"]
        if item.meaning:
            lines.append(f"  {item.meaning}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"
