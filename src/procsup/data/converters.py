"""Converters from public step-labelled datasets to :class:`Trajectory`.

One pure function per source record (``from_<source>(record) -> Trajectory``) and one reader per
file format (``read_<source>(path, *, rejects=None, ...)``). JSONL files go through
:func:`procsup.data.io.iter_records`, so errors name ``file:line`` and ``rejects`` works as there;
JSON files (ProcessBench arrays, MR-Ben objects) are parsed whole and errors name ``file:[index]``.
Every converter keeps the source ids in ``meta`` and raises :class:`TrajectoryError` naming the
source field (``label.steps[3].chosen_completion``) when a record is malformed.

Label policies (the choices a user most often needs to know):

- PRM800K (Lightman et al., 2023, "Let's Verify Step by Step"): follow ``chosen_completion``; a
  labeler-written ``human_completion`` is taken as a correct step; where labelling stopped
  (``chosen_completion`` null on the last step) the first ``-1`` completion ends the trajectory as a
  wrong step, otherwise that last step is dropped. Ratings: ``+1`` True, ``-1`` False, ``0`` per
  ``neutral`` (see :data:`NEUTRAL_POLICIES`), null -> unlabelled.
- Math-Shepherd (Wang et al., 2024): the :data:`MATH_SHEPHERD_STEP_TAG` marks step ends in ``input``;
  ``+``/``-`` at the same place in ``label`` give the labels.
- ProcessBench (Zheng et al., 2024) and MR-Ben (Zeng et al., 2024) annotate only the first error.
  Steps after it have no label, so by default they are dropped: the trajectory ends on its first
  wrong step and every kept step has a hard label. ``keep_after_error=True`` keeps them unlabelled.
  ``meta["first_error"]`` is the 0-based index of the first wrong step, -1 when there is none.
- PRMBench (Song et al., 2025): all wrong steps are marked, so every step is labelled.
- GSM8K (Cobbe et al., 2021): no human step labels; a step's label says whether its ``<<expr=value>>``
  calculator annotations are arithmetically right (checked by :func:`eval_arithmetic`, never
  ``eval``); a step without annotations is unlabelled.
- AgentProcessBench: one step per assistant message; ``+1``/``-1``/``0`` as in PRM800K.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar

from procsup.data.io import iter_records, parse_items
from procsup.data.trajectory import Label, Trajectory, TrajectoryError

logger = logging.getLogger(__name__)

T = TypeVar("T")

Neutral = Literal["positive", "negative", "soft", "unlabeled"]
NEUTRAL_POLICIES: dict[str, Label | None] = {
    "positive": True,  # Lightman et al.'s default: a neutral step is not an error
    "negative": False,
    "soft": 0.5,
    # The step is kept but not trained on. Removing it instead would change the prefix every later
    # step was rated in.
    "unlabeled": None,
}

MATH_SHEPHERD_STEP_TAG = "ки"  # Cyrillic "ki" (U+043A U+0438), Math-Shepherd's end-of-step tag
MATH_SHEPHERD_LABELS = {"+": True, "-": False}
_MATH_SHEPHERD_ANSWER = re.compile(r"The answer is:?\s*(.+)$")

# "Step 3: ", "Step 3. ", "3. " at the start of a step; stripped only when the number is the step's own.
# "3." must be followed by a space, so that "3.5 is ..." keeps its number.
_STEP_NUMBER = re.compile(r"^\s*(?:step\s*)?(\d+)\s*(?::\s*|\.(?:\s+|$))", re.IGNORECASE)


# --- shared helpers ----------------------------------------------------------------------------


def _field(record: Any, name: str, kind: type | tuple[type, ...], *, where: str | None = None) -> Any:
    """``record[name]``, checked to be of ``kind``; errors name ``where`` (default ``name``)."""
    where = where or name
    if not isinstance(record, dict):
        raise TrajectoryError(f"must be a JSON object, got {type(record).__name__}", field=where.rpartition(".")[0] or None)
    if name not in record:
        raise TrajectoryError("missing required field", field=where)
    value = record[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = "/".join(k.__name__ for k in _as_tuple(kind))
        got = "null" if value is None else type(value).__name__
        raise TrajectoryError(f"must be {names}, got {got}", field=where)
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _strings(record: dict[str, Any], name: str) -> list[str]:
    items = _field(record, name, list)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TrajectoryError(f"must be a string, got {type(item).__name__}", field=f"{name}[{i}]")
    return items


def _strip_step_number(text: str, number: int) -> str:
    """Drop a leading "Step k:" / "k." when k is this step's 1-based number; keep the text otherwise."""
    m = _STEP_NUMBER.match(text)
    return text[m.end() :] if m and int(m.group(1)) == number else text


