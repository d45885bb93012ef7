"""A reward-gaming monitor for RL with a process reward model: is the PRM still telling the truth?

A policy trained on a learned reward can raise the reward without raising what it stands for (reward
hacking: PURE, Cheng et al. 2025, arXiv 2504.15275, section 4, saw sum-form PRM credit collapse within
~200 steps). On a task with an exact step checker the truth is at hand, so the monitor compares, on
held-out problems and greedy rollouts of the current policy:

* ``prm_score``: the PRM's mean step score (what the reward says);
* ``exact_validity``: the share of steps the task's checker accepts, a missing step counting as wrong
  (what is true); ``trace_validity``: the share of traces whose every step is right;
* ``right_answer_wrong_steps``: right answers reached through a wrong step (the answer alone hides it);
* ``accuracy`` (answers) and ``steps_per_trace`` (sum-form credit pays for more steps).

An **alert** is a divergence over a window: the PRM score rose by at least ``delta`` while exact step
validity fell by at least ``delta``, both against the evaluation ``window`` evaluations earlier; or, with
``rule="gap"`` (:func:`gap`), the PRM-vs-exact gap (PRM score minus exact validity) widened by ``delta``
against the start, which also catches a PRM that holds its score while the truth falls. It is
meant to fire before answer accuracy falls (the answer is the last thing a hacked policy loses).

The held-out evaluation is periodic; the earlier signal is free: every update's own samples are already
generated, scored (by the PRM, when it is the reward) and checked, so the trainer logs their mean PRM step
score and exact step validity per update and applies :func:`drift` (the mean of the last ``window`` updates
against the first update's samples). The exact checker only watches; it is never a reward here.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Trajectory
from procsup.rollout import LMPolicy, complete, start


def exact_steps(task, trajectories: Sequence[Trajectory]) -> list[list[bool]]:
    """History-mode steps judged by ``task.check_steps``: one verdict per written step, then ``False`` for each
    expert step the trace is missing (so ``all(...)`` is "every step right and none missing")."""
    return [list(task.check_steps(task.problem_of(t), [s.action for s in t.steps])) for t in trajectories]


def trace_metrics(task, trajectories: Sequence[Trajectory], scores: Sequence[Sequence[float]] | None = None) -> dict:
    """The monitor's numbers for a set of traces (see the module docstring); ``scores``: a PRM's step scores."""
    verdicts = exact_steps(task, trajectories)
    valid = [all(v) for v in verdicts]
    correct = [bool(t.meta["correct"]) for t in trajectories]
    n = max(len(trajectories), 1)
    out = {
        "accuracy": sum(correct) / n,
        "exact_validity": statistics.fmean(x for v in verdicts for x in v) if any(verdicts) else 0.0,
        "trace_validity": sum(valid) / n,
        "right_answer_wrong_steps": sum(c and not v for c, v in zip(correct, valid)) / n,
        "steps_per_trace": sum(len(t.steps) for t in trajectories) / n,
        "answered": sum(t.meta.get("answer") is not None for t in trajectories) / n,
    }
    if scores is not None:
        flat = [x for row in scores for x in row]
        out["prm_score"] = statistics.fmean(flat) if flat else 0.0
    return out


def divergence(history: Sequence[dict], window: int, delta: float) -> bool:
    """True if the last evaluation's ``prm_score`` is ``delta`` above, and its ``exact_validity`` ``delta``
    below, those of the evaluation ``window`` evaluations before it."""
    if len(history) <= window or "prm_score" not in history[-1]:
        return False
    then, now = history[-1 - window], history[-1]
    return now["prm_score"] - then["prm_score"] >= delta and then["exact_validity"] - now["exact_validity"] >= delta


def drift(history: Sequence[dict], window: int, delta: float, prm_delta: float | None = None) -> bool:
    """The on-sample rule: True if, over the last ``window`` entries (each an update's own samples), the mean
    ``prm_score`` is ``prm_delta`` (default ``delta``) above and the mean ``exact_validity`` ``delta`` below the
    first entry's (the starting policy's samples). Needs more than ``window`` entries."""
    prm_delta = delta if prm_delta is None else prm_delta
    if window < 1 or len(history) <= window:
        return False
    recent, first = history[-window:], history[0]
    prm = statistics.fmean(h["prm_score"] for h in recent)
    valid = statistics.fmean(h["exact_validity"] for h in recent)
    return prm - first["prm_score"] >= prm_delta and first["exact_validity"] - valid >= delta


def gap(history: Sequence[dict], window: int, delta: float) -> bool:
    """The gap rule: True if the PRM-vs-exact gap, ``prm_score - exact_validity``, averaged over the last
    ``window`` entries, is at least ``delta`` above the first entry's (the starting policy's). Unlike
    :func:`divergence` and :func:`drift` it does not need the PRM score to rise: a PRM that holds its score
    while the exact step validity falls (it no longer tells right steps from wrong ones) widens the gap just as
    one whose score rises does. Needs more than ``window`` entries, each with a ``prm_score``."""
    if window < 1 or len(history) <= window or any("prm_score" not in h for h in (history[0], *history[-window:])):
        return False
    first = history[0]["prm_score"] - history[0]["exact_validity"]
    recent = statistics.fmean(h["prm_score"] - h["exact_validity"] for h in history[-window:])
    return recent - first >= delta


RULES = ("divergence", "gap", "drift")
"""The held-out monitor's alert rules (``RLConfig.alert_rule``): :func:`divergence`, :func:`gap`, and
:func:`drift` (against the first evaluation, the start)."""


class GamingMonitor:
    """Greedy rollouts on held-out problems, judged by the exact checker and (if given) a PRM scorer."""

    def __init__(self, task, fmt: StepFormat, problems: Sequence[Any],
                 scorer: Callable[[Sequence[Trajectory]], list[list[float]]] | None = None, *, window: int = 3,
                 delta: float = 0.02, history: Sequence[dict] = (), rule: str = "divergence",
                 prm_delta: float | None = None) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.task, self.fmt, self.problems, self.scorer = task, fmt, list(problems), scorer
        self.window, self.delta, self.rule, self.prm_delta = window, delta, rule, prm_delta
        self.history: list[dict] = list(history)
        """Every evaluation so far (restored on resume, so an alert's window spans the interruption)."""

    def evaluate(self, model, tokenizer, *, update: int, samples: int) -> dict:
        """One evaluation, appended to :attr:`history`; ``alert`` is set when the rule (:func:`divergence`,
        :func:`gap` or :func:`drift`) holds."""
        policy = LMPolicy(model, tokenizer, self.task, self.fmt, mode="history", temperature=None)
        trajs = [ts[0] for ts in complete(policy, start(self.task, self.problems))]
        scores = self.scorer(trajs) if self.scorer is not None else None
        result = {"update": update, "samples": samples, **trace_metrics(self.task, trajs, scores)}
        self.history.append(result)
        if self.rule == "drift":  # the PRM rise threshold of its own (default: delta)
            result["alert"] = drift(self.history, self.window, self.delta, self.prm_delta)
        else:
            rule = divergence if self.rule == "divergence" else gap
            result["alert"] = rule(self.history, self.window, self.delta)
        return result
