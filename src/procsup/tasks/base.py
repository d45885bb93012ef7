"""The interface every verifiable task implements.

A task makes problems of a given size from a seed, writes the expert trajectory of a problem, and
checks steps and answers exactly. For state-mode rollouts (PAL's ``M(s_t) -> a_t``) it also renders
states and executes actions. Trainers never import a task: they see only trajectories, so a new task
is added without touching them; :func:`procsup.rollout.complete` drives any task through this
interface.
"""

from __future__ import annotations

import random
import re
from typing import Any, Protocol, Sequence

from procsup.data.trajectory import Trajectory


class Task(Protocol):
    name: str

    # --- problems and demonstrations ---------------------------------------------------------------
    def sample(self, seed: int, size: int, count: int) -> list[Any]:
        """``count`` problems of the given size (digits, grid side, chain length...), deterministic in seed."""

    def expert(self, problem: Any) -> Trajectory:
        """The expert trajectory for history mode: ``input`` x, ``target`` y, steps whose ``action`` is
        the history-mode line and whose ``state``/``key`` describe the state the step is taken in."""

    def state_trajectory(self, problem: Any) -> Trajectory:
        """The same demonstration for state mode: each step's ``state`` is what the model sees,
        its ``action`` what it must output (see :meth:`render_state`)."""

    def problem_of(self, traj: Trajectory) -> Any:
        """The problem a trajectory of this task was made for (read back from its ``input``/``meta``, as
        :meth:`expert` writes them): how rollouts, scorers and search find the problem of a prefix."""

    def corrupt(self, action: str, rng: random.Random) -> str:
        """A plausible wrong version of ``action`` (for injected label errors); may return it unchanged."""

    # --- checkers ----------------------------------------------------------------------------------
    def check_answer(self, problem: Any, answer: str | None) -> bool:
        """Is ``answer`` the right final answer."""

    def check_steps(self, problem: Any, actions: Sequence[str]) -> list[bool]:
        """Exact correctness of each generated history-mode step (given the steps before it); a trace
        with missing steps gets False for each missing one."""

    def check_state_step(self, state: Any, action: str) -> bool:
        """Exact correctness of a state-mode action in ``state``."""

    # --- executor (state-mode rollouts) -------------------------------------------------------------
    def initial_state(self, problem: Any) -> Any: ...

    def render_state(self, state: Any) -> str:
        """The text the model sees in state mode (equal to the expert step's ``state`` on expert states)."""

    def execute(self, state: Any, action: str) -> Any | None:
        """The next state, or None if the action cannot be applied (the rollout fails)."""

    def is_done(self, state: Any) -> bool: ...

    def answer(self, state: Any) -> str:
        """The final answer read off a finished state."""


_DIGIT = re.compile(r"[0-9]")


def corrupt_digit(action: str, rng: random.Random) -> str:
    """Replace one random digit of ``action`` by another digit; unchanged if it has no digit. The default
    corruption of the tasks (:meth:`Task.corrupt`)."""
    spots = [m.start() for m in _DIGIT.finditer(action)]
    return swap_digit(action, rng.choice(spots), rng) if spots else action


def swap_digit(text: str, i: int, rng: random.Random) -> str:
    """``text`` with its digit at ``i`` replaced by another digit."""
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1 :]