def _build(
    input: str,
    target: str,
    actions: list[str],
    labels: list[Label | None],
    sources: list[str],
    meta: dict[str, Any],
    *,
    states: list[str | None] | None = None,
    steps_field: str = "steps",
) -> Trajectory:
    """Validate through :meth:`Trajectory.from_dict`; a step error names ``sources[i]``, the step's source field."""
    steps = []
    for i, (action, label) in enumerate(zip(actions, labels, strict=True)):
        step: dict[str, Any] = {"action": action, "label": label}
        if states is not None and states[i] is not None:
            step["state"] = states[i]
        steps.append(step)
    try:
        return Trajectory.from_dict({"input": input, "target": target, "steps": steps, "meta": meta})
    except TrajectoryError as e:
        m = re.match(r"^steps\[(\d+)\]", e.field or "")
        field = sources[int(m.group(1))] if m else e.field
        if e.field == "steps":
            field = steps_field
        raise TrajectoryError(e.message, field=field) from None


def _first_error_labels(n: int, first_error: int, *, keep_after_error: bool) -> list[bool | None]:
    """Labels for a solution of ``n`` steps whose first wrong step is ``first_error`` (0-based, -1 = none).

    Steps before it are True, it is False; later steps are unlabelled, and dropped (the list is cut
    after the error) unless ``keep_after_error``.
    """
    if first_error == -1:
        return [True] * n
    labels: list[bool | None] = [True] * first_error + [False]
    return labels + [None] * (n - first_error - 1) if keep_after_error else labels


def _neutral(neutral: str) -> Label | None:
    if neutral not in NEUTRAL_POLICIES:
        raise ValueError(f"neutral must be one of {sorted(NEUTRAL_POLICIES)}, got {neutral!r}")
    return NEUTRAL_POLICIES[neutral]


def _rating_label(rating: Any, neutral: str, field: str) -> Label | None:
    """A -1/0/+1 human rating -> label; null -> unlabelled."""
    if rating is None:
        return None
    if isinstance(rating, bool) or rating not in (-1, 0, 1):
        raise TrajectoryError(f"rating must be -1, 0, 1 or null, got {rating!r}", field=field)
    return {1: True, -1: False}.get(rating, _neutral(neutral))


def _flatten(items: Iterable[Trajectory | list[Trajectory]]) -> list[Trajectory]:
    out: list[Trajectory] = []
    for item in items:
        out.extend(item if isinstance(item, list) else [item])
    return out


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise TrajectoryError(f"invalid JSON: {e.msg} (line {e.lineno} column {e.colno})", where=str(path)) from None
    except UnicodeDecodeError as e:
        raise TrajectoryError(f"not valid UTF-8: {e.reason} at byte {e.start}", where=str(path)) from None


def _convert_items(
    path: Path, items: Iterable[tuple[str, Any]], parse: Callable[[Any], T], rejects: str | Path | None
) -> Iterator[T]:
    """``parse`` each ``(index, record)`` of a parsed JSON file; errors and ``rejects`` as in ``iter_records``,
    with ``file:[index]`` instead of ``file:line`` (reject rows: ``{"index", "error", "raw"}``)."""
    located = ((index, lambda r=record: r, lambda r=record: json.dumps(r, ensure_ascii=False)) for index, record in items)
    return parse_items(path, located, parse, rejects=rejects, location_key="index")


def _json_array_items(path: Path) -> Iterator[tuple[str, Any]]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise TrajectoryError(f"expected a JSON array of records, got {type(data).__name__}", where=str(path))
    return ((f"[{i}]", record) for i, record in enumerate(data))


# --- PRM800K -----------------------------------------------------------------------------------


