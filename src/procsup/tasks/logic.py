"""Chained deduction over an ordered relation (Kartik & Shah, 2025, sections 5.1 and 5.3: "logic
puzzles", "sequential reasoning chains").

A problem of size n is a chain of n distinct random letters ``e_0 > e_1 > ... > e_{n-1}``, given as its
n-1 facts ``"e_i>e_{i+1}"`` in random order, and a question ``"x?y"`` about two of its letters (any two,
so that no single fact gives the answer away: the relation of x to y is only known by chaining facts).
The answer is ``">"`` or ``"<"``. With ``distractors=k`` the input also holds the k facts of a second,
unrelated chain of k+1 other letters, shuffled in among the real ones (the perturbation).

The expert deduces by transitivity, one fact per step, keeping a derived relation ``x R c`` (R is
``=`` before the first step). It first walks *down* from x (facts ``c>?``); if it reaches the bottom
of the chain without meeting y, it starts again from x and walks *up* (facts ``?>c``). It stops as
soon as it derives ``x>y`` or ``x<y``. Each step combines the derived relation with the one fact that
contains its current letter ``c`` in the walking direction::

    x>c  and  c>v  give  x>v          x<c  and  u>c  give  x<u          x=x and x>v give x>v

Renderings, for the chain ``c>f>a>d>b`` and the question ``a?f``::

    x (input)   "f>a,c>f,a>d,d>b;a?f"
    history     "a>d:a>d"  "d>b:a>b"  "f>a:a<f"        answer "<"
    state s_t   "a=a,a>d"  "a>d,d>b"  "a=a,f>a"
    state a_t   "a>d"      "a>b"      "a<f"

A history step is ``{fact}:{derived}``: the fact used (found in the input by its content: the fact
whose left, or right, letter is the current letter) and the relation it yields. The state of state
mode is ``{derived},{fact}``: the derived relation so far and the next relevant fact, which the
executor looks up by content. It is 7 characters for every chain length, so that a state-mode model
never sees how long the chain is; the generalization from short chains to long ones is then a
property of the step format, as in :mod:`procsup.tasks.addition`. After a dead end going down, the
walk restarts from ``x=x`` with the fact above x (the third step above).

A trace has between 1 and n-1 steps (the walk down, if it fails, and the walk up from x to y never
use a fact twice). Training uses chains of 2..5 letters and tests chains twice as long
(:meth:`LogicTask.train_test_split`).

Position coupling (issue 18; :mod:`procsup.data.positions`, as :meth:`AdditionTask.coupled_positions
<procsup.tasks.addition.AdditionTask.coupled_positions>` for addition): :meth:`LogicTask.coupled_positions`
couples **step t with the fact it uses**. Fact k of the input sits in block ``B(k) = stride * slot_k`` (its
``u>v`` at ``B(k) + 0..2``, its comma at ``+ 3``), the question ``;x?y`` at ``0..3`` and the input separator at
``4``. A history step ``u>v:xRw`` is numbered from the first letter the model writes: ``u`` is the left
letter of exactly one fact (a chain has no letter twice on the left), fact k, and the step takes
``B(k) + 0..7`` (separator included), so that the step restates its fact at the fact's own ids and the
distance from a step to the fact it copies is the same at any chain length. A first letter no fact starts
with sends the step to the free block after the last fact, ``B(n)``. The answer line ``A:R`` continues the
last step's block (``B(k) + 8 ...``, the step's derived relation at ``+ 5``); with no step before it (outcome
mode) it takes ``B(n)``. The id of each generated character depends on the text up to it only (causal).
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
from procsup.tasks.base import corrupt_digit

LETTERS = string.ascii_lowercase
#: Chains of up to this many letters in training, twice as many at test time.
TRAIN_MAX_SIZE = 5
_RELATION = re.compile(r"^([a-z])([<>])([a-z])$")
_PROMPT = re.compile(r"^([a-z]>[a-z](?:,[a-z]>[a-z])*);[a-z]\?[a-z]")
#: Offsets in a fact's block: the question's ids ``;x?y`` are 0..3 and the input separator's 4; a step line is
#: 8 characters with its separator, the answer line continues after it.
_QUESTION, _ANSWER = 4, 8


@dataclass(frozen=True)
class LogicProblem:
    chain: tuple[str, ...]
    """The letters from greatest to least: ``chain[0] > chain[1] > ...``."""
    question: tuple[str, str]
    """``(x, y)``: is x greater or less than y."""
    facts: tuple[str, ...]
    """The facts ``"u>v"`` as the input lists them: the chain's, shuffled, and any distractors'."""

    @property
    def size(self) -> int:
        return len(self.chain)

    @property
    def answer(self) -> str:
        x, y = self.question
        return ">" if self.chain.index(x) < self.chain.index(y) else "<"


@dataclass(frozen=True)
class LogicState:
    problem: LogicProblem
    relation: str
    """``=``, ``>`` or ``<``: the derived relation ``x R current``."""
    current: str
    fact: str | None
    """The next relevant fact (it contains ``current``), or None once y is reached."""
    up: bool = False
    """Walking up (facts ``?>current``): the walk down from x ended without meeting y."""


def _find(facts: Sequence[str], letter: str, side: int) -> str | None:
    """The fact whose letter at ``side`` (0: left, 2: right) is ``letter``: a lookup by content."""
    return next((f for f in facts if f[side] == letter), None)


def _derive(x: str, current: str, fact: str) -> str:
    """Transitivity: ``x R current`` and a fact containing ``current`` give the next relation about x."""
    return f"{x}>{fact[2]}" if fact[0] == current else f"{x}<{fact[0]}"


def _arrive(p: LogicProblem, relation: str, current: str, up: bool) -> LogicState | None:
    """The state after deriving ``x relation current``: done if current is y, else the next fact to use,
    restarting upward from x after a dead end going down. None if the walk cannot continue."""
    x, y = p.question
    if current == y and relation != "=":
        return LogicState(p, relation, current, None, up)
    if relation == "<" or up:
        fact = _find(p.facts, current, 2)
        return LogicState(p, relation, current, fact, True) if fact else None
    fact = _find(p.facts, current, 0)
    if fact:
        return LogicState(p, relation, current, fact, False)
    fact = _find(p.facts, x, 2)  # bottom of the chain: walk up from x instead
    return LogicState(p, "=", x, fact, True) if fact else None


class LogicTask:
    """Is x greater than y, given a shuffled chain of facts; one transitivity step per fact."""

    name = "logic"

    def __init__(self, distractors: int = 0):
        if distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {distractors}")
        self.distractors = distractors
        """Facts of a second, unrelated chain mixed into the input (0: none). The perturbation."""

    # --- problems -------------------------------------------------------------------------------
    def make(self, rng: random.Random, size: int, noise_rng: random.Random | None = None,
             distractors: int | None = None) -> LogicProblem:
        """A problem with a chain of ``size`` letters. The chain, its fact order and the question come
        from ``rng`` alone and the distractors from ``noise_rng``, so that adding distractors leaves
        the rest of the problem as it was."""
        k = self.distractors if distractors is None else distractors
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        if size + (k + 1 if k else 0) > len(LETTERS):
            raise ValueError(f"a chain of {size} and {k} distractor facts need more than {len(LETTERS)} letters")
        chain = tuple(rng.sample(LETTERS, size))
        question = tuple(rng.sample(chain, 2))
        facts = [f"{u}>{v}" for u, v in zip(chain, chain[1:])]
        rng.shuffle(facts)
        if k:
            noise_rng = noise_rng or rng
            others = noise_rng.sample([c for c in LETTERS if c not in chain], k + 1)
            for fact in (f"{u}>{v}" for u, v in zip(others, others[1:])):
                facts.insert(noise_rng.randint(0, len(facts)), fact)
        return LogicProblem(chain, question, tuple(facts))

    def sample(self, seed: int, size: int, count: int, distractors: int | None = None) -> list[LogicProblem]:
        """``count`` problems with chains of ``size`` letters (``distractors`` overrides the task's)."""
        rng, noise_rng = random.Random(f"logic/{seed}/{size}"), random.Random(f"logic-noise/{seed}/{size}")
        return [self.make(rng, size, noise_rng, distractors) for _ in range(count)]

    def sample_range(self, seed: int, max_size: int, count: int, min_size: int = 2) -> list[LogicProblem]:
        """Training problems: chain length uniform in [min_size, max_size]."""
        rng = random.Random(f"logic-train/{seed}/{min_size}-{max_size}")
        noise_rng = random.Random(f"logic-train-noise/{seed}/{min_size}-{max_size}")
        return [self.make(rng, rng.randint(min_size, max_size), noise_rng) for _ in range(count)]

    def train_test_split(
        self, seed: int, train_count: int, test_count: int, train_max_size: int = TRAIN_MAX_SIZE
    ) -> tuple[list[LogicProblem], list[LogicProblem]]:
        """Short chains to train on (2..train_max_size letters), chains twice as long to test on."""
        return self.sample_range(seed, train_max_size, train_count), self.sample(seed, 2 * train_max_size, test_count)

    # --- the expert -------------------------------------------------------------------------------
    def _walk(self, p: LogicProblem) -> list[tuple[LogicState, str]]:
        """The expert's ``(state, derived relation)`` pairs, in order."""
        state, out = self.initial_state(p), []
        while not self.is_done(state):
            derived = _derive(p.question[0], state.current, state.fact)
            out.append((state, derived))
            state = self.execute(state, derived)
        return out

    def render_input(self, p: LogicProblem) -> str:
        return f"{','.join(p.facts)};{p.question[0]}?{p.question[1]}"

    def render_state(self, state: LogicState) -> str:
        return f"{state.problem.question[0]}{state.relation}{state.current},{state.fact}"

    def expert(self, p: LogicProblem) -> Trajectory:
        """History-mode steps ``{fact}:{derived}``; each step's ``state``/``key`` is the state-mode rendering."""
        steps = [
            Step(action=f"{s.fact}:{derived}", state=self.render_state(s), key=self.render_state(s))
            for s, derived in self._walk(p)
        ]
        return Trajectory(
            input=self.render_input(p), target=p.answer, steps=tuple(steps),
            meta={"task": self.name, "chain": "".join(p.chain), "question": "".join(p.question), "facts": list(p.facts)},
        )

    def state_trajectory(self, p: LogicProblem) -> Trajectory:
        """The same demonstration with state-mode actions: the derived relation alone (``a>b``)."""
        traj = self.expert(p)
        steps = [Step(action=s.action.split(":")[1], state=s.state, key=s.key) for s in traj.steps]
        return Trajectory(traj.input, traj.target, tuple(steps), traj.meta)

    @staticmethod
    def problem_of(traj: Trajectory) -> LogicProblem:
        m = traj.meta
        return LogicProblem(tuple(m["chain"]), tuple(m["question"]), tuple(m["facts"]))

    # --- checkers -----------------------------------------------------------------------------------
    def corrupt(self, action: str, rng: random.Random) -> str:
        """One digit of the action changed (:func:`~procsup.tasks.base.corrupt_digit`)."""
        return corrupt_digit(action, rng)

    def check_answer(self, p: LogicProblem, answer: str | None) -> bool:
        return answer is not None and answer.strip() == p.answer

    def check_steps(self, p: LogicProblem, actions: Sequence[str]) -> list[bool]:
        """Step t must equal the expert's step t (the walk is deterministic); missing steps are wrong."""
        expert = [s.action for s in self.expert(p).steps]
        ok = [t < len(expert) and a.strip() == expert[t] for t, a in enumerate(actions)]
        return ok + [False] * (len(expert) - len(actions))

    def check_state_step(self, state: LogicState, action: str) -> bool:
        return state.fact is not None and action.strip() == _derive(state.problem.question[0], state.current, state.fact)

    # --- position coupling (history and outcome mode) -----------------------------------------------
    def coupled_positions(self, stride: int = 12, fmt: StepFormat = StepFormat(),
                          slots: Sequence[int] | None = None) -> PositionRule:
        """The fact-coupled :data:`~procsup.data.positions.PositionRule` (module docstring): fact k's block
        starts at ``stride * slots[k]`` (default ``slots[k] = k + 1``; past the given slots one apart; the free
        block after the last fact is ``slots[n]``), a step at its fact's block. Stride and slots are fixed per
        rule: a training row's random choice is made before it is tokenized."""
        if stride < _ANSWER:
            raise ValueError(f"stride must be >= {_ANSWER} (a step line and its separator), got {stride}")
        slots = check_slots(slots)
        return lambda texts: by_characters(texts, lambda text: _coupled(text, stride, fmt, slots))

    # --- executor (state mode) -------------------------------------------------------------------------
    def initial_state(self, p: LogicProblem) -> LogicState:
        state = _arrive(p, "=", p.question[0], False)
        assert state is not None, "x is in a chain of >= 2 letters, so some fact contains it"
        return state

    def execute(self, state: LogicState, action: str) -> LogicState | None:
        """Take the derived relation ``x R c`` as known and look up the next fact. None if the action is
        not a relation about x, names a letter not in the problem, or leads to a dead end."""
        m = _RELATION.match(action.strip())
        p = state.problem
        if m is None or m.group(1) != p.question[0] or m.group(3) == m.group(1):
            return None
        if not any(m.group(3) in f for f in p.facts):
            return None
        return _arrive(p, m.group(2), m.group(3), state.up)

    def is_done(self, state: LogicState) -> bool:
        return state.fact is None

    def answer(self, state: LogicState) -> str:
        return state.relation


def _coupled(text: str, stride: int, fmt: StepFormat, slots: tuple[int, ...]) -> list[int]:
    """One id per character of ``text`` (a prompt ``facts;x?y``, its separator, then steps and the answer)."""
    m = _PROMPT.match(text)
    if m is None:
        raise ValueError(f"coupled positions: the prompt {text[:40]!r} is not 'u>v,...;x?y'")
    block = lambda k: block_start(k, stride, slots)  # noqa: E731
    facts = m.group(1).split(",")
    first: dict[str, int] = {}
    for k, fact in enumerate(facts):
        first.setdefault(fact[0], k)
    ids = [block(j // 4) + j % 4 for j in range(len(m.group(1)))]  # fact k's "u>v," at B(k) + 0..3
    ids += range(_QUESTION)  # ";x?y"
    sep = text.find(fmt.input_sep, m.end())
    cut = len(text) if sep < 0 else sep + len(fmt.input_sep)
    ids += [_QUESTION] * (cut - m.end())  # anything else of the prompt, and its separator
    j, base, last, answer = 0, 0, None, False
    for i in range(cut, len(text)):
        if j == 0:  # a line starts: the answer, or a step whose first letter names its fact
            answer = text[i] == fmt.answer_prefix[0]
            if answer:
                base = block(len(facts)) if last is None else last + _ANSWER
            else:
                base = last = block(first.get(text[i], len(facts)))
        ids.append(base + j)
        j = 0 if not answer and text.endswith(fmt.step_sep, 0, i + 1) and j + 1 >= len(fmt.step_sep) else j + 1
    return ids
