"""Task-given position ids: the one rule that training rows, scoring and generation share.

By default a causal LM numbers its tokens 0, 1, 2, ... A task may instead say which position id each token
takes, e.g. **position coupling** (Cho et al., 2024, arXiv 2405.20671): digits of equal significance in the
operands, and the step token that restates them, get the same id, so that the distance from a step to the
digits it needs does not grow with the problem's length. Hugging Face causal LMs take ``position_ids`` as
an input, so this needs no new parameters.

A :data:`PositionRule` maps the texts of a row's tokens (each token decoded on its own, the EOS token as
its text) to one id per token. It must be **causal after the prompt**: the id of a generated token may
depend on the tokens up to and including it, never on later ones, because generation has to feed each new
token with its id before the next one exists. Then :func:`row_positions` on a finished row and the decode
loop of :func:`procsup.rollout.generate.generate` (which calls the rule on the row as it grows) give every
token the same id (``tests/test_positions_coupled.py`` checks this property).

Training rows get their ids from the trajectory (``meta["positions"]``, written by :func:`add_positions`
with the same rule applied to the row's characters), so every trainer that tokenizes with
:func:`procsup.data.tokenize.tokenize_many` passes them without knowing the task.

Randomized positions (Ruoss et al., 2023, arXiv 2305.16843; and the random start of Cho et al.) are a rule
plus a per-row ``offset`` (:func:`shifted`), drawn once per training row (:func:`random_offsets`); a model
with learned absolute position embeddings then sees every id up to ``max_offset`` + the row's span during
training, which is what lets it read ids of longer test problems.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from procsup.data.tokenize import Layout, Row, StepFormat, row_texts
from procsup.data.trajectory import Trajectory

PositionRule = Callable[[Sequence[str]], list[int]]
"""``rule(token_texts) -> ids``: one position id per token; causal for every token after the prompt."""


def token_texts(tokenizer, ids: Sequence[int], cache: dict[int, str] | None = None) -> list[str]:
    """Each token id decoded on its own (what a :data:`PositionRule` reads); ``cache`` memoizes the decodes."""
    cache = {} if cache is None else cache
    out = []
    for i in ids:
        text = cache.get(i)
        if text is None:
            text = cache[i] = tokenizer.decode([i])
        out.append(text)
    return out


def shifted(rule: PositionRule, offset: int) -> PositionRule:
    """``rule`` with ``offset`` added to every id (a random start; 0 leaves the rule as it is)."""
    if offset < 0:
        raise ValueError(f"a position offset must be >= 0, got {offset}")
    if offset == 0:
        return rule
    return lambda texts: [p + offset for p in rule(texts)]


def random_offsets(count: int, max_offset: int, seed: int) -> list[int]:
    """``count`` start offsets, each uniform in ``[0, max_offset]``, deterministic in ``seed``."""
    if max_offset < 0:
        raise ValueError(f"max_offset must be >= 0, got {max_offset}")
    rng = random.Random(f"positions/{seed}")
    return [rng.randint(0, max_offset) for _ in range(count)]


def row_positions(row: Row, tokenizer, rule: PositionRule, cache: dict[int, str] | None = None) -> tuple[int, ...]:
    """The position ids ``rule`` gives the tokens of ``row`` (a ValueError if it returns a wrong count or a
    negative id)."""
    ids = rule(token_texts(tokenizer, row.input_ids, cache))
    if len(ids) != len(row.input_ids):
        raise ValueError(f"position rule gave {len(ids)} ids for a row of {len(row.input_ids)} tokens")
    if ids and min(ids) < 0:
        raise ValueError(f"position rule gave a negative id ({min(ids)})")
    return tuple(ids)


def with_positions(rows: Sequence[Row], tokenizer, rules: PositionRule | Sequence[PositionRule]) -> list[Row]:
    """``rows`` with ``position_ids`` set by ``rules`` (one rule for all rows, or one per row: a random offset
    or stride per training row)."""
    per_row = [rules] * len(rows) if callable(rules) else list(rules)
    if len(per_row) != len(rows):
        raise ValueError(f"{len(per_row)} position rules for {len(rows)} rows")
    cache: dict[int, str] = {}
    return [dataclasses.replace(r, position_ids=row_positions(r, tokenizer, rule, cache)) for r, rule in zip(rows, per_row)]


EOS_TEXT = "\0"
"""What a rule reads for the closing EOS when it runs on characters (:func:`add_positions`)."""


def add_positions(traj: Trajectory, rule: PositionRule, fmt: StepFormat, mode: Layout) -> Trajectory:
    """``traj`` with ``meta["positions"]``: ``rule`` applied to the characters of its ``mode`` row (and the
    closing EOS, read as :data:`EOS_TEXT`, in history and outcome mode), which
    :func:`~procsup.data.tokenize.tokenize_many` turns into the row's ``position_ids``."""
    if mode == "state":
        raise ValueError("task-given positions are for history, outcome and steps rows (a state row has no history)")
    (text,) = row_texts(traj, fmt, mode)
    chars = [*text, EOS_TEXT] if mode != "steps" else list(text)
    ids = rule(chars)
    if len(ids) != len(chars) or (ids and min(ids) < 0):
        raise ValueError(f"position rule gave {len(ids)} ids (min {min(ids, default=0)}) for {len(chars)} characters")
    return dataclasses.replace(traj, meta={**traj.meta, "positions": list(ids)})


