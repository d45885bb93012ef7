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

Position coupling (Cho et al., 2024, arXiv 2405.20671; :mod:`procsup.data.positions`):
:meth:`AdditionTask.coupled_positions` numbers the hint-free layout by column blocks, block ``B(t)`` for
column t (``B(t) = stride * slot_t``, slots ``1, 2, 3, ...`` or, in training, a random increasing choice:
randomized positions, Ruoss et al., 2023), so that **what a token's successor must read sits at a fixed
id offset from it**: the input digits of column t at ``B(t) + 0`` (``a``) and ``+ 2`` (``b``); step t's
characters ``x+y+c=d,`` at ``B(t) + 0..7``, its carry-out at ``B(t+1) + 4`` (where step t+1 reads its
carry-in) and its separator at ``B(t+1) - 1`` (just before the digit the next step copies first): in a step,
the id after mine; the answer prefix ends at ``B(n) + 3`` (before the last carry-out), and the answer digit of
significance s sits at ``B(s-1) + 8``, two ids after the sum digit it is followed by (a lane of its own: at
``+ 5``, the id of ``=``, a model mixed copying the digit with adding the column again). Every lookup is then
at a fixed offset, at any length and any spacing of the blocks. ``pad_answer=True`` writes the answer with
``columns + 1`` digits (``"0579"``), so that the rule knows each answer digit's significance before the model
has decided on a final carry.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Sequence

from procsup.data.positions import PositionRule, block_start, by_characters, check_slots
from procsup.data.tokenize import StepFormat
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

    def __init__(self, carry_heavy: float = 0.0, shuffle_columns: bool = False, index_hints: bool = True,
                 pad_answer: bool = False):
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
        self.pad_answer = pad_answer
        """Write the answer with ``columns + 1`` digits, zeros in front (what the coupled rule expects)."""

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

    def target(self, p: AdditionProblem) -> str:
        """The answer as the model writes it: ``a + b``, zero-padded to ``columns + 1`` digits if ``pad_answer``."""
        total = str(p.a + p.b)
        return total.zfill(p.columns + 1) if self.pad_answer else total

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
            input=self.render_input(p), target=self.target(p), steps=tuple(steps),
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
        return answer is not None and answer.strip() == self.target(p)

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
        text = text.lstrip("0") or "0"
        return text.zfill(state.problem.columns + 1) if self.pad_answer else text

    # --- position coupling (history and outcome mode) -----------------------------------------------
    def coupled_positions(self, stride: int = 10, fmt: StepFormat = StepFormat(),
                          slots: Sequence[int] | None = None) -> PositionRule:
        """The column-coupled :data:`~procsup.data.positions.PositionRule` of the hint-free layout (module
        docstring). Column t's block starts at ``stride * slots[t]`` (default ``slots[t] = t + 1``; past the
        given slots they continue one apart), the answer's at ``stride * slots[n]``; the prompt's other
        characters are at 0 (the input separator at ``B(0) - 1``). After the prompt (ended by
        ``fmt.input_sep``) the k-th line is step k, unless its first character is ``fmt.answer_prefix[0]``:
        the answer line. Each generated token's id depends only on the text up to it (causal), as generation
        needs. A token's id is its first character's (an empty token counts as one character). Stride and
        slots are fixed per rule: a training row's random choice is made before it is tokenized."""
        if stride < 10:
            raise ValueError(f"stride must be >= 10 (a step line is 9 characters and its separator), got {stride}")
        if self.index_hints:
            raise ValueError("coupled positions need index_hints=False: the rule reads the hint-free layout")
        slots = check_slots(slots)
        return lambda texts: by_characters(texts, lambda text: _coupled(text, stride, fmt, slots))


_PROMPT = re.compile(r"^([0-9]+)\+([0-9]+) \| ")
_CARRY_IN, _ANSWER = 4, 8  # offsets in a block: the carry-in of "x+y+c=d,c'"; the answer digit read at -2


def _coupled(text: str, stride: int, fmt: StepFormat, slots: tuple[int, ...]) -> list[int]:
    m = _PROMPT.match(text)
    if m is None:
        raise ValueError(f"coupled positions: the prompt {text[:40]!r} is not 'a+b | x,y ...' (index_hints=False)")
    block = lambda t: block_start(t, stride, slots)  # noqa: E731
    sep = text.find(fmt.input_sep, m.end())
    body = len(text) if sep < 0 else sep
    cut = len(text) if sep < 0 else sep + len(fmt.input_sep)
    a, b, cols = m.group(1), m.group(2), text[m.end():body]
    n = (len(cols) + 1) // 4  # columns: "x,y x,y ... x,y"
    ids = [block(len(a) - 1 - j) for j in range(len(a))] + [0]  # a's digit of significance t at B(t)
    ids += [block(len(b) - 1 - j) + 2 for j in range(len(b))] + [0] * 3  # b's at B(t) + 2; "+" and " | " at 0
    ids += [block(j // 4) + j % 4 for j in range(len(cols))]  # column t's "x,y " at B(t) + 0..3
    ids += [0] * max(cut - body - 1, 0) + [block(0) - 1] * (cut > body)  # input_sep: before step 0's first digit
    line, j, answer, plen = 0, 0, False, len(fmt.answer_prefix)
    for i in range(cut, len(text)):
        if j == 0:
            answer = text[i] == fmt.answer_prefix[0]
        if answer:  # prefix ending at B(n) + 3; the digit of significance s = n - (j - plen) at B(s - 1) + 8
            ids.append(block(n) + 4 - plen + j if j < plen else block(n - 1 - j + plen) + _ANSWER)
        elif text.endswith(fmt.step_sep, 0, i + 1) and j + 1 >= len(fmt.step_sep):
            ids.append(block(line + 1) - 1)  # the separator: just before the next column's first digit
            line, j = line + 1, -1
        elif j < 8:
            ids.append(block(line) + j)
        else:  # the carry-out, where the next step reads its carry-in (and any overlong tail after it)
            ids.append(block(line + 1) + _CARRY_IN + j - 8)
        j += 1
    return ids
