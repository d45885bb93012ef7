"""Synthetic multi-step arithmetic word problems, GSM8K-like (Kartik & Shah, 2025, section 5.1: "a
held-out GSM8K-like set of 5-step arithmetic problems", and "noise perturbations (adding irrelevant
wording to the question)").

A problem of size k is a short story about one person's items: a sentence giving the start quantity,
then k sentences that each apply one operation to it (+, - or x with small integers; every number is
at least 2 and below ``max_value``), then the question. With ``noise=m`` the story also holds m
irrelevant sentences with numbers (another person's items, someone's age, windows...), inserted at
random places after the first sentence; they must not be used, and they do not change the answer.

The expert writes one step per operation, ``{quantity}{op}{operand}={result}`` (``*`` for x); the
first step starts from the start quantity, each later one from the previous result::

    x   "Tom has 5 apples. Tom buys 3 apples. Sue is 9 years old. Tom gives 2 apples to Sue.
         Tom now has 3 times as many apples. How many apples does Tom have?"
    history steps   "5+3=8"  "8-2=6"  "6*3=18"        answer "18"

In state mode the state is the known quantity as a sentence, then the next sentence of the story; the
action is the step, or ``skip`` for an irrelevant sentence (so a state-mode trace has one step per
sentence, noise included, while a history trace has one per operation)::

    s_t "Tom has 8 apples. Sue is 9 years old."         a_t "skip"
    s_t "Tom has 8 apples. Tom gives 2 apples to Sue."  a_t "8-2=6"

Steps are parsed by a regular expression, never evaluated: anything that is not ``int op int = int``
is simply a wrong step. A step is right if it applies the right operation to the right quantities
(the expert's, so an error carried over from an earlier step is wrong again); the operands of + and
x may come in either order.

Position coupling (issue 18; :mod:`procsup.data.positions`, as for addition and logic):
:meth:`WordProblemTask.coupled_positions` couples **step t with sentence t** (the t-th sentence after the
first). Sentence j of the input (the question is the last) sits in block ``B(j) = stride * slot_j``, placed
so that its number's first digit is at ``B(j) + 24`` (the characters before it at ``B(j) + 24 - d``, clipped at
``B(j)``; a sentence without a number, the question, from ``B(j)``); history step t's characters (separator
included) take the block's step lane ``B(t) + 52 ...``, so that a step and the operand it reads are the same
distance apart at any story length; the answer line takes the question's lane (in a clean story the block
after the last step's). The input separator is at ``B(1) + 51``, just before step 1. The rule reads the
sentences by their punctuation, never by their meaning: in a story with irrelevant sentences step t is still
coupled with sentence t, which is then not the sentence it uses (telling them apart would give the
perturbation away).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from procsup.data.positions import PositionRule, block_start, by_characters, check_slots
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory
from procsup.tasks.base import corrupt_digit

NAMES = ("Tom", "Sue", "Ana", "Ben", "Mia", "Raj", "Li", "Omar", "Eva", "Kim", "Max", "Zoe")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pencils", "cards", "shells")
START = "{p} has {n} {item}."
QUESTION = "How many {item} does {p} have?"
#: Sentences of each operation; ``{o}`` is another person.
OPERATIONS = {
    "+": ("{p} buys {n} {item}.", "{p} finds {n} {item}.", "{o} gives {p} {n} {item}.", "{p} wins {n} {item}."),
    "-": ("{p} gives {n} {item} to {o}.", "{p} loses {n} {item}.", "{p} sells {n} {item}."),
    "*": ("{p} now has {n} times as many {item}.", "{p}'s {item} become {n} times as many."),
}
#: Irrelevant sentences with a number; ``{other}`` is another kind of item.
NOISE = (
    "{o}'s house has {n} windows.",
    "{o} is {n} years old.",
    "{p} has {n} cousins.",
    "{o} has {n} {item}.",
    "{o} buys {n} {other}.",
    "{p} walks {n} miles.",
)
SKIP = "skip"
"""The state-mode action for an irrelevant sentence."""
#: ``quantity op operand = result``; bounded lengths, so that int() never sees a huge string.
_SENTENCE = re.compile(r"[^.?]*[.?] ?")
#: Offsets in a sentence's block: its number's first digit; the step lane (a sentence ends before it).
_NUMBER, _LANE = 24, 52
_STEP = re.compile(r"^\s*([0-9]{1,7})\s*([-+*])\s*([0-9]{1,7})\s*=\s*([0-9]{1,7})\s*$")


@dataclass(frozen=True)
class WordProblem:
    person: str
    item: str
    start: int
    sentences: tuple[str, ...]
    """The story without its question; ``sentences[0]`` gives the start quantity."""
    ops: tuple[tuple[str, int] | None, ...]
    """For each sentence after the first: its ``(operator, operand)``, or None if it is irrelevant."""

    @property
    def size(self) -> int:
        return sum(o is not None for o in self.ops)

    def results(self) -> list[int]:
        """The quantity after each operation."""
        out, q = [], self.start
        for op in self.ops:
            if op is not None:
                q = _apply(q, *op)
                out.append(q)
        return out

    @property
    def answer(self) -> int:
        results = self.results()
        return results[-1] if results else self.start


@dataclass(frozen=True)
class WordState:
    problem: WordProblem
    index: int
    """The sentence to read next (1..len(sentences); len(sentences) when done)."""
    quantity: int


def _apply(q: int, op: str, n: int) -> int:
    return q + n if op == "+" else q - n if op == "-" else q * n


def parse_step(text: str) -> tuple[int, str, int, int] | None:
    """``"8-2=6"`` -> ``(8, "-", 2, 6)``; None for anything else (no evaluation, ever)."""
    m = _STEP.match(text)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))


def _step_is(action: str, q: int, op: str, n: int) -> bool:
    """Is ``action`` the operation ``q op n`` with its right result (+ and * in either operand order)."""
    parsed = parse_step(action)
    if parsed is None:
        return False
    a, got_op, b, r = parsed
    operands_ok = (a, b) == (q, n) or (op in "+*" and (a, b) == (n, q))
    return got_op == op and operands_ok and r == _apply(q, op, n)


class WordProblemTask:
    """k-operation arithmetic stories with one expert step per operation."""

    name = "word_problems"

    def __init__(self, noise: int = 0, max_value: int = 1000, max_operand: int = 10):
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if max_value < 30:
            raise ValueError(f"max_value must be >= 30, got {max_value}")
        if not 2 <= max_operand < max_value:
            raise ValueError(f"max_operand must be in [2, max_value), got {max_operand}")
        self.noise = noise
        """Irrelevant sentences per problem (0: none). The perturbation."""
        self.max_value = max_value
        """Every quantity stays below this."""
        self.max_operand = max_operand
        """Operands of + and - are 2..max_operand; factors of x are 2 or 3."""

    # --- problems -------------------------------------------------------------------------------
    def _operation(self, rng: random.Random, q: int) -> tuple[str, int]:
        # every number is >= 2, so that "{n} {item}" is always a plural
        ok = (("+", q + 2 < self.max_value), ("-", q >= 4), ("*", 2 * q < self.max_value))
        op = rng.choice([op for op, allowed in ok if allowed])
        if op == "+":
            return op, rng.randint(2, min(self.max_operand, self.max_value - 1 - q))
        if op == "-":
            return op, rng.randint(2, min(self.max_operand, q - 2))
        return op, rng.randint(2, min(3, (self.max_value - 1) // q))

    def make(self, rng: random.Random, size: int, noise_rng: random.Random | None = None,
             noise: int | None = None) -> WordProblem:
        """A story with ``size`` operations. Its relevant part comes from ``rng`` alone and the noise
        sentences from ``noise_rng``, so that adding noise leaves the rest of the problem as it was."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        m = self.noise if noise is None else noise
        person, other = rng.sample(NAMES, 2)
        item = rng.choice(ITEMS)
        start = q = rng.randint(2, 20)
        sentences = [START.format(p=person, n=start, item=item)]
        ops: list[tuple[str, int] | None] = []
        for _ in range(size):
            op, n = self._operation(rng, q)
            template = rng.choice(OPERATIONS[op])
            sentences.append(template.format(p=person, o=other, n=n, item=item))
            ops.append((op, n))
            q = _apply(q, op, n)
        noise_rng = noise_rng or rng
        for _ in range(m):
            o = noise_rng.choice([n for n in NAMES if n != person])
            kind = noise_rng.choice([i for i in ITEMS if i != item])
            text = noise_rng.choice(NOISE).format(p=person, o=o, n=noise_rng.randint(2, 20), item=item, other=kind)
            at = noise_rng.randint(1, len(sentences))
            sentences.insert(at, text)
            ops.insert(at - 1, None)
        return WordProblem(person, item, start, tuple(sentences), tuple(ops))

    def sample(self, seed: int, size: int, count: int, noise: int | None = None) -> list[WordProblem]:
        """``count`` problems with ``size`` operations (``noise`` overrides the task's)."""
        rng, noise_rng = random.Random(f"word/{seed}/{size}"), random.Random(f"word-noise/{seed}/{size}")
        return [self.make(rng, size, noise_rng, noise) for _ in range(count)]

    def sample_range(self, seed: int, max_size: int, count: int, min_size: int = 2) -> list[WordProblem]:
        """Training problems: the number of operations uniform in [min_size, max_size]."""
        rng = random.Random(f"word-train/{seed}/{min_size}-{max_size}")
        noise_rng = random.Random(f"word-train-noise/{seed}/{min_size}-{max_size}")
        return [self.make(rng, rng.randint(min_size, max_size), noise_rng) for _ in range(count)]

    # --- renderings -------------------------------------------------------------------------------
    def render_input(self, p: WordProblem) -> str:
        return " ".join([*p.sentences, QUESTION.format(item=p.item, p=p.person)])

    def render_state(self, state: WordState) -> str:
        p = state.problem
        return f"{START.format(p=p.person, n=state.quantity, item=p.item)} {p.sentences[state.index]}"

    def _walk(self, p: WordProblem) -> list[tuple[WordState, str]]:
        """Every sentence after the first as ``(state, expert state-mode action)``."""
        out, q = [], p.start
        for i, op in enumerate(p.ops, start=1):
            if op is None:
                out.append((WordState(p, i, q), SKIP))
            else:
                nxt = _apply(q, *op)
                out.append((WordState(p, i, q), f"{q}{op[0]}{op[1]}={nxt}"))
                q = nxt
        return out

    @staticmethod
    def key(state: WordState) -> str | None:
        """The sub-problem a step solves, ``{quantity}{op}{operand}`` (``"8-2"``), whatever the story's
        wording; None for an irrelevant sentence. Steps of different stories with equal keys are the
        "identical sub-states" of the consistency loss (the rendered state, with its names and items,
        almost never repeats within a batch)."""
        op = state.problem.ops[state.index - 1]
        return None if op is None else f"{state.quantity}{op[0]}{op[1]}"

    def expert(self, p: WordProblem) -> Trajectory:
        """One step per operation; each step's ``state`` is the state-mode rendering, its ``key`` :meth:`key`."""
        steps = [
            Step(action=action, state=self.render_state(s), key=self.key(s))
            for s, action in self._walk(p) if action != SKIP
        ]
        return Trajectory(
            input=self.render_input(p), target=str(p.answer), steps=tuple(steps),
            meta={
                "task": self.name, "person": p.person, "item": p.item, "start": p.start,
                "sentences": list(p.sentences), "ops": [list(o) if o else None for o in p.ops],
            },
        )

    def state_trajectory(self, p: WordProblem) -> Trajectory:
        """One step per sentence after the first: the operation's step, or ``skip`` for noise."""
        steps = [Step(action=a, state=self.render_state(s), key=self.key(s)) for s, a in self._walk(p)]
        traj = self.expert(p)
        return Trajectory(traj.input, traj.target, tuple(steps), traj.meta)

    @staticmethod
    def problem_of(traj: Trajectory) -> WordProblem:
        m = traj.meta
        ops = tuple((o[0], int(o[1])) if o else None for o in m["ops"])
        return WordProblem(m["person"], m["item"], int(m["start"]), tuple(m["sentences"]), ops)

    # --- checkers -----------------------------------------------------------------------------------
    def corrupt(self, action: str, rng: random.Random) -> str:
        """One digit of the action changed (:func:`~procsup.tasks.base.corrupt_digit`)."""
        return corrupt_digit(action, rng)

    def check_answer(self, p: WordProblem, answer: str | None) -> bool:
        return answer is not None and answer.strip() == str(p.answer)

    def check_steps(self, p: WordProblem, actions: Sequence[str]) -> list[bool]:
        """Step t must be operation t on the expert's quantities; extra and missing steps are wrong."""
        expected = [(s.quantity, *s.problem.ops[s.index - 1]) for s, a in self._walk(p) if a != SKIP]
        ok = [t < len(expected) and _step_is(a, *expected[t]) for t, a in enumerate(actions)]
        return ok + [False] * (len(expected) - len(actions))

    def check_state_step(self, state: WordState, action: str) -> bool:
        op = state.problem.ops[state.index - 1]
        return action.strip() == SKIP if op is None else _step_is(action, state.quantity, *op)

    # --- position coupling (history and outcome mode) -----------------------------------------------
    def coupled_positions(self, stride: int = 64, fmt: StepFormat = StepFormat(),
                          slots: Sequence[int] | None = None) -> PositionRule:
        """The sentence-coupled :data:`~procsup.data.positions.PositionRule` (module docstring): sentence j's
        block starts at ``stride * slots[j]`` (default ``slots[j] = j + 1``; past the given slots one apart),
        step t in sentence t's block. Stride and slots are fixed per rule: a training row's random choice is
        made before it is tokenized."""
        if stride < _LANE + 12:
            raise ValueError(f"stride must be >= {_LANE + 12} (a sentence and a step line), got {stride}")
        slots = check_slots(slots)
        return lambda texts: by_characters(texts, lambda text: _coupled(text, stride, fmt, slots))

    # --- executor (state mode) -------------------------------------------------------------------------
    def initial_state(self, p: WordProblem) -> WordState:
        return WordState(p, 1, p.start)

    def execute(self, state: WordState, action: str) -> WordState | None:
        """``skip`` keeps the quantity; a step's result becomes the new quantity (right or not: the
        checker judges it). None if the action is neither."""
        if action.strip() == SKIP:
            return WordState(state.problem, state.index + 1, state.quantity)
        parsed = parse_step(action)
        if parsed is None:
            return None
        return WordState(state.problem, state.index + 1, parsed[3])

    def is_done(self, state: WordState) -> bool:
        return state.index >= len(state.problem.sentences)

    def answer(self, state: WordState) -> str:
        return str(state.quantity)


