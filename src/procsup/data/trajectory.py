"""The step-aware trajectory: procsup's one core type.

A trajectory is a demonstration ``(x, y, tau)`` in the notation of Process Aligned Learning
(Kartik & Shah, 2025, section 3): an ``input`` x, a final ``target`` y, and ``steps``
``tau = [(s_1, a_1), ..., (s_n, a_n)]``. Each step carries the ``action`` a_t (a reasoning line or an
action token), optionally the ``state`` s_t it was taken in, a correctness ``label`` and a ``key``: a
canonical id of the state, used to match equal states across examples (behavior consistency). ``meta``
is free-form JSON and round-trips untouched.

Labels: ``true``/``false`` and the integers ``0``/``1`` are hard labels (bool: a verdict); any other
number in [0, 1], ``0.0`` and ``1.0`` included, is a soft label (float: an estimate, e.g. Monte-Carlo).

Validation lives here, once: :func:`Trajectory.from_dict` either returns a valid trajectory or raises
:class:`TrajectoryError` naming the field that is wrong. Readers add the file and line. TRL's stepwise
records (``prompt``, ``completions``, ``labels``) are read by :func:`from_stepwise`, which maps them onto
the same checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

Label = bool | float


class TrajectoryError(ValueError):
    """A record that is not a valid trajectory. ``where`` is ``file:line`` when known."""

    def __init__(self, message: str, *, field: str | None = None, where: str | None = None):
        self.message = message
        self.field = field
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.where, f"field '{self.field}'" if self.field else None) if p]
        return _one_line(f"{': '.join(parts)}: {self.message}" if parts else self.message)

    def located(self, where: str) -> "TrajectoryError":
        """The same error, with ``file:line`` attached."""
        return TrajectoryError(self.message, field=self.field, where=where)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _one_line(text: str, limit: int = 500) -> str:
    """An error message safe to print on one line: control characters and lone surrogates escaped (a
    record's own key can end up in a message), and cut to ``limit`` characters (a 20 MB line's key too)."""
    text = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 64:  # repr() of a 5,000-digit int raises
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_json(record: dict[str, Any]) -> None:
    """Standard JSON only, anywhere in the record (``meta`` at any depth too): no NaN or Infinity (Python's
    json reads them, and ``1e999`` as inf; nothing downstream can write or compare them) and no lone
    surrogate (``"\\ud800"`` parses to a string that cannot be encoded as UTF-8). Iterative: a deeply
    nested ``meta`` must not hit the recursion limit."""
    todo: list[tuple[str, Any]] = [(k, v) for k, v in record.items()]
    while todo:
        where, value = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise TrajectoryError(f"{value} is not a JSON number (NaN and Infinity are not standard JSON)", field=where)
        if isinstance(value, str) and not value.isascii() and _has_surrogate(value):
            raise TrajectoryError("contains a lone surrogate (e.g. \\ud800): not valid Unicode text", field=where)
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and not k.isascii() and _has_surrogate(k):
                    raise TrajectoryError("a key contains a lone surrogate (e.g. \\ud800): not valid Unicode text",
                                          field=where)
                todo.append((f"{where}.{k}", v))
        elif isinstance(value, (list, tuple)):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(value))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_label(value: Any, field_name: str) -> Label | None:
    """None, a hard label (bool; the integers 0 and 1 too: ``1`` is how many tools write ``true``) or a soft
    label (float in [0, 1]). ``True == 1`` in Python, so the bool case is tested first."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # checked before float(): float() of a huge int overflows
        if value not in (0, 1):
            raise TrajectoryError(f"label must be a bool or a number in [0, 1], got {_short(value)}", field=field_name)
        return value == 1
    if isinstance(value, float):
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise TrajectoryError(f"label must be a bool or a number in [0, 1], got {value!r}", field=field_name)
        return value
    raise TrajectoryError(f"label must be a bool or a number in [0, 1], got {type(value).__name__}", field=field_name)


