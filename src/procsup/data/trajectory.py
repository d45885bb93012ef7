"""The step-aware trajectory: procsup's one core type.

A trajectory is a demonstration ``(x, y, tau)`` in the notation of Process Aligned Learning
(Kartik & Shah, 2025, section 3): an ``input`` x, a final ``target`` y, and ``steps``
``tau = [(s_1, a_1), ..., (s_n, a_n)]``. Each step carries the ``action`` a_t (a reasoning line or an
action token), optionally the ``state`` s_t it was taken in, a correctness ``label`` (bool, or a float
in [0, 1] for soft labels) and a ``key``: a canonical id of the state, used to match equal states
across examples (behavior consistency). ``meta`` is free-form and round-trips untouched.

Validation lives here, once: :func:`Trajectory.from_dict` either returns a valid trajectory or raises
:class:`TrajectoryError` naming the field that is wrong. Readers add the file and line.
"""

from __future__ import annotations

import math
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
        return f"{': '.join(parts)}: {self.message}" if parts else self.message

    def located(self, where: str) -> "TrajectoryError":
        """The same error, with ``file:line`` attached."""
        return TrajectoryError(self.message, field=self.field, where=where)


def _check_label(value: Any, field_name: str) -> Label | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, int) and not 0 <= value <= 1:  # checked first: float() of a huge int overflows
            raise TrajectoryError(f"label must be a bool or a number in [0, 1], got {value!r}", field=field_name)
        value = float(value)
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
    """One step ``(s_t, a_t)`` of a demonstration."""

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
        unknown = set(record) - {"input", "target", "steps", "meta", "labels"}
        if unknown:
            raise TrajectoryError(f"unknown field(s) {sorted(unknown)}; extra data belongs in 'meta'", field=sorted(unknown)[0])
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
            extra = set(raw) - {"action", "state", "label", "key"}
            if extra:
                raise TrajectoryError(f"unknown step field(s) {sorted(extra)}", field=f"{where}.{sorted(extra)[0]}")
            if "action" not in raw:
                raise TrajectoryError("missing required field", field=f"{where}.action")
            action = _check_str(raw["action"], f"{where}.action", optional=False)
            if action == "":
                raise TrajectoryError("a step's action must not be empty", field=f"{where}.action")
            steps.append(
                Step(
                    action=action,
                    state=_check_str(raw.get("state"), f"{where}.state", optional=True),
                    label=_check_label(raw.get("label"), f"{where}.label"),
                    key=_check_str(raw.get("key"), f"{where}.key", optional=True),
                )
            )
        # Parallel form: a top-level "labels" list, one per step (as in TRL's stepwise format).
        if "labels" in record and record["labels"] is not None:
            labels = record["labels"]
            if not isinstance(labels, list):
                raise TrajectoryError(f"must be a list, got {type(labels).__name__}", field="labels")
            if len(labels) != len(steps):
                raise TrajectoryError(f"{len(labels)} labels for {len(steps)} steps; they must be equal", field="labels")
            steps = [
                Step(s.action, s.state, _check_label(lab, f"labels[{i}]"), s.key) for i, (s, lab) in enumerate(zip(steps, labels))
            ]
        meta = record.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TrajectoryError(f"must be an object, got {type(meta).__name__}", field="meta")
        return cls(input=x, target=y, steps=tuple(steps), meta=meta)