def from_prm800k(record: Any, *, neutral: Neutral = "positive") -> Trajectory:
    """One PRM800K labelling record (one solution) -> trajectory.

    Follows ``chosen_completion`` step by step (a ``human_completion`` replaces it when present and
    is labelled True: the labeler wrote it as the correct continuation). On the last step, where
    labelling stopped and ``chosen_completion`` is null, the first ``-1`` completion ends the
    trajectory as a wrong step; a last step with no ``-1`` (give_up, unrated) is dropped. A null
    ``chosen_completion`` earlier, with no human completion, is an error.
    """
    label_rec = _field(record, "label", dict)
    question = _field(record, "question", dict)
    problem = _field(question, "problem", str, where="question.problem")
    answer = question.get("ground_truth_answer")
    raw_steps = _field(label_rec, "steps", list, where="label.steps")
    actions: list[str] = []
    labels: list[Label | None] = []
    sources: list[str] = []
    human_steps: list[int] = []
    for i, raw in enumerate(raw_steps):
        where = f"label.steps[{i}]"
        if not isinstance(raw, dict):
            raise TrajectoryError(f"must be an object, got {type(raw).__name__}", field=where)
        completions = raw.get("completions") or []
        if not isinstance(completions, list):
            raise TrajectoryError(f"must be a list, got {type(completions).__name__}", field=f"{where}.completions")
        chosen, human = raw.get("chosen_completion"), raw.get("human_completion")
        if human is not None:
            text = _field(human, "text", str, where=f"{where}.human_completion.text")
            actions.append(text)
            labels.append(True)
            sources.append(f"{where}.human_completion.text")
            human_steps.append(len(actions) - 1)
            continue
        if chosen is None:
            if i != len(raw_steps) - 1:
                raise TrajectoryError("null before the last step, and no human_completion", field=f"{where}.chosen_completion")
            wrong = [j for j, c in enumerate(completions) if isinstance(c, dict) and c.get("rating") == -1]
            if not wrong:
                break  # labelling stopped without finding an error: nothing to learn from this step
            chosen = wrong[0]
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
            message = f"{chosen!r} is not an index into {len(completions)} completion(s)"
            raise TrajectoryError(message, field=f"{where}.chosen_completion")
        completion = completions[chosen]
        cwhere = f"{where}.completions[{chosen}]"
        actions.append(_field(completion, "text", str, where=f"{cwhere}.text"))
        labels.append(_rating_label(completion.get("rating"), neutral, f"{cwhere}.rating"))
        sources.append(f"{cwhere}.text")
    if not actions:
        raise TrajectoryError("no step could be rebuilt from the labelled completions", field="label.steps")
    meta = {
        "source": "prm800k",
        "labeler": record.get("labeler"),
        "timestamp": record.get("timestamp"),
        "generation": record.get("generation"),
        "finish_reason": label_rec.get("finish_reason"),
        "is_quality_control_question": record.get("is_quality_control_question"),
        "is_initial_screening_question": record.get("is_initial_screening_question"),
        "human_completion_steps": human_steps,
        "neutral": neutral,
    }
    target = answer if isinstance(answer, str) else ""
    return _build(problem, target, actions, labels, sources, meta, steps_field="label.steps")


def read_prm800k(path: str | Path, *, rejects: str | Path | None = None, neutral: Neutral = "positive") -> list[Trajectory]:
    """PRM800K JSONL (one labelling record per line) -> trajectories; see :func:`from_prm800k`."""
    _neutral(neutral)  # a bad policy is a ValueError up front, not a reject per line
    return list(iter_records(path, functools.partial(from_prm800k, neutral=neutral), rejects=rejects))


# --- Math-Shepherd -----------------------------------------------------------------------------


def from_math_shepherd(record: Any) -> Trajectory:
    """One Math-Shepherd record -> trajectory: ``input`` is question + steps, each ending in
    :data:`MATH_SHEPHERD_STEP_TAG`; ``label`` is the same text with each tag replaced by ``+``/``-``.
    The question is the text before ``Step 1:``; the ``Step k:`` prefixes are stripped from actions."""
    text = _field(record, "input", str)
    labelled = _field(record, "label", str)
    segments = text.split(MATH_SHEPHERD_STEP_TAG)
    if len(segments) < 2:
        raise TrajectoryError(f"no step tag {MATH_SHEPHERD_STEP_TAG!r} found", field="input")
    if segments[-1].strip():
        raise TrajectoryError("text after the last step tag", field="input")
    labels: list[Label | None] = []
    pos = 0
    for k, segment in enumerate(segments[:-1]):
        if not labelled.startswith(segment, pos) or pos + len(segment) >= len(labelled):
            raise TrajectoryError(f"does not match 'input' before step tag {k + 1}", field="label")
        pos += len(segment)
        mark = labelled[pos]
        if mark not in MATH_SHEPHERD_LABELS:
            raise TrajectoryError(f"step {k + 1} is marked {mark!r}, expected '+' or '-'", field="label")
        labels.append(MATH_SHEPHERD_LABELS[mark])
        pos += 1
    if labelled[pos:] != segments[-1]:
        raise TrajectoryError("does not match 'input' after the last step tag", field="label")
    question, sep, first = segments[0].partition("Step 1:")
    if not sep:
        raise TrajectoryError("no 'Step 1:' separating the question from the steps", field="input")
    raw_steps = ["Step 1:" + first, *segments[1:-1]]
    actions = [_strip_step_number(s, k + 1).strip() for k, s in enumerate(raw_steps)]
    answer = _MATH_SHEPHERD_ANSWER.search(actions[-1])
    meta = {"source": "math_shepherd", "task": record.get("task")}
    return _build(question.strip(), answer.group(1).strip() if answer else "", actions, labels, ["input"] * len(actions), meta)