def _check_str(value: Any, field_name: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "null" if value is None else f"a {type(value).__name__}"
        raise TrajectoryError(f"must be a string, got {kind}", field=field_name)
    return value


@dataclass(frozen=True)
class Step:
    """One step ``(s_t, a_t)`` of a demonstration. The action may be empty (a policy that wrote nothing)."""

    action: str
    state: str | None = None
    label: Label | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        for name in ("state", "label", "key"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class Trajectory:
    """``(x, y, tau)``: input, target and the steps between them."""

    input: str
    target: str
    steps: tuple[Step, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))

    @property
    def labels(self) -> list[Label | None]:
        return [s.label for s in self.steps]

    @property
    def has_labels(self) -> bool:
        return bool(self.steps) and all(s.label is not None for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "target": self.target, "steps": [s.to_dict() for s in self.steps]}
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, record: Any) -> "Trajectory":
        """Validate one record (a parsed JSON object) and build the trajectory.

        Raises :class:`TrajectoryError` naming the offending field, e.g. ``steps[2].label``.
        """
        if not isinstance(record, dict):
            raise TrajectoryError(f"a trajectory must be a JSON object, got {type(record).__name__}")
        _check_json(record)
        unknown = set(record) - {"input", "target", "steps", "meta", "labels"}
        if unknown:
            hint = "; a TRL stepwise record needs prompt, completions and labels" if unknown & {"prompt", "completions"} else ""
            raise TrajectoryError(f"unknown field(s) {sorted(map(str, unknown))}; extra data belongs in 'meta'{hint}",
                                  field=str(sorted(map(str, unknown))[0]))
        for name in ("input", "target", "steps"):
            if name not in record:
                raise TrajectoryError("missing required field", field=name)
        x = _check_str(record["input"], "input", optional=False)
        y = _check_str(record["target"], "target", optional=False)
        raw_steps = record["steps"]
        if not isinstance(raw_steps, list):
            raise TrajectoryError(f"must be a list of steps, got {type(raw_steps).__name__}", field="steps")
        if not raw_steps:
            raise TrajectoryError("a trajectory needs at least one step", field="steps")
        steps = []
        for i, raw in enumerate(raw_steps):
            where = f"steps[{i}]"
            if isinstance(raw, str):  # shorthand: a bare action
                raw = {"action": raw}
            if not isinstance(raw, dict):
                raise TrajectoryError(f"a step must be an object or a string, got {type(raw).__name__}", field=where)
            extra = sorted(map(str, set(raw) - {"action", "state", "label", "key"}))
            if extra:
                raise TrajectoryError(f"unknown step field(s) {extra}", field=f"{where}.{extra[0]}")
            if "action" not in raw:
                raise TrajectoryError("missing required field", field=f"{where}.action")
            # An empty action is data, not a defect: a policy can stop a step without writing anything (a failed
            # sample's last step), a reward model should learn that such a step is wrong, and every file procsup
            # writes must read back. The step still has its separator, the token that carries its label.
            action = _check_str(raw["action"], f"{where}.action", optional=False)
            steps.append(
                Step(
                    action=action,
                    state=_check_str(raw.get("state"), f"{where}.state", optional=True),
                    label=_check_label(raw.get("label"), f"{where}.label"),
                    key=_check_str(raw.get("key"), f"{where}.key", optional=True),
                )
            )
        # Parallel form: a top-level "labels" list, one per step (as in TRL's stepwise format). A step
        # labelled both ways must get the same label twice: one never silently overrides the other.
        if "labels" in record and record["labels"] is not None:
            labels = record["labels"]
            if not isinstance(labels, list):
                raise TrajectoryError(f"must be a list, got {type(labels).__name__}", field="labels")
            if len(labels) != len(steps):
                raise TrajectoryError(f"{len(labels)} labels for {len(steps)} steps; they must be equal", field="labels")
            merged = []
            for i, (s, lab) in enumerate(zip(steps, labels)):
                lab = _check_label(lab, f"labels[{i}]")
                if lab is not None and s.label is not None and not _same_label(lab, s.label):
                    raise TrajectoryError(f"is {lab!r} but steps[{i}].label is {s.label!r}; give one of them, or make them "
                                          "agree", field=f"labels[{i}]")
                merged.append(Step(s.action, s.state, s.label if lab is None else lab, s.key))
            steps = merged
        meta = record.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TrajectoryError(f"must be an object, got {type(meta).__name__}", field="meta")
        return cls(input=x, target=y, steps=tuple(steps), meta=meta)


