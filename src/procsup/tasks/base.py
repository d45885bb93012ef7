"""The interface every verifiable task implements.

A task makes problems of a given size from a seed, writes the expert trajectory of a problem, and
checks steps and answers exactly. For state-mode rollouts (PAL's ``M(s_t) -> a_t``) it also renders
states and executes actions. Trainers never import a task: they see only trajectories, so a new task
is added without touching them.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from procsup.data.trajectory import Trajectory


class Task(Protocol):
    name: str

    def sample(self, seed: int, size: int, count: int) -> list[Any]:
        """``count`` problems of the given size (e.g. digits), deterministic in ``seed``."""

    def expert(self, problem: Any) -> Trajectory:
        """The expert trajectory (input, target, steps with states, actions and keys)."""

    def check_answer(self, problem: Any, answer: str | None) -> bool:
        """Is ``answer`` the right final answer."""

    def check_steps(self, problem: Any, actions: Sequence[str]) -> list[bool]:
        """Exact correctness of each generated step, given the steps before it."""

    # state-mode rollouts
    def initial_state(self, problem: Any) -> Any: ...

    def render_state(self, state: Any) -> str: ...

    def execute(self, state: Any, action: str) -> Any | None:
        """The next state, or None if the action cannot be applied (a failed rollout)."""

    def is_done(self, state: Any) -> bool: ...

    def answer(self, state: Any) -> str: ...
