"""Building config dataclasses from Python, YAML files and ``key=value`` command-line overrides.

Each method keeps its own dataclass (fields documented by a docstring right under them, validated in
``__post_init__``); this module only fills one in. It is hand-written because the typed CLI library
(typer) does not read dataclasses, and one generic filler beats repeating every field as a CLI option.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (the convention used by every config here), inherited
    fields included; a subclass that declares a field again with its own docstring wins."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls) -> dict[str, str]:
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _coerce(text: str, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
        return _coerce(text, args[0], name)
    if origin in (list, tuple):
        items = [t for t in text.split(",") if t != ""]
        inner = args[0] if args else str
        values = [_coerce(t, inner, name) for t in items]
        return tuple(values) if origin is tuple else values
    if origin is typing.Literal:
        if text not in typing.get_args(hint):
            raise ValueError(f"{name} must be one of {typing.get_args(hint)}, got {text!r}")
        return text
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"{name} must be {hint.__name__}, got {text!r}") from None
    return text


def build_config(cls: type[C], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """``cls`` from an optional YAML file, then ``key=value`` overrides (which win)."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        loaded = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: a config file must be a mapping of field: value")
        values.update(loaded)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for item in overrides or []:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in names:
            raise ValueError(f"unknown field {key!r}; known: {', '.join(sorted(names))}")
        values[key] = _coerce(text, hints[key], key)
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{yaml_path}: unknown field(s) {sorted(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**values)


def config_help(cls) -> str:
    """A field-per-line help text: name, default and docstring; the class's own fields first, then the
    inherited ones (a trainer's optimizer fields, :mod:`procsup.trainers.options`)."""
    docs = field_docs(cls)
    own = list(cls.__dict__.get("__annotations__", {}))  # in the order the class declares them
    fields = dataclasses.fields(cls)
    lines = []
    for f in sorted(fields, key=lambda f: own.index(f.name) if f.name in own else len(own) + fields.index(f)):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        lines.append(f"{f.name}={default}: {docs.get(f.name, '')}")
    return "\n".join(lines)
