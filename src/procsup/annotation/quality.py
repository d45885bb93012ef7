"""How good automatic step labels are, judged by a task's exact checkers.

:func:`exact_unit_labels` gives the truth for each labelled unit (:mod:`procsup.annotation.prefixes`):
:func:`procsup.scorers.exact_labels` on the steps (each step judged by itself: in state mode, an action in
the state it was taken in, so a right action after an earlier error is right), and in history mode the
answer line judged by the answer checker. :func:`label_quality` compares labels with it.

Metrics (fractions; counts of labelled units, not trajectories, unless named per trajectory):

* ``step_accuracy``: labelled units whose hard label equals the exact one;
* ``step_accuracy_to_first_error``: the same over units up to and including the exact first error (every
  unit of a right trace), where "can the policy still succeed" and "is the step right" mean the same;
* ``coverage``: share of units labelled (first-error search leaves the units after the error unlabelled);
* ``first_error_accuracy``: trajectories whose first unit labelled wrong (or none) is the exact first
  wrong unit (or none); ``first_error_accuracy_wrong``: the same over the trajectories with an exact error;
* ``wrong_precision``: units labelled wrong that are wrong; ``wrong_recall``: wrong units labelled wrong
  (an unlabelled unit counts as not flagged); ``wrong_precision_to_first_error`` and
  ``wrong_recall_first_error``: the same, counting only the exact first errors as the wrong units to find;
* ``rollouts_per_trajectory``, ``policy_samples_per_trajectory``: read from ``meta['annotation']``.
"""

from __future__ import annotations

import statistics
from typing import Sequence

from procsup.annotation.consensus import first_wrong, hard
from procsup.data.trajectory import Trajectory
from procsup.scorers import exact_labels


def exact_unit_labels(task, mode: str, trajectories: Sequence[Trajectory], answer_step: bool) -> list[list[bool]]:
    """Exact labels of each trajectory's units (the steps, and with ``answer_step`` the answer line, judged by
    ``task.check_answer`` on ``meta['answer']``). ``trajectories`` are the unlabelled ones (no answer step)."""
    steps = exact_labels(task, mode, trajectories)
    if not answer_step:
        return steps
    return [row + [bool(task.check_answer(task.problem_of(t), t.meta.get("answer")))]
            for row, t in zip(steps, trajectories)]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def label_quality(labelled: Sequence[Trajectory], exact: Sequence[Sequence[bool]], threshold: float = 0.5) -> dict:
    """Metrics of ``labelled``'s step labels (hard: :func:`~procsup.annotation.consensus.hard`) against
    ``exact`` (one list per trajectory, one bool per step); see the module docstring."""
    if len(labelled) != len(exact):
        raise ValueError(f"{len(labelled)} labelled trajectories for {len(exact)} exact label rows")
    n_lab = n_ok = n_units = 0
    n_tf = n_tf_ok = 0
    flagged = flagged_wrong = wrong = caught = 0
    flagged_tf = flagged_first = firsts = caught_first = 0
    fe_ok, fe_wrong_ok, n_wrong_traj = 0, 0, 0
    for traj, truth in zip(labelled, exact):
        labels = [hard(s.label, threshold) for s in traj.steps]
        if len(labels) != len(truth):
            raise ValueError(f"{len(labels)} labels for {len(truth)} exact labels")
        first = first_wrong(truth)
        reach = first or len(truth)
        for t, (lab, ok) in enumerate(zip(labels, truth), start=1):
            n_units += 1
            wrong += not ok
            if lab is None:
                continue
            n_lab += 1
            n_ok += lab == ok
            flagged += lab is False
            flagged_wrong += lab is False and not ok
            caught += lab is False and not ok
            if t <= reach:
                n_tf += 1
                n_tf_ok += lab == ok
                flagged_tf += lab is False
                flagged_first += lab is False and t == first
        firsts += first is not None
        caught_first += first is not None and labels[first - 1] is False
        guess = first_wrong(labels)
        fe_ok += guess == first
        if first is not None:
            n_wrong_traj += 1
            fe_wrong_ok += guess == first
    notes = [t.meta.get("annotation", {}) for t in labelled]
    return {
        "trajectories": len(labelled), "units": n_units,
        "step_accuracy": _ratio(n_ok, n_lab), "step_accuracy_to_first_error": _ratio(n_tf_ok, n_tf),
        "coverage": _ratio(n_lab, n_units),
        "first_error_accuracy": _ratio(fe_ok, len(labelled)), "first_error_accuracy_wrong": _ratio(fe_wrong_ok, n_wrong_traj),
        "wrong_precision": _ratio(flagged_wrong, flagged), "wrong_recall": _ratio(caught, wrong),
        "wrong_precision_to_first_error": _ratio(flagged_first, flagged_tf),
        "wrong_recall_first_error": _ratio(caught_first, firsts),
        "rollouts_per_trajectory": statistics.fmean(n.get("rollouts", 0) for n in notes) if notes else 0.0,
        "policy_samples_per_trajectory": statistics.fmean(n.get("policy_samples", 0) for n in notes) if notes else 0.0,
    }
