"""Multi-digit addition, one column at a time (Kartik & Shah, 2025, section 5.3).

A problem is ``a + b``. The expert adds column by column from the least significant digit: the state of
step t is the two digits of column t and the carry in; the action is the sum digit and the carry out.
Every step has an exact checker, and the executor of state mode applies an action and renders the
next column, so that a state-mode model never has to find a column by position: the generalization
from 3 to 20 digits is a property of the step format, which is the point of the benchmark.

Renderings (state mode, ``3+6+1`` -> ``0,1`` means 3+6+1 = 10: write 0, carry 1):

* state ``s_t``: ``"{a_t}+{b_t}+{c_t}"``; action ``a_t``: ``"{digit},{carry}"``;
* history mode: the input lists the columns least significant first, each tagged with a distinct
  random letter (an index hint, as in Zhou et al. 2023, "What algorithms can transformers learn?"), and
  each step names its column, copies its digits, and names the next column::

      x = "123+456 | k:3,6 d:2,5 q:1,4"    step 1 = "k:3+6+0=9,0>d"    ...    answer "579"

  The letters are random per problem, so every letter is seen in training even with 3 columns, and
  finding "the column after k" is a content lookup, not a position lookup.

  With ``index_hints=False`` the letters are left out (``x = "123+456 | 3,6 2,5 1,4"``, step 1 =
  ``"3+6+0=9,0"``): a model must find column t by position, which works within the trained lengths
  only. The PRM benchmark uses it, so that a weak policy's step errors are arithmetic, not letters.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Sequence

from procsup.data.trajectory import Step, Trajectory
from procsup.tasks.base import corrupt_digit, swap_digit

LETTERS = string.ascii_lowercase
END = "$"  # "next column" of the last column
_STATE_ACTION = re.compile(r"^([0-9]),([01])$")
_DIGIT = re.compile(r"[0-9]")


@dataclass(frozen=True)
class AdditionProblem:
    a: int
    b: int
    hints: tuple[str, ...] = ()
    """Column letters, least significant first (history-mode index hints)."""
    order: tuple[int, ...] = ()
    """If set, the order in which the input lists the columns (each then names its successor)."""

    @property
    def columns(self) -> int:
        return max(len(str(self.a)), len(str(self.b)))

    def column(self, t: int) -> tuple[int, int]:
        ra, rb = str(self.a)[::-1], str(self.b)[::-1]
        return (int(ra[t]) if t < len(ra) else 0, int(rb[t]) if t < len(rb) else 0)


@dataclass(frozen=True)
class AdditionState:
    problem: AdditionProblem
    t: int = 0
    carry: int = 0
    digits: str = ""  # sum digits written so far, least significant first


def _number(rng: random.Random, digits: int, carry_heavy: float) -> int:
    first = rng.randint(1, 9) if digits > 1 else rng.randint(0, 9)
    return int(str(first) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1)))


def _carry_pair(rng: random.Random, da: int, db: int) -> tuple[int, int]:
    """Operands whose overlapping columns all carry: column 0 sums to 10 or more, the next ones to 9 or more
    (with the carry in, 10 or more)."""
    n = max(da, db)
    ra, rb = [], []
    for t in range(n):
        lo_a = 1 if t == da - 1 and da > 1 else 0
        lo_b = 1 if t == db - 1 and db > 1 else 0
        need = 9 if t else 10  # column 0 has no carry in: a sum of 9 there would carry nothing, anywhere
        x = rng.randint(max(lo_a, need - 9 if t < db else 0), 9) if t < da else None
        if x is not None and t < db:
            y = rng.randint(max(need - x, lo_b), 9)
        else:
            y = rng.randint(lo_b, 9) if t < db else None
        ra.append(x)
        rb.append(y)
    a = int("".join(str(d) for d in reversed([d for d in ra if d is not None])))
    b = int("".join(str(d) for d in reversed([d for d in rb if d is not None])))
    return a, b


class AdditionTask:
    """n-digit addition with column-by-column expert traces."""

    name = "addition"

    def __init__(self, carry_heavy: float = 0.0, shuffle_columns: bool = False, index_hints: bool = True):
        if not 0.0 <= carry_heavy <= 1.0:
            raise ValueError(f"carry_heavy must be in [0, 1], got {carry_heavy}")
        self.carry_heavy = carry_heavy
        """Share of problems sampled so that every column carries."""
        if shuffle_columns and not index_hints:
            raise ValueError("shuffle_columns needs index_hints: shuffled columns are found by their letters")
        self.shuffle_columns = shuffle_columns
        """List the hinted columns of the input in random order, each naming its successor
        (``k>d:3,6``), so that a history-mode model can only find the next column by its letter."""
        self.index_hints = index_hints
        """Tag each column of the history-mode input and steps with a letter (see the module docstring)."""

    # --- problems -------------------------------------------------------------------------------
    def make(self, rng: random.Random, digits_a: int, digits_b: int) -> AdditionProblem:
        if rng.random() < self.carry_heavy:
            a, b = _carry_pair(rng, digits_a, digits_b)
        else:
            a, b = _number(rng, digits_a, 0.0), _number(rng, digits_b, 0.0)
        n = max(digits_a, digits_b)
        order = tuple(rng.sample(range(n), n)) if self.shuffle_columns else ()
        hints = tuple(rng.sample(LETTERS, n))  # drawn either way: the same seed gives the same a, b
        return AdditionProblem(a, b, hints if self.index_hints else (), order)

    def sample(self, seed: int, size: int, count: int) -> list[AdditionProblem]:
        """``count`` problems whose operands both have ``size`` digits."""
        rng = random.Random(f"addition/{seed}/{size}")
        return [self.make(rng, size, size) for _ in range(count)]

    def sample_range(self, seed: int, max_digits: int, count: int, min_digits: int = 1) -> list[AdditionProblem]:
        """Training problems: each operand's length uniform in [min_digits, max_digits]."""
        rng = random.Random(f"addition-train/{seed}/{min_digits}-{max_digits}")
        return [
            self.make(rng, rng.randint(min_digits, max_digits), rng.randint(min_digits, max_digits)) for _ in range(count)
        ]

    # --- renderings -------------------------------------------------------------------------------
    def render_input(self, p: AdditionProblem) -> str:
        if p.order:
            nxt = [*p.hints[1:], END]
            cols = " ".join(f"{p.hints[t]}>{nxt[t]}:{p.column(t)[0]},{p.column(t)[1]}" for t in p.order)
        elif p.hints:
            cols = " ".join(f"{h}:{x},{y}" for h, (x, y) in zip(p.hints, (p.column(t) for t in range(p.columns))))
        else:
            cols = " ".join(f"{x},{y}" for x, y in (p.column(t) for t in range(p.columns)))
        return f"{p.a}+{p.b} | {cols}"

    def render_state(self, state: AdditionState) -> str:
        x, y = state.problem.column(state.t)
        return f"{x}+{y}+{state.carry}"

    @staticmethod
    def _state_action(x: int, y: int, carry: int) -> str:
        total = x + y + carry
        return f"{total % 10},{total // 10}"

    def _history_step(self, p: AdditionProblem, t: int, carry: int) -> str:
        x, y = p.column(t)
        total = x + y + carry
        if not p.hints:
            return f"{x}+{y}+{carry}={total % 10},{total // 10}"
        nxt = p.hints[t + 1] if t + 1 < p.columns else END
        return f"{p.hints[t]}:{x}+{y}+{carry}={total % 10},{total // 10}>{nxt}"

    def expert(self, p: AdditionProblem) -> Trajectory:
        """The expert trajectory. Each step's ``action`` is the history-mode line; its ``state`` is the
        rendered column; ``meta['state_actions']`` holds the state-mode actions (see :meth:`state_trajectory`)."""
        steps, carry = [], 0
        for t in range(p.columns):
            x, y = p.column(t)
            steps.append(Step(action=self._history_step(p, t, carry), state=f"{x}+{y}+{carry}", key=f"{x}+{y}+{carry}"))
            carry = (x + y + carry) // 10
        return Trajectory(
            input=self.render_input(p), target=str(p.a + p.b), steps=tuple(steps),
            meta={"task": self.name, "a": p.a, "b": p.b, "hints": "".join(p.hints), "order": list(p.order)},
        )

    def state_trajectory(self, p: AdditionProblem) -> Trajectory:
        """The same demonstration with state-mode actions (``digit,carry``) for ``M(s_t) -> a_t``."""
        traj = self.expert(p)
        steps = []
        for s in traj.steps:
            x, y, c = (int(v) for v in s.state.split("+"))
            steps.append(Step(action=self._state_action(x, y, c), state=s.state, key=s.key))
        return Trajectory(traj.input, traj.target, tuple(steps), traj.meta)

    @staticmethod
    def problem_of(traj: Trajectory) -> AdditionProblem:
        m = traj.meta
        return AdditionProblem(int(m["a"]), int(m["b"]), tuple(m.get("hints", "")), tuple(m.get("order", ())))

    # --- checkers -----------------------------------------------------------------------------------
    def corrupt(self, action: str, rng: random.Random) -> str:
        """History steps ``k:3+6+0=9,0>d``: one digit of the result (``9,0``, after ``=``) changed, so the
        step stays well-formed and only its arithmetic is wrong. Anything else (a state-mode action ``9,0``):
        one digit changed (:func:`~procsup.tasks.base.corrupt_digit`)."""
        eq = action.find("=")
        if eq < 0:
            return corrupt_digit(action, rng)
        end = action.find(">", eq)
        spots = [eq + 1 + m.start() for m in _DIGIT.finditer(action[eq + 1 : end if end >= 0 else None])]
        return swap_digit(action, rng.choice(spots), rng) if spots else corrupt_digit(action, rng)

    def check_answer(self, p: AdditionProblem, answer: str | None) -> bool:
        return answer is not None and answer.strip() == str(p.a + p.b)

    def check_steps(self, p: AdditionProblem, actions: Sequence[str]) -> list[bool]:
        """History-mode steps: step t must equal the expert's step t (the trace is deterministic), and
        there must be exactly one step per column (missing steps count as wrong)."""
        expert = [s.action for s in self.expert(p).steps]
        ok = [t < len(expert) and a == expert[t] for t, a in enumerate(actions)]
        return ok + [False] * (len(expert) - len(actions))

    def check_state_step(self, state: AdditionState, action: str) -> bool:
        x, y = state.problem.column(state.t)
        return action == self._state_action(x, y, state.carry)

    # --- executor (state mode) -------------------------------------------------------------------------
    def initial_state(self, p: AdditionProblem) -> AdditionState:
        return AdditionState(p)

    def execute(self, state: AdditionState, action: str) -> AdditionState | None:
        m = _STATE_ACTION.match(action.strip())
        if m is None:
            return None
        return AdditionState(state.problem, state.t + 1, int(m.group(2)), state.digits + m.group(1))

    def is_done(self, state: AdditionState) -> bool:
        return state.t >= state.problem.columns

    def answer(self, state: AdditionState) -> str:
        text = ("1" if state.carry else "") + state.digits[::-1]
        return text.lstrip("0") or "0"