def _same_label(a: Label, b: Label) -> bool:
    """Equal value and kind: ``True`` (a verdict) and ``1.0`` (an estimate) are different labels."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


# --- TRL's stepwise format, the one foreign record shape the trajectory readers accept as they are ---

STEPWISE_COLUMNS = ("prompt", "completions", "labels")
STEPWISE_EXTRAS = ("target", "states", "keys")
"""Columns procsup adds to a stepwise record so that nothing is lost on the way through it: the target
and each step's state and key. TRL's ``PRMTrainer`` tokenizes ``prompt``, ``completions`` and ``labels``
and drops every other column."""


def is_stepwise(record: Any) -> bool:
    """A record in TRL's stepwise shape (``prompt``/``completions``), not a procsup one (``input``/``steps``)."""
    return isinstance(record, dict) and bool({"prompt", "completions"} & set(record)) and not {"input", "steps"} & set(record)


def _stepwise_field(field: str | None, target_field: str) -> str | None:
    """Rename a trajectory field in an error to its stepwise column (``steps[2]`` -> ``completions[2]``)."""
    if field is None:
        return None
    if field == "input":
        return "prompt"
    if field == "target":
        return target_field
    if field.startswith("meta."):  # an extra column
        return field[len("meta."):]
    m = re.match(r"^steps\[(\d+)\]\.(state|key)$", field)
    if m:
        return f"{m.group(2)}s[{m.group(1)}]"
    return re.sub(r"^steps(\[\d+\])?(\.action)?", r"completions\1", field)


def _check_stepwise(record: Any, target_field: str | None) -> None:
    """The checks :meth:`Trajectory.from_dict` does not make: TRL's columns, string steps, no null label."""
    if not isinstance(record, dict):
        raise TrajectoryError(f"a stepwise record must be a JSON object, got {type(record).__name__}")
    for name in STEPWISE_COLUMNS + ((target_field,) if target_field else ()):
        if name not in record:
            raise TrajectoryError("missing required field", field=name)
    for name in ("completions", "labels"):
        if not isinstance(record[name], list):
            raise TrajectoryError(f"must be a list, got {type(record[name]).__name__}", field=name)
    for i, completion in enumerate(record["completions"]):
        if not isinstance(completion, str):
            raise TrajectoryError(f"must be a string, got {type(completion).__name__}", field=f"completions[{i}]")
    for i, label in enumerate(record["labels"]):
        if label is None:
            raise TrajectoryError("must be a bool or a number in [0, 1], got null", field=f"labels[{i}]")
    for name in ("states", "keys"):
        column = record.get(name)
        if column is not None and (not isinstance(column, list) or len(column) != len(record["completions"])):
            raise TrajectoryError(f"must be a list with one entry per completion ({len(record['completions'])})", field=name)


def from_stepwise(record: Any, *, target_field: str | None = None) -> Trajectory:
    """A TRL stepwise record -> trajectory: ``prompt`` -> input, ``completions`` -> step actions,
    ``labels`` -> step labels (hard or soft, as in :meth:`Trajectory.from_dict`).

    Target policy: ``record[target_field]`` when ``target_field`` is given (then required), else the
    ``target`` column when there is one (procsup's own export writes it), else ``""``. Optional ``states``
    and ``keys`` columns (lists parallel to ``completions``) give back each step's state and key. Any
    other column is kept in ``meta``, so :func:`procsup.data.convert.to_stepwise` gives it back. Errors
    name the stepwise column (``labels[3]``).
    """
    _check_stepwise(record, target_field)
    name = target_field or "target"
    states, keys = record.get("states") or [None] * len(record["completions"]), record.get("keys") or []
    steps = [{"action": a, "state": states[i], **({"key": keys[i]} if keys else {})}
             for i, a in enumerate(record["completions"])]
    reserved = {*STEPWISE_COLUMNS, *STEPWISE_EXTRAS, name}
    as_trajectory = {
        "input": record["prompt"],
        "target": record.get(name, ""),
        "steps": steps,
        "labels": record["labels"],
        "meta": {k: v for k, v in record.items() if k not in reserved},
    }
    try:
        return Trajectory.from_dict(as_trajectory)
    except TrajectoryError as e:
        raise TrajectoryError(e.message, field=_stepwise_field(e.field, name)) from None