def _coupled(text: str, stride: int, fmt: StepFormat, slots: tuple[int, ...]) -> list[int]:
    """One id per character of ``text`` (the story and its question, its separator, then steps and the answer)."""
    end = text.find("?") + 1
    if end == 0:
        raise ValueError(f"coupled positions: the prompt {text[:40]!r}... has no question ('?')")
    block = lambda j: block_start(j, stride, slots)  # noqa: E731
    ids: list[int] = []
    sentences = list(_SENTENCE.finditer(text, 0, end))
    if sum(len(m.group()) for m in sentences) != end:
        raise ValueError(f"coupled positions: the prompt {text[:40]!r}... is not sentences ending in '.' or '?'")
    for j, m in enumerate(sentences):
        digit = re.search(r"[0-9]", m.group())
        shift = _NUMBER - digit.start() if digit else 0
        ids += [block(j) + max(0, i + shift) for i in range(len(m.group()))]
    sep = text.find(fmt.input_sep, end)
    cut = len(text) if sep < 0 else sep + len(fmt.input_sep)
    ids += [block(1) + _LANE - 1] * (cut - end)  # the separator, just before step 1
    question, line, j, answer = len(sentences) - 1, 1, 0, False
    for i in range(cut, len(text)):
        if j == 0:
            answer = text[i] == fmt.answer_prefix[0]
        ids.append(block(question if answer else line) + _LANE + j)
        if not answer and text.endswith(fmt.step_sep, 0, i + 1) and j + 1 >= len(fmt.step_sep):
            line, j = line + 1, 0
        else:
            j += 1
    return ids