def read_math_shepherd(path: str | Path, *, rejects: str | Path | None = None) -> list[Trajectory]:
    """Math-Shepherd JSONL -> trajectories; see :func:`from_math_shepherd`."""
    return list(iter_records(path, from_math_shepherd, rejects=rejects))


# --- ProcessBench ------------------------------------------------------------------------------


def from_processbench(record: Any, *, keep_after_error: bool = False) -> Trajectory:
    """One ProcessBench record -> trajectory. ``label`` is the 0-based index of the first wrong step
    (-1: none); steps after it are dropped unless ``keep_after_error`` (then unlabelled).
    ``meta["first_error"]`` keeps ``label``. The target is empty: ProcessBench gives no reference answer."""
    problem = _field(record, "problem", str)
    steps = _strings(record, "steps")
    first_error = _field(record, "label", int)
    if not -1 <= first_error < len(steps):
        raise TrajectoryError(f"{first_error} is not -1 or a step index (0..{len(steps) - 1})", field="label")
    labels = _first_error_labels(len(steps), first_error, keep_after_error=keep_after_error)
    meta = {
        "source": "processbench",
        "id": record.get("id"),
        "generator": record.get("generator"),
        "final_answer_correct": record.get("final_answer_correct"),
        "first_error": first_error,
        "n_steps": len(steps),
    }
    kept = steps[: len(labels)]
    return _build(problem, "", kept, labels, [f"steps[{i}]" for i in range(len(kept))], meta, steps_field="steps")


def read_processbench(
    path: str | Path, *, rejects: str | Path | None = None, keep_after_error: bool = False
) -> list[Trajectory]:
    """A ProcessBench JSON array file -> trajectories; errors name ``file:[index]``."""
    path = Path(path)
    parse = functools.partial(from_processbench, keep_after_error=keep_after_error)
    return list(_convert_items(path, _json_array_items(path), parse, rejects))


# --- PRMBench ----------------------------------------------------------------------------------


def from_prmbench(record: Any) -> Trajectory:
    """One PRMBench record -> trajectory of ``modified_process``: step i (1-based) is wrong iff
    ``i in error_steps``. An ``error_steps`` index beyond the steps (an upstream quirk in ~100
    records) is an error rather than silently clipped: dropping it would mark a flawed solution
    correct. Leading ``k.`` / ``Step k.`` numbers are stripped."""
    question = _field(record, "modified_question", str)
    steps = _strings(record, "modified_process")
    error_steps = _field(record, "error_steps", list)
    for i, e in enumerate(error_steps):
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= len(steps):
            raise TrajectoryError(f"{e!r} is not a 1-based step number (1..{len(steps)})", field=f"error_steps[{i}]")
    wrong = set(error_steps)
    labels: list[Label | None] = [k + 1 not in wrong for k in range(len(steps))]
    actions = [_strip_step_number(s, k + 1) for k, s in enumerate(steps)]
    target = record.get("ground_truth")
    meta = {
        "source": "prmbench",
        "idx": record.get("idx"),
        "classification": record.get("classification"),
        "process": "modified",
        "error_steps": error_steps,
        "modified_steps": record.get("modified_steps"),
        "reason": record.get("reason"),
    }
    sources = [f"modified_process[{k}]" for k in range(len(steps))]
    target = target if isinstance(target, str) else ""
    return _build(question, target, actions, labels, sources, meta, steps_field="modified_process")


def from_prmbench_original(record: Any) -> Trajectory | None:
    """The ``original_process`` of a PRMBench record (PRM800K human-verified, so every step True);
    None when the record has none."""
    if not isinstance(record, dict) or record.get("original_process") is None:
        return None
    question = _field(record, "original_question", str)
    steps = _strings(record, "original_process")
    target = record.get("ground_truth")
    meta = {"source": "prmbench", "idx": record.get("idx"), "classification": record.get("classification"), "process": "original"}
    actions = [_strip_step_number(s, k + 1) for k, s in enumerate(steps)]
    sources = [f"original_process[{k}]" for k in range(len(steps))]
    target = target if isinstance(target, str) else ""
    return _build(question, target, actions, [True] * len(steps), sources, meta, steps_field="original_process")


def _prmbench_both(record: Any) -> list[Trajectory]:
    original = from_prmbench_original(record)
    return [from_prmbench(record)] + ([original] if original is not None else [])


