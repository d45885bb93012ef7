"""What the Monte Carlo annotators label, and which labels need no rollout.

A trajectory with M steps has ``units`` labelled units: its M steps, and in history mode, when it has an
answer (``meta['answer']``, as :func:`procsup.rollout.complete` writes it), the answer line as one more
step (:func:`~procsup.data.views.with_answer_step`, as :func:`~procsup.annotation.oracle.label_traces`
lays history traces out). Unit u (1-based) is judged through the *prefix* made of its first u steps: a
completion of that prefix that reaches the right answer shows that the policy can still succeed after
step u.

Some prefixes are decided without sampling (:func:`known`): in state mode the executor replays the
prefix; an action it cannot apply makes the prefix a dead end (False), a finished episode has its answer
checked; in history mode the answer step's label is the answer's check. These cost no rollout.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from procsup.data.trajectory import Label, Trajectory
from procsup.data.views import with_answer_step


def has_answer_step(policy, traj: Trajectory) -> bool:
    return policy.mode != "state" and "answer" in traj.meta


def units(policy, traj: Trajectory) -> int:
    """Labelled units of ``traj``: its steps, and its answer line in history mode when it has one."""
    return len(traj.steps) + has_answer_step(policy, traj)


def prefix(traj: Trajectory, u: int) -> Trajectory:
    """The prefix that ends with step u (1-based): the trajectory's first u steps, to be continued."""
    return Trajectory(traj.input, "", traj.steps[:u], traj.meta)


def known(policy, traj: Trajectory, u: int) -> bool | None:
    """Unit u's label when no rollout is needed (see the module docstring), else None."""
    task = policy.task
    if policy.mode == "state":
        state = task.initial_state(task.problem_of(traj))
        for step in traj.steps[:u]:
            state = task.execute(state, step.action)
            if state is None:
                return False
        if task.is_done(state):
            return bool(task.check_answer(task.problem_of(traj), task.answer(state)))
        return None
    if u == len(traj.steps) + 1:  # the answer line
        return bool(task.check_answer(task.problem_of(traj), traj.meta["answer"]))
    return None


def passes_through(completion: Trajectory, traj: Trajectory, u: int) -> bool:
    """Does ``completion`` begin with ``traj``'s first u steps (so that after them it is a sample of the
    policy continuing prefix u: sampling is Markov in the prefix)."""
    if len(completion.steps) < u:
        return False
    return all(a.action == b.action for a, b in zip(completion.steps[:u], traj.steps[:u]))


def common_steps(completion: Trajectory, traj: Trajectory) -> int:
    """How many leading steps ``completion`` shares with ``traj``."""
    n = 0
    for a, b in zip(completion.steps, traj.steps):
        if a.action != b.action:
            break
        n += 1
    return n


def labelled(policy, traj: Trajectory, labels: Sequence[Label | None], annotation: dict[str, Any]) -> Trajectory:
    """``traj`` with one label per unit (the answer line appended in history mode) and ``meta['annotation']``."""
    out = with_answer_step(traj, policy.fmt) if has_answer_step(policy, traj) else traj
    if len(labels) != len(out.steps):
        raise ValueError(f"{len(labels)} labels for {len(out.steps)} units")
    steps = tuple(replace(s, label=lab) for s, lab in zip(out.steps, labels))
    return Trajectory(out.input, out.target, steps, {**out.meta, "annotation": annotation})
