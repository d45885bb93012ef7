"""Converters between :class:`Trajectory` and other formats: ``datasets.Dataset`` and TRL stepwise.

TRL's "stepwise supervision" format (the dataset type of its ``PRMTrainer``) is one record per
solution: ``{"prompt": str, "completions": [str, ...], "labels": [bool, ...]}``, one label per
completion (= step). It has no place for a target, a step's state or key: procsup writes them as extra
columns (``target``, ``states``, ``keys``), which TRL's trainer drops, so the round trip through it
loses nothing. TRL casts every label with ``int()`` (0.7 -> 0), so soft labels are never written
as they are: :func:`to_stepwise` refuses them unless given a threshold. The trajectory readers
(:func:`procsup.data.io.read_jsonl`) read stepwise records as they are (:func:`from_stepwise`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value

from procsup.data.io import check_paths, iter_records, read_jsonl, write_jsonl, write_records
from procsup.data.trajectory import STEPWISE_COLUMNS, STEPWISE_EXTRAS, Step, Trajectory, TrajectoryError, from_stepwise

__all__ = ["FEATURES", "STEPWISE_COLUMNS", "convert_file", "from_dataset", "from_stepwise", "read_stepwise_jsonl",
           "to_dataset", "to_stepwise", "write_stepwise_jsonl"]

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


def to_stepwise(trajectory: Trajectory, *, target_field: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """A trajectory -> TRL stepwise record; every step must be labelled.

    Hard labels stay bools. A soft label is an error (TRL's ``PRMTrainer`` casts labels with ``int()``,
    so 0.7 would silently train as 0) unless ``threshold`` is given: then ``label >= threshold`` is the
    hard label written. The target goes to the ``target`` column (``target_field`` renames it) unless it
    is empty; each step's state and key to the ``states`` and ``keys`` columns when any step has one;
    meta entries become extra columns. :func:`from_stepwise` reads all of them back.
    """
    labels = []
    for i, step in enumerate(trajectory.steps):
        if step.label is None:
            raise TrajectoryError("the stepwise format needs a label on every step", field=f"steps[{i}].label")
        if not isinstance(step.label, bool):
            if threshold is None:
                raise TrajectoryError(f"soft label {step.label!r}: TRL casts stepwise labels with int() (0.7 becomes 0); "
                                      "give a threshold to write hard labels, or keep the procsup format",
                                      field=f"steps[{i}].label")
            labels.append(step.label >= threshold)
        else:
            labels.append(step.label)
    name = target_field or "target"
    reserved = {*STEPWISE_COLUMNS, *STEPWISE_EXTRAS, name}
    clash = sorted(k for k in trajectory.meta if k in reserved)
    if clash:
        raise TrajectoryError(f"key {clash[0]!r} clashes with a stepwise column", field=f"meta.{clash[0]}")
    record: dict[str, Any] = {
        "prompt": trajectory.input,
        "completions": [s.action for s in trajectory.steps],
        "labels": labels,
    }
    if trajectory.target or target_field:
        record[name] = trajectory.target
    if any(s.state is not None for s in trajectory.steps):
        record["states"] = [s.state for s in trajectory.steps]
    if any(s.key is not None for s in trajectory.steps):
        record["keys"] = [s.key for s in trajectory.steps]
    return {**record, **trajectory.meta}


def read_stepwise_jsonl(
    path: str | Path, *, rejects: str | Path | None = None, target_field: str | None = None
) -> list[Trajectory]:
    """Read a JSONL file of TRL stepwise records; errors and ``rejects`` as in :func:`procsup.data.io.iter_records`."""
    parse = functools.partial(from_stepwise, target_field=target_field)
    return list(iter_records(path, parse, rejects=rejects))


def write_stepwise_jsonl(
    trajectories: Iterable[Trajectory], path: str | Path, *, target_field: str | None = None,
    threshold: float | None = None,
) -> None:
    """Atomically write trajectories as TRL stepwise JSONL (see :func:`to_stepwise`)."""
    records = (to_stepwise(t, target_field=target_field, threshold=threshold) for t in trajectories)
    write_records(records, path)


def convert_file(
    src: str | Path, dst: str | Path, to: str, *, rejects: str | Path | None = None, threshold: float | None = None
) -> int:
    """``procsup convert``: read ``src`` (procsup or TRL stepwise records), write ``dst`` atomically in the
    format ``to`` (``"stepwise"`` or ``"procsup"``); returns the number of records written. The three
    paths are checked first (:func:`procsup.data.io.check_paths`): the output or the reject file must not
    be the input or each other, or one would overwrite the other."""
    if to not in ("stepwise", "procsup"):
        raise ValueError(f"to must be 'stepwise' or 'procsup', got {to!r}")
    check_paths(inputs={"input": src}, outputs={"output": dst, "rejects": rejects})
    trajectories = read_jsonl(src, rejects=rejects)  # read whole before writing: a bad record writes nothing
    if to == "stepwise":
        write_stepwise_jsonl(trajectories, dst, threshold=threshold)
    else:
        write_jsonl(trajectories, dst)
    return len(trajectories)