def read_prmbench(
    path: str | Path, *, rejects: str | Path | None = None, include_original: bool = False
) -> list[Trajectory]:
    """PRMBench JSONL -> trajectories; with ``include_original`` each modified trajectory is followed
    by its original (all-correct) one. A bad record is rejected whole."""
    parse = _prmbench_both if include_original else from_prmbench
    return _flatten(iter_records(path, parse, rejects=rejects))


# --- MR-Ben ------------------------------------------------------------------------------------

_MR_BEN_STEP = re.compile(r"^\s*Step\s*(\d+)\s*:\s*")


def from_mr_ben(record: Any, *, keep_after_error: bool = False) -> Trajectory:
    """One MR-Ben solution record -> trajectory. Steps are the non-blank ``Model_Solution_Steps``
    ("Step k: …", prefix stripped; the final "Solution: …" line is a step too).
    ``Model_Solution_First_Error_Step`` ("k", the step numbered k, or "N/A") gives first-error labels
    as in :func:`from_processbench`; ``meta["first_error"]`` is the 0-based position of that step.
    Coding records (one code string, the first error given as a code line) have no steps and are an
    error."""
    question = _field(record, "Question", str)
    raw_steps = _field(record, "Model_Solution_Steps", (list, str))
    if isinstance(raw_steps, str):
        raise TrajectoryError("a single string (a coding record) is not split into steps", field="Model_Solution_Steps")
    # Blank elements separate steps in some files (physics); "Step k" numbers, not positions, are
    # what Model_Solution_First_Error_Step refers to.
    positions = [i for i, s in enumerate(_strings(record, "Model_Solution_Steps")) if s.strip()]
    steps = [record["Model_Solution_Steps"][i] for i in positions]
    numbers = [int(m.group(1)) if (m := _MR_BEN_STEP.match(s)) else None for s in steps]
    raw_first = _field(record, "Model_Solution_First_Error_Step", (str, int))
    if raw_first == "N/A":
        first_error = -1
    elif isinstance(raw_first, int) or raw_first.strip().isdigit():
        k = int(raw_first)
        first_error = numbers.index(k) if k in numbers else k - 1
        if not 0 <= first_error < len(steps):
            raise TrajectoryError(f"step {raw_first} is not among {len(steps)} steps", field="Model_Solution_First_Error_Step")
    else:
        message = f"must be a 1-based step number or 'N/A', got {raw_first!r}"
        raise TrajectoryError(message, field="Model_Solution_First_Error_Step")
    labels = _first_error_labels(len(steps), first_error, keep_after_error=keep_after_error)
    actions = [_MR_BEN_STEP.sub("", s, count=1) for s in steps[: len(labels)]]
    if options := record.get("Options"):
        question = f"{question}\n{options}"
    target = record.get("Ground_Truth_Answer_Modified") or record.get("Ground_Truth_Answer") or ""
    meta = {
        "source": "mr_ben",
        "question_uuid": record.get("Question_UUID"),
        "subject": record.get("Subject"),
        "sampled_model": record.get("Sampled_Model"),
        "correctness": record.get("Model_Solution_Correctness"),
        "first_error": first_error,
        "first_error_step": raw_first,
        "n_steps": len(steps),
        "error_reason": record.get("Model_Solution_Error_Reason"),
        "rectified_first_error_step": record.get("Model_Solution_Rectified_First_Error_Step"),
    }
    sources = [f"Model_Solution_Steps[{i}]" for i in positions[: len(actions)]]
    target = target if isinstance(target, str) else str(target)
    return _build(question, target, actions, labels, sources, meta, steps_field="Model_Solution_Steps")


