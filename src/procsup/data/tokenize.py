"""Turning trajectories into token rows: the one place where text meets tokens.

Every trainer and scorer in procsup uses these functions, so that what a model is trained on is what it
is evaluated or scored on. A trajectory is tokenized piece by piece (input, each step, answer) and the
pieces are concatenated as token ids, never joined as strings first: with sub-word tokenizers, joining
strings can merge a step's last token with the next one, which silently moves step boundaries.

A trajectory may carry task-given position ids in ``meta["positions"]``: one id per character of its row's
text (the pieces below, concatenated) and one for the closing EOS, as written by
:func:`procsup.data.positions.add_positions`; a token then takes the id of its first character (see
:mod:`procsup.data.positions`), and the row carries them as ``position_ids``.

Each row carries ``segment_ids``, one per token, saying which term of the loss the token belongs to:

* ``PROMPT`` (0): context only, never a target;
* ``ANSWER`` (1): the final answer y (and the end-of-sequence token);
* ``STEP0 + t`` (2 + t): step t's action tokens *including its separator*.

So the last token of step t is its separator: the boundary token where a process reward model reads
that step's score. The three conditioning modes of PAL (seed 000, section 3) give three row layouts:

* ``history``: ``x · sep_in · a_1 · sep · … · a_n · sep · ans · y · eos`` (one row per trajectory);
* ``state``: ``s_t · sep_in · a_t · eos`` (one row per step: the model sees the state alone);
* ``outcome``: ``x · sep_in · ans · y · eos`` (the outcome-only baseline);
* ``steps``: ``x · sep_in · a_1 · sep · … · a_n · sep`` (what a process reward model reads: no answer,
  no EOS; each step's score sits on its boundary token, see :func:`step_boundaries`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from .trajectory import Trajectory, TrajectoryError

PROMPT, ANSWER, STEP0 = 0, 1, 2
Mode = Literal["history", "state", "outcome"]
MODES: tuple[str, ...] = ("history", "state", "outcome")
"""The PAL training modes."""
Layout = Literal["history", "state", "outcome", "steps"]
LAYOUTS: tuple[str, ...] = (*MODES, "steps")


@dataclass(frozen=True)
class StepFormat:
    """The separators that turn a trajectory into text. Defined once per model/tokenizer, in config."""

    input_sep: str = "\n"
    """Appended to the input x (or to a state s_t): where generation starts."""
    step_sep: str = "\n"
    """Appended to every step's action; a step's last token is the last token of this separator."""
    answer_prefix: str = "A:"
    """Written before the final answer y, so the answer can be found in generated text."""

    def __post_init__(self) -> None:
        if not self.step_sep:
            raise ValueError("step_sep must not be empty: a step needs a boundary token")


@dataclass(frozen=True)
class Row:
    """One tokenized training or scoring sequence."""

    input_ids: tuple[int, ...]
    segment_ids: tuple[int, ...]
    """Same length as ``input_ids``: PROMPT, ANSWER or STEP0 + t for each token."""
    step_keys: tuple[str | None, ...] = ()
    """The ``key`` of each step in the row, in step order (None where a step has none)."""
    position_ids: tuple[int, ...] | None = None
    """Task-given position ids, one per token (:mod:`procsup.data.positions`); None: the model's default
    0, 1, 2, ..."""

    @property
    def num_steps(self) -> int:
        return max((s - STEP0 + 1 for s in self.segment_ids if s >= STEP0), default=0)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []


def _prompt_pieces(text: str, fmt: StepFormat) -> list[tuple[str, int]]:
    # text and input_sep tokenized apart: joined, a sub-word tokenizer can merge the text's last character
    # with the separator, and training would see a prompt that generation never asks
    return [(text, PROMPT), (fmt.input_sep, PROMPT)]


def prompt_ids(tokenizer, text: str, fmt: StepFormat) -> list[int]:
    """Token ids of a generation prompt: ``text · input_sep`` (an input x or a rendered state)."""
    return [i for piece, _ in _prompt_pieces(text, fmt) for i in _encode(tokenizer, piece)]


RowPieces = tuple[list[tuple[str, int]], int | None, tuple[str | None, ...]]


def _layout(traj: Trajectory, fmt: StepFormat, mode: Layout) -> list[RowPieces]:
    """Each row of ``traj`` as ``([(text, segment), ...], segment of the closing EOS or None, step keys)``;
    every piece is tokenized on its own, and a row's prompt pieces are those of :func:`prompt_ids`."""
    if mode == "state":
        rows = []
        for t, step in enumerate(traj.steps):
            if step.state is None:
                raise TrajectoryError("state mode needs every step to have a state", field=f"steps[{t}].state")
            rows.append(([*_prompt_pieces(step.state, fmt), (step.action, STEP0 + t)], STEP0 + t, (step.key,)))
        return rows
    pieces = _prompt_pieces(traj.input, fmt)
    keys: tuple[str | None, ...] = ()
    if mode in ("history", "steps"):
        for t, step in enumerate(traj.steps):
            # action and separator are tokenized apart: the separator's last token is the boundary
            pieces += [(step.action, STEP0 + t), (fmt.step_sep, STEP0 + t)]
        keys = tuple(step.key for step in traj.steps)
    if mode == "steps":
        return [(pieces, None, keys)]
    pieces.append((fmt.answer_prefix + traj.target, ANSWER))
    return [(pieces, ANSWER, keys)]


