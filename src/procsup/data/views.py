"""How a reward model reads a trajectory: a state-mode one as one trace or as one row per step, and any
one with its answer as a last step (:func:`with_answer_step`).

A state-mode trajectory (``task.state_trajectory``, or a state-mode policy's rollout from
:func:`procsup.rollout.complete`) stores at each step the rendered state ``s_t`` the
policy saw and the action ``a_t`` it took there (``Step(action=a_t, state=s_t)``). A reward model reads it
in one of two layouts (:data:`LAYOUTS`):

* ``trace`` (:func:`trace_view`): one row, the problem's input and then one step ``s_t + joiner + a_t``
  per action, so each score sees the whole history. An outcome reward model needs this view: it judges
  the finished solution.
* ``step`` (:func:`step_rows`): one row per step, the state ``s_t`` as input and ``a_t`` as the only
  step: each action judged in the state it was taken in, as the state-mode policy (PAL's
  ``M(s_t) -> a_t``) took it. A verifier then compares like with like: every row of one state differs
  only in its action.
"""

from __future__ import annotations

from typing import Sequence

from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory, TrajectoryError

STATE_JOINER = " -> "
"""Joins a step's state and action into one step text in the trace layout: ``"3+6+0 -> 9,0"``."""

LAYOUTS = ("trace", "step")


def _state_of(traj: Trajectory, t: int) -> str:
    state = traj.steps[t].state
    if state is None:
        raise TrajectoryError(f"step {t} has no state: a state-mode trajectory needs each step's state",
                              field=f"steps[{t}].state")
    return state


def trace_view(traj: Trajectory, joiner: str = STATE_JOINER) -> Trajectory:
    """``traj`` with each step's action written as ``state + joiner + action`` (labels and keys kept)."""
    steps = tuple(Step(_state_of(traj, t) + joiner + s.action, s.state, s.label, s.key) for t, s in enumerate(traj.steps))
    return Trajectory(traj.input, traj.target, steps, traj.meta)


def step_rows(traj: Trajectory) -> list[Trajectory]:
    """One single-step trajectory per step: input ``s_t``, step ``a_t`` with its label and key."""
    return [Trajectory(_state_of(traj, t), "", (Step(s.action, label=s.label, key=s.key),), traj.meta)
            for t, s in enumerate(traj.steps)]


def in_layout(trajectories: Sequence[Trajectory], layout: str, joiner: str = STATE_JOINER) -> list[Trajectory]:
    """The rows a reward model trains on or scores for ``trajectories`` in ``layout``."""
    if layout == "trace":
        return [trace_view(t, joiner) for t in trajectories]
    if layout == "step":
        return [row for t in trajectories for row in step_rows(t)]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def regroup(row_scores: Sequence[list[float]], trajectories: Sequence[Trajectory], layout: str) -> list[list[float]]:
    """Per-trajectory step scores from the scores of :func:`in_layout`'s rows (the inverse of its flattening)."""
    if layout == "trace":
        return [list(s) for s in row_scores]
    it = iter(row_scores)
    return [[next(it)[0] for _ in t.steps] for t in trajectories]


def with_answer_step(traj: Trajectory, fmt: StepFormat, label: bool | None = None) -> Trajectory:
    """``traj`` with its final answer appended as one more step, ``answer_prefix + answer`` (``meta['answer']``,
    or the target if absent; an empty answer when none was generated), labelled ``label``.

    The ``steps`` layout that a PRM reads has no answer: a trace whose steps are right but whose answer
    was copied wrong would look perfect. With the answer as the last step (as PRM800K's last step holds
    the answer), a PRM judges it too, and an outcome reward model (ORM) is a PRM whose only label sits on
    that step."""
    answer = traj.meta.get("answer", traj.target)
    step = Step(fmt.answer_prefix + (answer or ""), label=label)
    return Trajectory(traj.input, traj.target, (*traj.steps, step), traj.meta)
