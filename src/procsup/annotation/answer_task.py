"""A task made of a trajectory file's own targets, for annotating traces of a task procsup does not know.

Monte Carlo annotation (:mod:`procsup.annotation.mc`, :mod:`procsup.annotation.first_error`) needs only
one checker: does a completion reach the right final answer. A JSONL file of trajectories carries it in
each ``target``. :class:`AnswerTask` turns such a file into a history-mode task for
:func:`procsup.rollout.complete`: the problem of a trajectory is its ``input``, the right answer the
target that the file gives for that input, and the "expert" (used only for token budgets) the file's
trajectory itself. It has no step checker and no executor: its labels can be estimated, not judged.
"""

from __future__ import annotations

from typing import Sequence

from procsup.data.trajectory import Trajectory


class AnswerTask:
    """History-mode task whose problems are the inputs of ``trajectories`` and whose answers are their targets."""

    name = "answers"

    def __init__(self, trajectories: Sequence[Trajectory]):
        self._by_input: dict[str, Trajectory] = {}
        for t in trajectories:
            seen = self._by_input.setdefault(t.input, t)
            if seen.target.strip() != t.target.strip():
                raise ValueError(f"input {t.input[:60]!r} has two different targets: {seen.target!r} and {t.target!r}")

    def problem_of(self, traj: Trajectory) -> str:
        if traj.input not in self._by_input:
            raise KeyError(f"input {traj.input[:60]!r} is not one of this task's trajectories")
        return traj.input

    def expert(self, problem: str) -> Trajectory:
        """The file's trajectory for this input (its steps and target size the generation budget)."""
        t = self._by_input[problem]
        return Trajectory(t.input, t.target, t.steps, {})

    def check_answer(self, problem: str, answer: str | None) -> bool:
        return answer is not None and answer.strip() == self._by_input[problem].target.strip()