def row_texts(traj: Trajectory, fmt: StepFormat, mode: Layout) -> list[str]:
    """The text of each row of ``traj`` in ``mode``, pieces concatenated (without the closing EOS)."""
    return ["".join(text for text, _ in pieces) for pieces, _, _ in _layout(traj, fmt, mode)]


def _given_positions(traj: Trajectory, where: int, pieces, encoded, closes: bool, decode) -> tuple[int, ...]:
    """Token ids of ``meta["positions"]`` (one per character, then EOS): each token at its first character's."""
    char_ids = traj.meta["positions"]
    chars = sum(len(text) for text, _ in pieces)
    if not isinstance(char_ids, list) or len(char_ids) < chars + closes or (closes and len(char_ids) != chars + 1):
        got = len(char_ids) if isinstance(char_ids, list) else type(char_ids).__name__
        raise TrajectoryError(f"trajectory {where}: meta.positions has {got} ids, its row has {chars} characters "
                              f"{'and an EOS ' if closes else ''}(positions written for another mode or format?)",
                              field="meta.positions")
    out, at = [], 0
    for text, _ in pieces:
        start = at
        for tok in encoded[text] if text else []:
            out.append(char_ids[min(at, start + len(text) - 1)])
            at += len(decode(tok))
        at = start + len(text)
    if closes:
        out.append(char_ids[chars])
    return tuple(out)


def tokenize_many(trajectories: Sequence[Trajectory], tokenizer, fmt: StepFormat, mode: Layout) -> list[Row]:
    """The rows of all ``trajectories`` in order, as :func:`tokenize` gives them, with one tokenizer call.

    Each distinct piece is encoded once: separators (and in state mode states and actions) repeat across
    rows. One call per piece cost ~0.1 ms each: 15-25 s for the addition benchmark's 20k trajectories,
    3-10% of its training run (benchmarks/train_speed.py).
    """
    if mode not in LAYOUTS:
        raise ValueError(f"mode must be one of {LAYOUTS}, got {mode!r}")
    owners = [(i, row) for i, traj in enumerate(trajectories) for row in _layout(traj, fmt, mode)]
    layouts = [row for _, row in owners]
    texts = list(dict.fromkeys(text for pieces, _, _ in layouts for text, _ in pieces if text))
    # split_special_tokens: data that reads "<|endoftext|>" or "<eos>" is text, never the EOS id mid-row
    # (hub tokenizers default to False); procsup inserts special tokens by id, below
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
    encoded = dict(zip(texts, ids))
    eos, rows, decoded = tokenizer.eos_token_id, [], {}

    def decode(tok: int) -> str:
        if tok not in decoded:
            decoded[tok] = tokenizer.decode([tok])
        return decoded[tok]

    for owner, (pieces, eos_segment, keys) in owners:
        ids, segs = [], []
        for text, segment in pieces:
            toks = encoded[text] if text else []
            ids.extend(toks)
            segs.extend([segment] * len(toks))
        if eos_segment is not None:
            ids.append(eos)
            segs.append(eos_segment)
        traj = trajectories[owner]
        given = None
        if "positions" in traj.meta and mode != "state":  # a state row is one step's state: no row-wide ids
            given = _given_positions(traj, owner, pieces, encoded, eos_segment is not None, decode)
        rows.append(Row(tuple(ids), tuple(segs), keys, given))
    return rows