# --- helpers of the task rules (addition, logic, word problems): blocks of ids and characters -> tokens ---
def by_characters(texts: Sequence[str], char_ids: Callable[[str], list[int]]) -> list[int]:
    """A token rule from a character rule: ``char_ids(text)`` numbers every character of the row's text (an
    empty token read as one ``"\\0"``); each token takes its first character's id."""
    chars = [t or "\0" for t in texts]
    ids = char_ids("".join(chars))
    out, at = [], 0
    for t in chars:
        out.append(ids[at])
        at += len(t)
    return out


def check_slots(slots: Sequence[int] | None) -> tuple[int, ...]:
    """``slots`` as a tuple (empty for None), or a ValueError unless they are increasing integers >= 1."""
    if slots is not None and (not slots or min(slots) < 1 or any(b <= a for a, b in zip(slots, slots[1:]))):
        raise ValueError(f"slots must be increasing integers >= 1, got {list(slots)}")
    return tuple(slots or ())


def block_start(t: int, stride: int, slots: tuple[int, ...]) -> int:
    """First id of block t: ``stride * slots[t]`` (default ``slots[t] = t + 1``; past the given slots the blocks
    continue one apart); t = -1: 0."""
    if t < 0:
        return 0
    slot = slots[t] if t < len(slots) else (slots[-1] if slots else 0) + t - len(slots) + 1
    return stride * slot


def random_slots(rng: random.Random, count: int, max_slot: int) -> list[int]:
    """``count`` increasing slots drawn from ``[1, max_slot]`` (randomized positions, Ruoss et al., 2023: a
    training row's blocks spread so that it has the distances of a longer test row)."""
    if count > max_slot:
        raise ValueError(f"{count} blocks do not fit in slots 1..{max_slot}")
    return sorted(rng.sample(range(1, max_slot + 1), count))


def randomized_rows(trajs: Sequence[Trajectory], rule_at: Callable[[tuple[int, ...] | None], PositionRule],
                    blocks: Sequence[int], max_slot: int, spread: float, max_offset: int, seed: int, name: str,
                    fmt: StepFormat, mode: Layout) -> list[Trajectory]:
    """Training rows with randomized coupled ids: trajectory i gets ``rule_at(slots)`` (a task's coupled rule
    with its blocks at ``slots``; None: one apart), where a ``spread`` share of rows draws ``blocks[i]``
    increasing slots from ``[1, max_slot]`` (:func:`random_slots`), shifted by a start offset from
    ``[0, max_offset]`` (:func:`random_offsets`); deterministic in ``seed`` and the task's ``name``."""
    offsets = random_offsets(len(trajs), max_offset, seed)
    rng = random.Random(f"{name}-slots/{seed}")
    out = []
    for traj, count, offset in zip(trajs, blocks, offsets):
        slots = random_slots(rng, count, max_slot) if rng.random() < spread else None
        out.append(add_positions(traj, shifted(rule_at(slots), offset), fmt, mode))
    return out