def read_mr_ben(path: str | Path, *, rejects: str | Path | None = None, keep_after_error: bool = False) -> list[Trajectory]:
    """An MR-Ben subject file (a JSON object ``{Question_UUID: [solution, ...]}``) -> trajectories;
    errors name ``file:['<uuid>'][j]``."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise TrajectoryError(f"expected a JSON object keyed by Question_UUID, got {type(data).__name__}", where=str(path))

    def items() -> Iterator[tuple[str, Any]]:
        for key, solutions in data.items():
            if not isinstance(solutions, list):
                raise TrajectoryError(f"must be a list of solutions, got {type(solutions).__name__}", where=f"{path}:[{key!r}]")
            for j, record in enumerate(solutions):
                yield f"[{key!r}][{j}]", record

    parse = functools.partial(from_mr_ben, keep_after_error=keep_after_error)
    return list(_convert_items(path, items(), parse, rejects))


# --- GSM8K and its calculator annotations ------------------------------------------------------

GSM8K_ANSWER_PREFIX = "#### "
_CALCULATION = re.compile(r"<<([^<>]*)>>")
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(.))")
_MAX_EXPRESSION = 200  # characters; bounds the parser's recursion and the size of the numbers


def eval_arithmetic(text: str) -> Fraction:
    """Exact value of an arithmetic expression: numbers, ``+ - * /``, unary minus, parentheses.

    A recursive-descent parser over those tokens alone; nothing is ever passed to ``eval``, so any
    other character (letters, ``_``, quotes, ``**``) is a ``ValueError``. Division by zero raises
    ``ZeroDivisionError``.
    """
    if len(text) > _MAX_EXPRESSION:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION} characters")
    tokens: list[str] = []
    for number, other in _TOKEN.findall(text.rstrip()):
        if other and other not in "+-*/()":
            raise ValueError(f"unexpected character {other!r}")
        tokens.append(number or other)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of expression")
        pos += 1
        return tokens[pos - 1]

    def expr() -> Fraction:  # expr := term (("+" | "-") term)*
        value = term()
        while peek() in ("+", "-"):
            value = value + term() if take() == "+" else value - term()
        return value

    def term() -> Fraction:  # term := factor (("*" | "/") factor)*
        value = factor()
        while peek() in ("*", "/"):
            if take() == "*":
                value *= factor()
            else:
                value /= factor()  # Fraction raises ZeroDivisionError
        return value

    def factor() -> Fraction:  # factor := "-" factor | "+" factor | number | "(" expr ")"
        token = take()
        if token in ("-", "+"):
            return -factor() if token == "-" else factor()
        if token == "(":
            value = expr()
            if take() != ")":
                raise ValueError("missing ')'")
            return value
        if token[0].isdigit() or token[0] == ".":
            return Fraction(token)
        raise ValueError(f"unexpected {token!r}")

    value = expr()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r}")
    return value


def check_calculation(annotation: str) -> dict[str, Any]:
    """One ``expr=claimed`` calculator annotation -> ``{"expr", "claimed", "value", "correct"}``.

    ``correct`` is True when the claimed number equals the value (or, for a claim with decimals, the
    value rounded to that many decimals, as in ``10/3=3.33``), False when it differs or the expression divides by
    zero, and None when the annotation cannot be parsed. ``value`` is a float, or None.
    """
    expression, sep, claimed_text = annotation.rpartition("=")
    out: dict[str, Any] = {"expr": annotation, "claimed": None, "value": None, "correct": None}
    if sep:
        out.update(expr=expression, claimed=claimed_text)
    if not sep:
        return out
    try:
        claimed = eval_arithmetic(claimed_text)
        value = eval_arithmetic(expression)
    except ZeroDivisionError:
        out["correct"] = False
        return out
    except (ValueError, RecursionError):
        return out
    out["value"] = float(value)
    # A claim written with d decimals may round (10/3=3.33); a whole-number claim must be exact, so
    # that 7/2=4 is not excused as rounding.
    decimals = len(claimed_text.strip().partition(".")[2])
    out["correct"] = value == claimed or (decimals > 0 and round(value, decimals) == claimed)
    return out


def _step_label(checks: list[dict[str, Any]]) -> bool | None:
    """All annotations right -> True; any wrong -> False; none, or any unparseable -> None."""
    results = [c["correct"] for c in checks]
    if False in results:
        return False
    if not results or None in results:
        return None
    return True


def from_gsm8k(record: Any, *, keep_annotations: bool = False) -> Trajectory:
    """One GSM8K record (``question``, ``answer``) -> trajectory. Steps are the answer's lines before
    ``#### N`` (the target N). Each step is labelled by its calculator annotations (see
    :func:`check_calculation`; no annotation -> unlabelled); ``meta["calculations"]`` holds the
    parsed annotations per step. Annotations are removed from the actions unless ``keep_annotations``."""
    question = _field(record, "question", str)
    answer = _field(record, "answer", str)
    lines = [line for line in answer.split("\n") if line.strip()]
    if not lines or not lines[-1].startswith(GSM8K_ANSWER_PREFIX):
        raise TrajectoryError(f"the last line must be '{GSM8K_ANSWER_PREFIX}<answer>'", field="answer")
    target = lines[-1][len(GSM8K_ANSWER_PREFIX) :].strip()
    actions, labels, calculations = [], [], []
    for line in lines[:-1]:
        checks = [check_calculation(a) for a in _CALCULATION.findall(line)]
        calculations.append(checks)
        labels.append(_step_label(checks))
        actions.append(line if keep_annotations else _CALCULATION.sub("", line))
    meta = {"source": "gsm8k", "calculations": calculations}
    return _build(question, target, actions, labels, ["answer"] * len(actions), meta, steps_field="answer")


def read_gsm8k(path: str | Path, *, rejects: str | Path | None = None, keep_annotations: bool = False) -> list[Trajectory]:
    """GSM8K JSONL (``train.jsonl``, ``test.jsonl``) -> trajectories; see :func:`from_gsm8k`."""
    parse = functools.partial(from_gsm8k, keep_annotations=keep_annotations)
    return list(iter_records(path, parse, rejects=rejects))


# --- AgentProcessBench -------------------------------------------------------------------------


def _render_tool_call(call: Any, where: str) -> str:
    function = _field(call, "function", dict, where=f"{where}.function")
    name = _field(function, "name", str, where=f"{where}.function.name")
    arguments = function.get("arguments", "")
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}</tool_call>"


def from_agentprocessbench(record: Any, *, neutral: Neutral = "positive") -> Trajectory:
    """One AgentProcessBench trajectory -> trajectory: one step per assistant message (its content,
    then each tool call as ``<tool_call>{"name", "arguments"}</tool_call>``); the step's ``state`` is
    the text of the messages since the previous assistant message (system/user prompt, tool results).
    ``step_labels`` ``{"<message index>": +1/0/-1}`` -> True / ``neutral`` / False; a label on a
    non-assistant message is an error. Target = the first accepted answer."""
    question = _field(record, "question", str)
    messages = _field(record, "messages", list)
    raw_labels = _field(record, "step_labels", dict)
    ground_truth = record.get("ground_truth")
    targets = ground_truth.get("target") if isinstance(ground_truth, dict) else None
    target = targets[0] if isinstance(targets, list) and targets and isinstance(targets[0], str) else ""
    actions, states, labels, sources, indices = [], [], [], [], []
    context: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = _field(message, "role", str, where=f"{where}.role")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TrajectoryError(f"must be a string, got {type(content).__name__}", field=f"{where}.content")
        if role != "assistant":
            context.append(content)
            continue
        calls = message.get("tool_calls") or []
        parts = [content] if content else []
        parts += [_render_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        actions.append("\n".join(parts))
        states.append("\n\n".join(context) or None)
        context = []
        raw = raw_labels.get(str(i))
        labels.append(_rating_label(raw, neutral, f"step_labels[{str(i)!r}]"))
        sources.append(f"{where}.content")
        indices.append(i)
    for key in raw_labels:
        if not (key.isdigit() and int(key) in indices):
            raise TrajectoryError("not the index of an assistant message", field=f"step_labels[{key!r}]")
    meta = {
        "source": "agentprocessbench",
        "total_index": record.get("total_index"),
        "query_index": record.get("query_index"),
        "sample_index": record.get("sample_index"),
        "data_source": record.get("data_source"),
        "accepted_answers": targets,
        "answer_text": record.get("answer_text"),
        "final_label": record.get("final_label"),
        "message_indices": indices,
        "neutral": neutral,
    }
    return _build(question, target, actions, labels, sources, meta, states=states, steps_field="messages")


def read_agentprocessbench(
    path: str | Path, *, rejects: str | Path | None = None, neutral: Neutral = "positive"
) -> list[Trajectory]:
    """AgentProcessBench JSONL with full ``messages`` (e.g. ``hotpotqa.jsonl``) -> trajectories."""
    _neutral(neutral)
    return list(iter_records(path, functools.partial(from_agentprocessbench, neutral=neutral), rejects=rejects))


# --- Any dataset of the usual shape (a field mapping) ------------------------------------------

MAP_KEYS = ("question", "steps", "first_error", "labels", "answer")
"""The fields :func:`from_mapped` reads; a mapping names, for each, the record's field (dotted for nesting)."""


