"""Converters between :class:`Trajectory` and other formats: ``datasets.Dataset`` and TRL stepwise.

TRL's "stepwise supervision" format (the dataset type of its ``PRMTrainer``) is one record per
solution: ``{"prompt": str, "completions": [str, ...], "labels": [bool, ...]}``, one label per
completion (= step). It has no place for a target, a step's state or key, so those are handled by
the explicit policy documented on :func:`from_stepwise` and :func:`to_stepwise`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value

from procsup.data.io import iter_records, write_records
from procsup.data.trajectory import Step, Trajectory, TrajectoryError

# An Arrow column has one type, so a list of labels mixing True and 0.7 would come back as 1.0 and
# 0.7: the hard/soft distinction (a human verdict vs a Monte-Carlo estimate) would be lost. We keep
# `label` as float64 (numeric, filterable) plus a `label_is_bool` flag, rather than JSON-encoding
# the steps, so the column stays queryable with plain datasets/Arrow operations. `meta` is free-form
# (no fixed schema), hence a JSON string.
FEATURES = Features(
    {
        "input": Value("string"),
        "target": Value("string"),
        "steps": List(
            {
                "action": Value("string"),
                "state": Value("string"),
                "label": Value("float64"),
                "label_is_bool": Value("bool"),
                "key": Value("string"),
            }
        ),
        "meta": Value("string"),
    }
)

STEPWISE_COLUMNS = ("prompt", "completions", "labels")


def _dump_meta(meta: dict[str, Any], where: str) -> str:
    try:
        return json.dumps(meta, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TrajectoryError(f"must be JSON-serializable: {e}", field="meta", where=where) from None


def _step_row(step: Step) -> dict[str, Any]:
    label = None if step.label is None else float(step.label)
    return {
        "action": step.action,
        "state": step.state,
        "label": label,
        "label_is_bool": isinstance(step.label, bool),
        "key": step.key,
    }


def to_dataset(trajectories: Iterable[Trajectory]) -> Dataset:
    """Trajectories -> ``datasets.Dataset`` with the columns of :data:`FEATURES`."""
    columns: dict[str, list[Any]] = {name: [] for name in FEATURES}
    for i, t in enumerate(trajectories):
        columns["input"].append(t.input)
        columns["target"].append(t.target)
        columns["steps"].append([_step_row(s) for s in t.steps])
        columns["meta"].append(_dump_meta(t.meta, where=f"trajectories[{i}]"))
    return Dataset.from_dict(columns, features=FEATURES)


def _row_label(raw: dict[str, Any], field: str) -> Any:
    label = raw.get("label")
    if label is None or not raw.get("label_is_bool"):
        return label
    if label not in (0.0, 1.0):  # never cast a soft label to bool silently
        raise TrajectoryError(f"label_is_bool is set but the label is {label!r}", field=field)
    return label == 1.0


def _row_record(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset row -> the dict form :meth:`Trajectory.from_dict` validates."""
    steps = []
    for i, raw in enumerate(row.get("steps") or []):
        step = {k: raw.get(k) for k in ("action", "state", "key")}
        step["label"] = _row_label(raw, f"steps[{i}].label")
        steps.append({k: v for k, v in step.items() if v is not None})
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as e:
            raise TrajectoryError(f"must be a JSON string: {e}", field="meta") from None
    return {"input": row.get("input"), "target": row.get("target"), "steps": steps, "meta": meta}


def from_dataset(ds: Dataset) -> list[Trajectory]:
    """``datasets.Dataset`` (as made by :func:`to_dataset`) -> validated trajectories.

    Raises :class:`TrajectoryError` located at ``row i``.
    """
    out = []
    for i, row in enumerate(ds):
        try:
            out.append(Trajectory.from_dict(_row_record(row)))
        except TrajectoryError as e:
            raise e.located(f"row {i}") from None
    return out


def _stepwise_field(field: str | None, target_field: str | None) -> str | None:
    """Rename a trajectory field in an error to its stepwise column (``steps[2]`` -> ``completions[2]``)."""
    if field is None:
        return None
    if field == "input":
        return "prompt"
    if field == "target":
        return target_field or "target"
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


def from_stepwise(record: Any, *, target_field: str | None = None) -> Trajectory:
    """A TRL stepwise record -> trajectory: ``prompt`` -> input, ``completions`` -> step actions,
    ``labels`` -> step labels (bools, or floats in [0, 1] for soft labels).

    Target policy: TRL's format has no target, so ``target`` is ``record[target_field]`` when
    ``target_field`` is given (then required) and ``""`` otherwise. Any other column is kept in
    ``meta``, so :func:`to_stepwise` gives it back. Errors name the stepwise column (``labels[3]``).
    """
    _check_stepwise(record, target_field)
    reserved = {*STEPWISE_COLUMNS, target_field}
    as_trajectory = {
        "input": record["prompt"],
        "target": record[target_field] if target_field else "",
        "steps": record["completions"],
        "labels": record["labels"],
        "meta": {k: v for k, v in record.items() if k not in reserved},
    }
    try:
        return Trajectory.from_dict(as_trajectory)
    except TrajectoryError as e:
        raise TrajectoryError(e.message, field=_stepwise_field(e.field, target_field)) from None


def to_stepwise(trajectory: Trajectory, *, target_field: str | None = None) -> dict[str, Any]:
    """A trajectory -> TRL stepwise record; every step must be labelled.

    Labels keep their type: bools stay bools, soft labels stay floats (TRL's own trainer expects
    bools). Meta entries become extra columns. Lossy by design, as the format has no place for
    them: each step's ``state`` and ``key``, and the target unless ``target_field`` names a column.
    """
    for i, step in enumerate(trajectory.steps):
        if step.label is None:
            raise TrajectoryError("the stepwise format needs a label on every step", field=f"steps[{i}].label")
    reserved = {*STEPWISE_COLUMNS, target_field}
    clash = sorted(k for k in trajectory.meta if k in reserved)
    if clash:
        raise TrajectoryError(f"key {clash[0]!r} clashes with a stepwise column", field=f"meta.{clash[0]}")
    record: dict[str, Any] = {
        "prompt": trajectory.input,
        "completions": [s.action for s in trajectory.steps],
        "labels": [s.label for s in trajectory.steps],
    }
    if target_field:
        record[target_field] = trajectory.target
    return {**record, **trajectory.meta}


def read_stepwise_jsonl(
    path: str | Path, *, rejects: str | Path | None = None, target_field: str | None = None
) -> list[Trajectory]:
    """Read a JSONL file of TRL stepwise records; errors and ``rejects`` as in :func:`procsup.data.io.iter_records`."""
    parse = functools.partial(from_stepwise, target_field=target_field)
    return list(iter_records(path, parse, rejects=rejects))


def write_stepwise_jsonl(
    trajectories: Iterable[Trajectory], path: str | Path, *, target_field: str | None = None
) -> None:
    """Atomically write trajectories as TRL stepwise JSONL (see :func:`to_stepwise`)."""
    write_records((to_stepwise(t, target_field=target_field) for t in trajectories), path)
