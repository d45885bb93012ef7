"""Run a trained model on a task's problems in each PAL mode, and score what it did.

* ``outcome``: x -> answer.
* ``history``: x -> steps and answer in one generation, parsed with the same :class:`StepFormat` the
  model was trained with; each step is checked by the task's exact checker.
* ``state``: the model proposes ``a_t`` from the rendered state ``s_t`` alone; the task's executor
  applies it and renders the next state, until the task is done (PAL's ``M(s_t) -> a_t``).

Metrics (per problem, then averaged): ``exact_match`` (right final answer), ``trace_valid`` (every
step right, and as many steps as the expert), ``right_answer_wrong_steps`` (right answer although
some step was wrong: the shortcut that outcome supervision cannot see). Outcome-only has no trace, so
its trace metrics are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from procsup.data.tokenize import Mode, StepFormat, parse_history, prompt_ids
from procsup.evaluation.generation import greedy_generate


@dataclass
class Rollout:
    problem: Any
    steps: list[str]
    answer: str | None
    correct: bool
    step_ok: list[bool] | None


def rollout(
    model, tokenizer, task, problems: Sequence[Any], mode: Mode, fmt: StepFormat, *, batch_size: int = 512,
    max_steps: int | None = None, max_new_tokens: int | None = None,
) -> list[Rollout]:
    if mode == "state":
        return _state_rollout(model, tokenizer, task, problems, fmt, batch_size, max_steps)
    experts = [task.expert(p) for p in problems]
    budget = max_new_tokens or history_budget(tokenizer, experts, fmt, mode)
    prompts = [prompt_ids(tokenizer, e.input, fmt) for e in experts]
    texts = [tokenizer.decode(g) for g in greedy_generate(model, tokenizer, prompts, budget, batch_size)]
    out = []
    for p, text in zip(problems, texts):
        if mode == "outcome":
            answer = text[len(fmt.answer_prefix):].strip() if text.startswith(fmt.answer_prefix) else None
            out.append(Rollout(p, [], answer, task.check_answer(p, answer), None))
        else:
            steps, answer = parse_history(text, fmt)
            out.append(Rollout(p, steps, answer, task.check_answer(p, answer), task.check_steps(p, steps)))
    return out


def history_budget(tokenizer, experts, fmt: StepFormat, mode: Mode) -> int:
    """Enough new tokens for 1.2x the longest expert output: a right trace fits, a wrong one that runs on
    is cut (it is wrong either way), and generation time stays bounded on long problems."""
    def length(e) -> int:
        text = fmt.answer_prefix + e.target
        if mode == "history":
            text = "".join(s.action + fmt.step_sep for s in e.steps) + text
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return int(1.2 * max(length(e) for e in experts)) + 4


@dataclass
class StateWalk:
    """One state-mode episode: the rendered state ``s_t`` before each action ``a_t``, the checker's verdict
    on each, the last state reached, and whether it ended on an action the executor could not apply."""

    texts: list[str]
    actions: list[str]
    ok: list[bool]
    state: Any
    failed: bool


def walk_states(task, starts: Sequence[Any], propose: Callable[[list[str]], list[str]],
                limit: int) -> list[StateWalk]:
    """PAL's state-mode loop, for all episodes together: each round, ``propose`` gets the rendered state
    of every live episode and returns one action per state; the task's checker judges each action in its
    state and the executor applies it. An episode ends when its state is done, when an action cannot be
    executed, or after ``limit`` rounds. The one loop behind greedy evaluation (:func:`rollout`) and
    sampled, labelled rollouts (:func:`procsup.annotation.oracle.sample_state_traces`)."""
    walks = [StateWalk([], [], [], s, False) for s in starts]
    for _ in range(limit):
        live = [w for w in walks if not w.failed and not task.is_done(w.state)]
        if not live:
            break
        texts = [task.render_state(w.state) for w in live]
        for w, text, action in zip(live, texts, propose(texts)):
            w.texts.append(text)
            w.actions.append(action)
            w.ok.append(task.check_state_step(w.state, action))
            nxt = task.execute(w.state, action)
            w.failed = nxt is None
            w.state = w.state if nxt is None else nxt
    return walks


def _state_rollout(model, tokenizer, task, problems, fmt, batch_size, max_steps) -> list[Rollout]:
    def greedy(texts: list[str]) -> list[str]:
        prompts = [prompt_ids(tokenizer, t, fmt) for t in texts]
        return [tokenizer.decode(g) for g in greedy_generate(model, tokenizer, prompts, 16, batch_size)]

    limit = max_steps or 4 * max(len(task.expert(p).steps) for p in problems)
    walks = walk_states(task, [task.initial_state(p) for p in problems], greedy, limit)
    out = []
    for p, w in zip(problems, walks):
        done = not w.failed and task.is_done(w.state)
        answer = task.answer(w.state) if done else None
        out.append(Rollout(p, w.actions, answer, task.check_answer(p, answer), w.ok if done else w.ok + [False]))
    return out


def summarize(rollouts: Sequence[Rollout]) -> dict[str, float | None]:
    n = len(rollouts)
    if n == 0:
        raise ValueError("no rollouts to summarize")
    em = sum(r.correct for r in rollouts) / n
    if any(r.step_ok is None for r in rollouts):
        return {"exact_match": em, "trace_valid": None, "right_answer_wrong_steps": None, "n": n}
    valid = [bool(r.step_ok) and all(r.step_ok) for r in rollouts]
    return {
        "exact_match": em,
        "trace_valid": sum(valid) / n,
        "right_answer_wrong_steps": sum(r.correct and not v for r, v in zip(rollouts, valid)) / n,
        "n": n,
    }
