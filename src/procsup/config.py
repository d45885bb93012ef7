"""Building config dataclasses from Python, YAML files and ``key=value`` command-line overrides.

Each method keeps its own dataclass (fields documented by a docstring right under them, validated in
``__post_init__``); this module only fills one in. It is hand-written because the typed CLI library
(typer) does not read dataclasses, and one generic filler beats repeating every field as a CLI option.
A field typed as another config dataclass is a nested group (``grid.steps=300``; ``grid: {steps: 300}``).

A YAML value and a ``key=value`` text go through the same typed parser, so they mean the same thing: a
bool is a YAML bool or one of the words true/false/yes/no/on/off/1/0 (``resume: "false"`` does not
resume); a float takes ints and numeric text (PyYAML reads ``1e-3`` as a string), never NaN or
infinity; an int is an int (not ``3.0``, not ``true``); a string field wants a string (quote ``2024``);
a tuple takes a YAML list or comma-separated text, a tuple of pairs ``2:4,4:4``; null only where the
field allows None. Errors name the file, the line where YAML can say it, and the field.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
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


def _item_hints(hint: Any, n: int, name: str) -> list[Any]:
    """The type of each of the ``n`` items of a list/tuple field: ``tuple[int, ...]`` -> int for all;
    ``tuple[int, int]`` -> exactly two ints."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        if n != len(args):
            raise ValueError(f"{name} must be {len(args)} values, got {n}")
        return list(args)
    return [args[0] if args else str] * n


def _coerce(text: str, hint: Any, name: str, sep: str = ",") -> Any:
    """``key=value`` text (or a YAML string) -> a value of type ``hint``; ``ValueError`` naming ``name``."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
        return _coerce(text, args[0], name, sep)
    if origin in (list, tuple):
        items = [t for t in text.split(sep) if t != ""]
        values = [_coerce(t, h, name, ":") for t, h in zip(items, _item_hints(hint, len(items), name))]
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
            value = hint(text)
        except ValueError:
            raise ValueError(f"{name} must be {hint.__name__}, got {_short(text)}") from None
        if hint is float and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {text!r}")
        return value
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check(value: Any, hint: Any, name: str) -> Any:
    """A value read from YAML -> a value of type ``hint``, by the rules of :func:`_coerce` (text goes through
    it as is): YAML's own types are accepted only where they mean what a ``key=value`` text would."""
    if isinstance(value, str):
        return _coerce(value, hint, name)
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise ValueError(f"{name} must not be null")
    if origin in (typing.Union, types.UnionType):
        return _check(value, args[0], name)
    if origin in (list, tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # a scalar: a one-item list
        values = [_check(v, h, f"{name}[{i}]") for i, (v, h) in enumerate(zip(items, _item_hints(hint, len(items), name)))]
        return tuple(values) if origin is tuple else values
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(f"{name} must be a single value, got a {'mapping' if isinstance(value, dict) else 'list'}")
    if origin is typing.Literal or hint is str:
        raise ValueError(f"{name} must be a string, got {_short(value)} ({type(value).__name__}); quote it in YAML")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):  # the words 1 and 0
            return value == 1
        raise ValueError(f"{name} must be true or false, got {_short(value)}")
    if hint is int:
        if type(value) is not int:  # a bool is an int in Python, not here; nor is 3.0
            raise ValueError(f"{name} must be int, got {_short(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be float, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"{name} must be a finite number, got a huge int") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return value
    return value


def _check_yaml(cls, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every known field of a YAML mapping typed by :func:`_check`, groups entered; unknown keys are left
    for :func:`_instantiate` to name with the known ones."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            out[key] = value
        elif _is_config(hints[key]):
            out[key] = _check_yaml(hints[key], value, f"{prefix}{key}.") if isinstance(value, dict) else value
        else:
            out[key] = _check(value, hints[key], prefix + key)
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML keeps the last value without a word)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: let PyYAML say it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file; every problem one ``ValueError`` naming the file (and line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        loaded = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML: {' '.join(str(e.problem or e.context).split())}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ValueError(f"{path}: invalid YAML: nested too deeply") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}:1: a config file must be a mapping of field: value, got a {type(loaded).__name__}")
    bad = [k for k in loaded if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{path}: field names must be strings, got {_short(bad[0])}")
    return loaded


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
        values[name] = _coerce(_typed_text(text, hint, full), hint, full)


def _typed_text(text: str, hint: Any, name: str) -> str:
    """A string field typed on the command line decodes ``\\n``, ``\\t`` and ``\\\\`` (``step_sep=\\n`` is a
    newline, as ``procsup score --step-sep '\\n'`` reads it; YAML has its own escapes and is taken as written)."""
    from procsup.data.tokenize import unescape

    text_field = hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                                 and [a for a in typing.get_args(hint) if a is not type(None)] == [str])
    return unescape(text, name) if text_field else text


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
        try:
            values.update(_check_yaml(cls, _read_yaml(yaml_path)))
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(f"{yaml_path}") else f"{yaml_path}: {e}") from None
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
