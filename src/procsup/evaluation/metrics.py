"""Task metrics of a policy's rollouts: exact match, trace validity, "right answer, wrong steps".

Per problem, then averaged: ``exact_match`` (right final answer), ``trace_valid`` (every step right and
the trace complete: as many steps as the expert in history mode, a finished episode in state mode),
``right_answer_wrong_steps`` (right answer although some step was wrong: the shortcut that outcome
supervision cannot see). Outcome-only rollouts have no trace, so their trace metrics are None.
"""

from __future__ import annotations

from typing import Any, Sequence

from procsup.data.trajectory import Trajectory
from procsup.rollout import complete, start
from procsup.scorers import exact_labels


def trace_valid(task, mode: str, traj: Trajectory) -> bool:
    """Every step right by the task's exact checker, and the trace complete (see the module doc)."""
    if mode == "history":  # check_steps counts each missing step as one more wrong step
        verdict = task.check_steps(task.problem_of(traj), [s.action for s in traj.steps])
        return bool(verdict) and all(verdict)
    ok = exact_labels(task, "state", [traj])[0]
    return bool(ok) and all(ok) and traj.meta.get("answer") is not None  # the answer exists once the task is done


def summarize(task, mode: str, trajectories: Sequence[Trajectory]) -> dict[str, float | None]:
    """The metrics of one rollout per problem (``meta['correct']`` from :func:`procsup.rollout.complete`)."""
    n = len(trajectories)
    if n == 0:
        raise ValueError("no rollouts to summarize")
    correct = [bool(t.meta["correct"]) for t in trajectories]
    em = sum(correct) / n
    if mode == "outcome":
        return {"exact_match": em, "trace_valid": None, "right_answer_wrong_steps": None, "n": n}
    valid = [trace_valid(task, mode, t) for t in trajectories]
    return {
        "exact_match": em,
        "trace_valid": sum(valid) / n,
        "right_answer_wrong_steps": sum(c and not v for c, v in zip(correct, valid)) / n,
        "n": n,
    }


def evaluate(policy, problems: Sequence[Any]) -> dict[str, float | None]:
    """:func:`summarize` of one rollout of ``policy`` per problem (greedy if the policy is)."""
    trajectories = [samples[0] for samples in complete(policy, start(policy.task, problems))]
    return summarize(policy.task, policy.mode, trajectories)