def tokenize(traj: Trajectory, tokenizer, fmt: StepFormat, mode: Layout) -> list[Row]:
    """Rows for one trajectory in the given mode (one row, or one per step in ``state`` mode)."""
    return tokenize_many([traj], tokenizer, fmt, mode)


def check_length(rows: Sequence[Row], max_length: int | None, where: Sequence[str] | None = None) -> None:
    """Refuse a row longer than ``max_length`` tokens (None: no limit) with a ValueError naming it: by
    ``where[i]`` (e.g. ``"train.jsonl:7"``, ``"trajectory 3, step 2"``) or else ``row i``. Past a model's
    positions a gpt2 dies with a bare IndexError and a rotary model silently reads positions it never
    saw; cutting the row would silently drop the labels of its last steps."""
    if max_length is None:
        return
    for i, row in enumerate(rows):
        if len(row.input_ids) > max_length:
            name = where[i] if where is not None else f"row {i}"
            raise ValueError(f"{name}: {len(row.input_ids)} tokens, longer than max_length {max_length} "
                             "(raise max_length if the model has the positions, or shorten or drop the record)")


def step_starts(row: Row) -> list[int]:
    """Index of the first token of each step, in step order. The position just before it is where the
    model decides the step: its hidden state encodes the step's state, its logits predict the action."""
    first: dict[int, int] = {}
    for i, s in enumerate(row.segment_ids):
        if s >= STEP0 and s - STEP0 not in first:
            first[s - STEP0] = i
    return [first[t] for t in sorted(first)]


def step_boundaries(row: Row) -> list[int]:
    """Index of the last token of each step (its boundary token), in step order."""
    last: dict[int, int] = {}
    for i, s in enumerate(row.segment_ids):
        if s >= STEP0:
            last[s - STEP0] = i
    return [last[t] for t in sorted(last)]


def parse_history(text: str, fmt: StepFormat) -> tuple[list[str], str | None]:
    """Split generated history-mode text (after the prompt) into step actions and the answer.

    The inverse of the history layout: steps end at ``step_sep``; the answer follows
    ``answer_prefix``. Returns ``(actions, answer)``; ``answer`` is None if none was produced.
    """
    steps: list[str] = []
    rest = text
    while rest and not rest.startswith(fmt.answer_prefix):
        head, sep, rest = rest.partition(fmt.step_sep)
        steps.append(head)
        if not sep:
            return steps, None
    if not rest.startswith(fmt.answer_prefix):
        return steps, None
    return steps, rest[len(fmt.answer_prefix):].split(fmt.step_sep)[0].strip()


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str, flag: str) -> str:
    """A separator typed on the command line: ``\\n``, ``\\t`` and ``\\\\`` decoded, every other character kept
    as typed (not ``unicode_escape``, which decodes UTF-8 bytes as Latin-1 and so mangles ``' ки'``). Any
    other backslash escape is an error naming ``flag``, rather than a separator the model never saw."""
    out, chars = [], iter(text)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            if nxt not in _ESCAPES:
                raise ValueError(f"{flag} {text!r}: unknown escape \\{nxt} (only \\n, \\t and \\\\ are decoded)")
            c = _ESCAPES[nxt]
        out.append(c)
    return "".join(out)
