"""Oracle step labels on synthetic tasks: the task's exact checker is the annotator.

Sources of labelled traces for training or evaluating a process reward model:

* :func:`label_traces` samples a policy (:func:`procsup.rollout.complete`, history or state mode) and
  labels every step with the exact checkers: the automatic labelling that Math-Shepherd (Wang et al.,
  2024) approximates with rollouts, here exact. State mode can inject corruptions into the rollouts;
* :func:`oracle_label` labels one history-mode trace with ``task.check_steps``;
* :func:`inject_corruptions` corrupts steps of an expert trace (``task.corrupt``) and labels the result
  with the same checker, so a corruption that happens to be valid keeps a True label;
* :func:`orm_labels` turns a labelled trace into an outcome reward model's: only the last step labelled.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Sequence

from procsup.data.trajectory import Step, Trajectory
from procsup.data.views import with_answer_step
from procsup.rollout import complete, start
from procsup.scorers import exact_labels


def label_traces(policy, problems: Sequence[Any], samples: int, seed: int, corrupt_rate: float = 0.0
                 ) -> list[list[Trajectory]]:
    """``samples`` rollouts of ``policy`` per problem, every step labelled by the task's checker.

    History mode (the policy writes its steps and the answer line): :func:`oracle_label`, and the answer
    appended as one more step labelled by the answer checker (:func:`~procsup.data.views.with_answer_step`), since copying
    errors in the answer line are errors no step label sees. State mode (the executor applies the actions
    and composes the answer, so a right trace has a right answer): each action judged in the state it was
    taken in. ``corrupt_rate > 0`` (state mode) replaces each sampled action, with that probability, by
    ``task.corrupt(action, rng)`` *before* the checker and the executor see it, so the rollout goes on
    from where the corrupted action leads and a corruption that happens to be right stays True;
    ``meta['corrupted']`` lists the changed steps. Sampling is seeded by ``seed`` (and corruptions by
    ``random.Random(seed)``); samples depend on the policy's batch size."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 <= corrupt_rate <= 1.0:
        raise ValueError(f"corrupt_rate must be in [0, 1], got {corrupt_rate}")
    task = policy.task
    if policy.mode != "state":
        if corrupt_rate > 0:
            raise ValueError("corrupt_rate needs a state-mode policy (history traces are sampled whole)")
        traces = complete(policy, start(task, problems), samples, seed=seed)
        return [[with_answer_step(lab := oracle_label(task, p, t), policy.fmt, label=bool(lab.meta["correct"]))
                 for t in ts] for p, ts in zip(problems, traces)]
    rng = random.Random(seed)
    corrupt = (lambda a: task.corrupt(a, rng) if rng.random() < corrupt_rate else a) if corrupt_rate > 0 else None
    traces = complete(policy, start(task, problems), samples, seed=seed, corrupt=corrupt)
    labels = iter(exact_labels(task, "state", [t for ts in traces for t in ts]))
    return [[replace(t, steps=tuple(replace(s, label=ok) for s, ok in zip(t.steps, next(labels)))) for t in ts]
            for ts in traces]


def oracle_label(task, problem: Any, traj: Trajectory) -> Trajectory:
    """``traj`` with each step labelled by ``task.check_steps`` (a step beyond the expert's last is False)
    and ``meta['correct'] = task.check_answer`` on its ``meta['answer']`` (or its target if absent).

    ``check_steps`` also returns one False per *missing* step; those have no step to sit on, so they are
    counted in ``meta['missing_steps']`` instead (a trace that stops short is not silently complete)."""
    actions = [s.action for s in traj.steps]
    ok = task.check_steps(problem, actions)
    labels = ok[: len(actions)] + [False] * (len(actions) - len(ok))  # the checker's verdict, one per step
    steps = tuple(replace(s, label=bool(lab)) for s, lab in zip(traj.steps, labels))
    answer = traj.meta.get("answer", traj.target)
    meta = {**traj.meta, "correct": task.check_answer(problem, answer), "missing_steps": max(0, len(ok) - len(actions))}
    return Trajectory(traj.input, traj.target, steps, meta)


def orm_labels(traj: Trajectory) -> Trajectory:
    """The ORM's view of a labelled trace: only the last step is labelled, with the outcome
    (``meta['correct']``; a history trace's last step is its appended answer step, already so labelled)."""
    last = len(traj.steps) - 1
    steps = tuple(Step(s.action, s.state, bool(traj.meta["correct"]) if t == last else None, s.key)
                  for t, s in enumerate(traj.steps))
    return Trajectory(traj.input, traj.target, steps, traj.meta)


def inject_corruptions(task, problem: Any, traj: Trajectory, rng: random.Random, rate: float) -> Trajectory:
    """Corrupt each step of ``traj`` (usually ``task.expert(problem)``) with probability ``rate`` by
    ``task.corrupt``, then label every step with the task's checker (:func:`oracle_label`).

    Labels come from the checker, not from "was corrupted": a corruption that is still valid stays True,
    and on tasks whose checker follows the trace (grid) a corruption can also change later labels.
    ``meta['corrupted']`` lists the indices of changed steps."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    steps, changed = [], []
    for t, s in enumerate(traj.steps):
        action = task.corrupt(s.action, rng) if rng.random() < rate else s.action
        if action != s.action:
            changed.append(t)
        steps.append(replace(s, action=action, label=None))
    corrupted = Trajectory(traj.input, traj.target, tuple(steps), {**traj.meta, "corrupted": changed})
    return oracle_label(task, problem, corrupted)
