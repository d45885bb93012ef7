"""Step scorers: plain callables that map trajectories to one score per step.

``StepScorer = Callable[[Sequence[Trajectory]], list[list[float]]]``: ``scorer(trajs)[i][t]`` is the score
of step t of trajectory i (for a PRM, P(step is correct); for an exact checker, 1.0 or 0.0). Search,
annotation and RL take any scorer; a PRM, a task's exact checker, a Monte Carlo estimate or a hand-written
lambda in a test all fit.
"""

from __future__ import annotations

from typing import Callable, Sequence

from procsup.data import views
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Trajectory

StepScorer = Callable[[Sequence[Trajectory]], list[list[float]]]


def prm_scorer(model, tokenizer, fmt: StepFormat, layout: str | None = None, batch_size: int = 32) -> StepScorer:
    """A PRM (a token-classification model, :mod:`procsup.models.prm`) as a scorer, reading each trajectory
    as it was trained: ``layout=None``, the steps as written (``x · sep_in · a_1 · sep · …``); ``trace`` or
    ``step``, a state-mode trajectory in one of the views of :mod:`procsup.data.views`."""
    from procsup.models import prm  # torch and transformers: only when a PRM is used

    if layout is not None and layout not in views.LAYOUTS:
        raise ValueError(f"layout must be None or one of {views.LAYOUTS}, got {layout!r}")

    def score(trajectories: Sequence[Trajectory]) -> list[list[float]]:
        if not trajectories:
            return []
        if layout is None:
            return prm.score(model, tokenizer, trajectories, fmt, batch_size)
        return prm.score_in_layout(model, tokenizer, trajectories, fmt, layout, batch_size)

    return score


def load_prm_scorer(path, layout: str | None = None, batch_size: int = 32, *, step_sep: str | None = None,
                    input_sep: str | None = None) -> StepScorer:
    """:func:`prm_scorer` of the PRM saved in ``path`` (:func:`procsup.models.prm.load_prm`), with the step
    format it was trained with; a given separator must agree with it (an error names both)."""
    from procsup.models.prm import load_prm
    from procsup.models.saved import resolve_format

    model, tokenizer, saved = load_prm(path)
    fmt = resolve_format(saved, path, input_sep=input_sep, step_sep=step_sep)
    return prm_scorer(model, tokenizer, fmt, layout, batch_size)


def exact_labels(task, mode: str, trajectories: Sequence[Trajectory]) -> list[list[bool]]:
    """Each step judged by the task's exact checker. History mode: ``task.check_steps`` (a step beyond the
    expert's last is wrong); state mode: ``task.check_state_step`` in the state the executor reaches by
    replaying the trajectory's actions (steps after one that cannot be applied are wrong)."""
    out = []
    for traj in trajectories:
        problem = task.problem_of(traj)
        actions = [s.action for s in traj.steps]
        if mode == "state":
            ok, state = [], task.initial_state(problem)
            for action in actions:
                ok.append(state is not None and task.check_state_step(state, action))
                state = None if state is None else task.execute(state, action)
        else:
            verdict = task.check_steps(problem, actions)
            ok = verdict[: len(actions)] + [False] * (len(actions) - len(verdict))
        out.append([bool(v) for v in ok])
    return out


def exact_scorer(task, mode: str) -> StepScorer:
    """The task's exact step checker as a scorer (1.0 right, 0.0 wrong; see :func:`exact_labels`)."""
    if mode not in ("history", "state"):
        raise ValueError(f"mode must be history or state, got {mode!r}")
    return lambda trajectories: [[float(v) for v in row] for row in exact_labels(task, mode, trajectories)]


PLANTED_FLAWS = ("repeat", "past-end")
"""The flaws :func:`planted_scorer` can plant."""


def planted_scorer(task, flaw: str = "repeat") -> StepScorer:
    """A **hand-built flawed scorer** (not a learned PRM), for reward-hacking experiments: the task's exact
    history-mode checker (:func:`exact_scorer`) except on one planted pattern, which scores 1.0 whatever the
    checker says. Real signal (every other step is judged exactly) plus one exploitable flaw, the way a learned
    PRM may over-rate a pattern its labels never showed wrong:

    * ``repeat``: a step whose action is the previous step's, written again (a labeler that waves through a
      line it has just accepted);
    * ``past-end``: a step after the expert's last one (a labeler that checks each column but not that the
      trace stops there; the checker counts such a step wrong).

    Summed step rewards (sum-form credit) then pay for every extra planted step, so a policy can raise its
    reward by padding its trace; under min-form credit a step scored 1.0 cannot raise a return."""
    if flaw not in PLANTED_FLAWS:
        raise ValueError(f"flaw must be one of {PLANTED_FLAWS}, got {flaw!r}")
    exact = exact_scorer(task, "history")

    def planted(trajectory: Trajectory) -> list[bool]:  # per written step: is it the planted pattern?
        actions = [s.action for s in trajectory.steps]
        if flaw == "repeat":
            return [t > 0 and a == actions[t - 1] for t, a in enumerate(actions)]
        last = len(task.expert(task.problem_of(trajectory)).steps)
        return [t >= last for t in range(len(actions))]

    def score(trajectories: Sequence[Trajectory]) -> list[list[float]]:
        return [[1.0 if hit else v for hit, v in zip(planted(traj), row)]
                for traj, row in zip(trajectories, exact(trajectories))]

    return score
