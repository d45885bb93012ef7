"""Building config dataclasses from Python, YAML files and ``key=value`` command-line overrides.

Each method keeps its own dataclass (fields documented by a docstring right under them, validated in
``__post_init__``); this module only fills one in. It is hand-written because the typed CLI library
(typer) does not read dataclasses, and one generic filler beats repeating every field as a CLI option.
A field typed as another config dataclass is a nested group (``grid.steps=300``; ``grid: {steps: 300}``).
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


def _is_config(hint: Any) -> bool:
    """A field whose type is itself a config dataclass: a group of fields, set as ``group.field``."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _dotted_names(cls, prefix: str = "") -> list[str]:
    """Every settable field of ``cls`` as a dotted name (``grid.steps``), nested groups expanded."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if _is_config(hints[f.name]):
            names += _dotted_names(hints[f.name], f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names


def _set_override(cls, values: dict[str, Any], key: str, text: str, root, prefix: str = "") -> None:
    """Put ``key=text`` into ``values``, typed by the field of ``cls`` it names; a dotted key
    (``grid.steps``) goes into the nested mapping of its group. ``root`` (the top class) and ``prefix``
    (the groups already entered) only make the messages name the key as given."""
    name, dot, rest = key.partition(".")
    full = prefix + key
    known = ", ".join(sorted(_dotted_names(root)))
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise ValueError(f"unknown field {full!r}; known: {known}")
    hint = typing.get_type_hints(cls)[name]
    if _is_config(hint) and not dot:
        raise ValueError(f"{full!r} is a group of fields: set them one by one ({full}.<field>=value); known: {known}")
    if dot and not _is_config(hint):
        raise ValueError(f"unknown field {full!r} ({prefix + name!r} has no fields); known: {known}")
    if dot:
        _set_override(hint, values.setdefault(name, {}), rest, text, root, f"{prefix}{name}.")
    else:
        values[name] = _coerce(text, hint, full)


def _group_default(f: dataclasses.Field) -> Any:
    """The default value of a field (None when it has none), its factory called."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _instantiate(cls: type[C], values: dict[str, Any], where: str, prefix: str = "", base: Any = None) -> C:
    """``cls(**values)`` (``base`` with ``values`` replaced, when given), a nested mapping of a group
    field becoming that group's dataclass: the field's default with the mapping's values replaced."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [prefix + k for k in values if k not in fields]
    if unknown:
        known = ", ".join(sorted(_dotted_names(cls, prefix)))
        raise ValueError(f"{where}unknown field(s) {sorted(unknown)}; known: {known}")
    kwargs = {}
    for key, value in values.items():
        if _is_config(hints[key]) and not isinstance(value, hints[key]):
            if not isinstance(value, dict):
                raise ValueError(f"{where}{prefix}{key} is a group of fields: give a mapping of field: value")
            value = _instantiate(hints[key], value, where, f"{prefix}{key}.", _group_default(fields[key]))
        kwargs[key] = value
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def _merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def build_config(cls: type[C], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """``cls`` from an optional YAML file, then ``key=value`` overrides (which win). A field whose type is
    a config dataclass is a group: ``grid.steps=300`` on the command line, ``grid: {steps: 300}`` in YAML."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        loaded = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: a config file must be a mapping of field: value")
        values.update(loaded)
    given: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        _set_override(cls, given, key, text, cls)
    _merge(values, given)
    return _instantiate(cls, values, f"{yaml_path}: " if yaml_path is not None else "")


def config_help(cls, prefix: str = "", defaults: Any = None) -> str:
    """A field-per-line help text: name, default and docstring; the class's own fields first, then the
    inherited ones (a trainer's optimizer fields, :mod:`procsup.trainers.options`). The fields of a nested
    group are listed in its place as ``group.field=default: doc`` (``defaults``: the group's default)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    own = list(cls.__dict__.get("__annotations__", {}))  # in the order the class declares them
    fields = dataclasses.fields(cls)
    lines = []
    for f in sorted(fields, key=lambda f: own.index(f.name) if f.name in own else len(own) + fields.index(f)):
        if _is_config(hints[f.name]):
            lines.append(config_help(hints[f.name], f"{prefix}{f.name}.", _group_default(f)))
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
        lines.append(f"{prefix}{f.name}={default}: {docs.get(f.name, '')}")
    return "\n".join(lines)