def parse_mapping(text: str) -> dict[str, str]:
    """``"question=problem,steps=steps,first_error=label,answer=final"`` -> ``{"question": "problem", ...}``.
    ``question`` and ``steps`` are required; at most one of ``first_error`` and ``labels``."""
    mapping: dict[str, str] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        key, sep, field = item.partition("=")
        key, field = key.strip(), field.strip()
        if not sep or not field:
            raise ValueError(f"--map item {item!r} must look like key=field")
        if key not in MAP_KEYS:
            raise ValueError(f"--map key {key!r} is not one of {', '.join(MAP_KEYS)}")
        mapping[key] = field
    missing = [k for k in ("question", "steps") if k not in mapping]
    if missing:
        raise ValueError(f"--map needs {' and '.join(missing)} (e.g. question=problem,steps=steps)")
    if "first_error" in mapping and "labels" in mapping:
        raise ValueError("--map takes first_error or labels, not both")
    return mapping


def _get(record: Any, dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; a missing part is a :class:`TrajectoryError` naming the path."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            raise TrajectoryError(f"must be a JSON object, got {type(value).__name__}", field=dotted.rpartition(".")[0] or None)
        if part not in value:
            raise TrajectoryError("missing required field", field=dotted)
        value = value[part]
    return value


def _mapped_label(value: Any, field: str) -> Label | None:
    """A per-step label of a mapped dataset: true/false, 1/0 (hard), +1/-1 (ratings), a float in [0, 1]
    (soft), null (unlabelled). ``0`` is False, as in 0/1 lists; -1 is False, as in ratings."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (-1, 0, 1):
        return value == 1
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    if isinstance(value, str) and value in ("+", "-"):
        return value == "+"
    raise TrajectoryError(f"must be true/false, 1/0/-1, '+'/'-', a float in [0, 1] or null, got {value!r}", field=field)


def from_mapped(record: Any, mapping: dict[str, str], *, keep_after_error: bool = False) -> Trajectory:
    """One record of a dataset of the usual shape -> trajectory, its fields named by ``mapping``
    (:func:`parse_mapping`): ``question`` (a string), ``steps`` (a list of strings, or one string split on
    newlines), ``answer`` (optional; any scalar, as a string), and the labels either as ``first_error`` (the
    0-based index of the first wrong step; -1, null or "N/A" for none; steps after it dropped unless
    ``keep_after_error``, as for ProcessBench) or as per-step ``labels`` (see :func:`_mapped_label`).
    Without either, the steps are unlabelled."""
    question = _get(record, mapping["question"])
    if not isinstance(question, str):
        raise TrajectoryError(f"must be a string, got {type(question).__name__}", field=mapping["question"])
    raw_steps = _get(record, mapping["steps"])
    steps_field = mapping["steps"]
    if isinstance(raw_steps, str):
        raw_steps = [s for s in raw_steps.split("\n") if s.strip()]
    if not isinstance(raw_steps, list):
        raise TrajectoryError(f"must be a list of strings or a string, got {type(raw_steps).__name__}", field=steps_field)
    for i, s in enumerate(raw_steps):
        if not isinstance(s, str):
            raise TrajectoryError(f"must be a string, got {type(s).__name__}", field=f"{steps_field}[{i}]")
    meta: dict[str, Any] = {"source": "mapped"}
    if "first_error" in mapping:
        raw = _get(record, mapping["first_error"])
        if raw is None or raw == "N/A":
            raw = -1
        if isinstance(raw, bool) or not isinstance(raw, int) or not -1 <= raw < len(raw_steps):
            raise TrajectoryError(f"{raw!r} is not -1 or a step index (0..{len(raw_steps) - 1})", field=mapping["first_error"])
        labels = _first_error_labels(len(raw_steps), raw, keep_after_error=keep_after_error)
        meta.update(first_error=raw, n_steps=len(raw_steps))
    elif "labels" in mapping:
        raw_labels = _get(record, mapping["labels"])
        if not isinstance(raw_labels, list) or len(raw_labels) != len(raw_steps):
            got = f"{len(raw_labels)} labels" if isinstance(raw_labels, list) else type(raw_labels).__name__
            raise TrajectoryError(f"must be a list of one label per step ({len(raw_steps)}), got {got}", field=mapping["labels"])
        labels = [_mapped_label(v, f"{mapping['labels']}[{i}]") for i, v in enumerate(raw_labels)]
    else:
        labels = [None] * len(raw_steps)
    target = ""
    if "answer" in mapping:
        answer = _get(record, mapping["answer"])
        target = "" if answer is None else answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    kept = raw_steps[: len(labels)]
    sources = [f"{steps_field}[{i}]" for i in range(len(kept))]
    return _build(question, target, kept, labels, sources, meta, steps_field=steps_field)


def read_mapped(path: str | Path, mapping: dict[str, str], *, rejects: str | Path | None = None,
                keep_after_error: bool = False) -> list[Trajectory]:
    """A JSONL file, or a JSON array file (``.json``), of records of the usual shape -> trajectories; see
    :func:`from_mapped`."""
    path = Path(path)
    parse = functools.partial(from_mapped, mapping=mapping, keep_after_error=keep_after_error)
    if path.suffix == ".json":
        return list(_convert_items(path, _json_array_items(path), parse, rejects))
    return list(iter_records(path, parse, rejects=rejects))
