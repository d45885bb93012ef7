"""Oracle step labels on synthetic tasks: the task's exact checker is the annotator.

Three sources of labelled traces for training or evaluating a process reward model:

* :func:`sample_traces` samples history-mode traces from a policy (any Hugging Face causal LM) and
  :func:`oracle_label` labels each generated step with ``task.check_steps``: the automatic labelling
  that Math-Shepherd (Wang et al., 2024) approximates with rollouts, here exact;
* :func:`sample_state_traces` samples state-mode rollouts (the policy sees each state alone, the task's
  executor applies its action) and labels each action with ``task.check_state_step``;
* :func:`inject_corruptions` corrupts steps of an expert trace and labels the result with the same
  checker, so a corruption that happens to be valid keeps a True label.
"""

from __future__ import annotations

import random
import re
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import torch

from procsup.data.tokenize import StepFormat, parse_history, prompt_ids
from procsup.data.trajectory import Step, Trajectory
from procsup.evaluation.generation import left_pad
from procsup.evaluation.rollout import history_budget, walk_states
from procsup.tasks.addition import AdditionTask

Corruption = Callable[[str, random.Random], str]


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global generator (which ``generate`` samples from) for the block, and restore it after,
    so that sampling here neither depends on nor disturbs the caller's random state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.inference_mode()
def sample_generate(
    model, tokenizer, prompts: Sequence[Sequence[int]], n: int, max_new_tokens: int, temperature: float,
    *, stop_strings: Sequence[str] | None = None, batch_size: int = 64,
) -> list[list[list[int]]]:
    """``n`` sampled continuations of each token-id prompt (new tokens only, EOS and padding cut):
    ``out[i][j]`` is sample j of prompt i. Generation of a row stops at EOS, after ``max_new_tokens``, or
    once it contains one of ``stop_strings`` (HF ``stop_strings``; the stop string is kept).

    Uses torch's global generator: wrap calls in :func:`seeded` for reproducible samples. Samples depend
    on ``batch_size`` (the batch composition changes the random draws)."""
    if n < 1 or temperature <= 0:
        raise ValueError(f"need n >= 1 and temperature > 0, got n={n}, temperature={temperature}")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.eval()
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    per_batch = max(1, batch_size // n)  # prompts per call; each is repeated n times
    out: list[list[list[int]]] = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        ids, mask = left_pad(chunk, pad)
        width = ids.size(1)
        gen = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
            do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n,
            eos_token_id=eos, pad_token_id=pad, **extra,
        )[:, width:].tolist()  # (len(chunk) * n, new): the n samples of a prompt are adjacent
        for row in range(len(chunk)):
            out.append([_cut(toks, eos, pad) for toks in gen[row * n : (row + 1) * n]])
    return out


def _cut(toks: list[int], eos: int, pad: int) -> list[int]:
    toks = toks[: toks.index(eos)] if eos in toks else toks
    while toks and toks[-1] == pad:  # rows that stopped on a stop string are padded to the batch length
        toks = toks[:-1]
    return toks


def sample_traces(
    model, tokenizer, task, problems: Sequence[Any], fmt: StepFormat, n: int, temperature: float, seed: int,
    max_new_tokens: int | None = None, *, batch_size: int = 64,
) -> list[list[Trajectory]]:
    """``n`` sampled history-mode traces per problem, parsed with :func:`parse_history`.

    ``out[p][j]`` is ``Trajectory(x, answer or "", steps)`` with unlabelled steps and ``meta``: the
    expert's meta (the problem's fields), ``answer`` (None if none was generated), ``correct``
    (``task.check_answer``) and ``tokens`` (number of generated tokens). Label it with
    :func:`oracle_label`. ``max_new_tokens`` defaults to 1.2x the longest expert trace.
    """
    experts = [task.expert(p) for p in problems]
    budget = max_new_tokens or history_budget(tokenizer, experts, fmt, "history")
    prompts = [prompt_ids(tokenizer, e.input, fmt) for e in experts]
    with seeded(seed, model.device):
        samples = sample_generate(model, tokenizer, prompts, n, budget, temperature, batch_size=batch_size)
    out = []
    for p, expert, gens in zip(problems, experts, samples):
        trajs = []
        for toks in gens:
            actions, answer = parse_history(tokenizer.decode(toks), fmt)
            meta = {**expert.meta, "answer": answer, "correct": task.check_answer(p, answer), "tokens": len(toks)}
            trajs.append(Trajectory(expert.input, answer or "", tuple(Step(a) for a in actions), meta))
        out.append(trajs)
    return out


def sample_state_traces(
    model, tokenizer, task, problems: Sequence[Any], fmt: StepFormat, n: int, temperature: float, seed: int,
    *, max_steps: int | None = None, max_new_tokens: int = 16, batch_size: int = 256, corrupt_rate: float = 0.0,
    corrupt: Corruption | None = None,
) -> list[list[Trajectory]]:
    """``n`` sampled state-mode rollouts per problem, labelled: PAL's ``M(s_t) -> a_t`` where the model
    sees the rendered state alone, samples an action, and the task's executor applies it.

    ``corrupt_rate > 0`` injects corruptions into the rollouts: each sampled action is replaced, with
    that probability, by ``corrupt(action, rng)`` (default :func:`corrupt_digit`) *before* the checker
    judges it and the executor applies it, so the rollout goes on from the state the corrupted action
    leads to and every label still comes from the checker (a corruption that happens to be right stays
    True). The policy's natural errors and injected ones are then in one set of complete traces, what a
    reward model learns from; ``meta['corrupted']`` lists the step indices whose action was changed.

    ``out[p][j]`` is a trajectory with the problem's history-mode input, one step per sampled action,
    ``Step(action=a_t, state=s_t, label=task.check_state_step(s_t, a_t))`` (the action judged in the state
    it was taken in; :mod:`procsup.data.views` lays it out for a reward model), and ``meta``: the expert's meta, ``answer`` (the
    executor's answer of the finished state, None if an action could not be executed or ``max_steps``
    ran out; default 4x the expert's steps) and ``correct``. The executor composes the answer, so every
    error of such a policy is a step error, which the labels see.

    Uses torch's global generator inside :func:`seeded` (and ``random.Random(seed)`` for corruptions);
    samples depend on ``batch_size``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= corrupt_rate <= 1.0:
        raise ValueError(f"corrupt_rate must be in [0, 1], got {corrupt_rate}")
    corrupt = corrupt or corrupt_digit
    rng = random.Random(seed)
    experts = [task.expert(p) for p in problems]
    owners = [i for i in range(len(problems)) for _ in range(n)]
    changed: list[list[bool]] = []  # per round: was each live episode's action corrupted (walk order)

    def sample(texts: list[str]) -> list[str]:
        gens = sample_generate(model, tokenizer, [prompt_ids(tokenizer, t, fmt) for t in texts], 1, max_new_tokens,
                               temperature, batch_size=batch_size)
        actions = [tokenizer.decode(g[0]) for g in gens]
        if corrupt_rate > 0:
            new = [corrupt(a, rng) if rng.random() < corrupt_rate else a for a in actions]
            changed.append([a != b for a, b in zip(actions, new)])
            actions = new
        return actions

    limit = max_steps or 4 * max(len(e.steps) for e in experts)
    with seeded(seed, model.device):
        walks = walk_states(task, [task.initial_state(problems[i]) for i in owners], sample, limit)
    # round r's proposals went, in order, to the episodes that took an r-th step (walk_states' live order)
    corrupted: list[list[int]] = [[] for _ in walks]
    for r, flags in enumerate(changed):
        for k, flag in zip((k for k, w in enumerate(walks) if len(w.actions) > r), flags):
            if flag:
                corrupted[k].append(r)
    out: list[list[Trajectory]] = [[] for _ in problems]
    for k, (i, w) in enumerate(zip(owners, walks)):
        done = not w.failed and task.is_done(w.state)
        answer = task.answer(w.state) if done else None
        meta = {**experts[i].meta, "answer": answer, "correct": task.check_answer(problems[i], answer)}
        if corrupt_rate > 0:
            meta["corrupted"] = corrupted[k]
        steps = tuple(Step(a, state=t, label=ok) for t, a, ok in zip(w.texts, w.actions, w.ok))
        out[i].append(Trajectory(experts[i].input, answer or "", steps, meta))
    return out


def oracle_label(task, problem: Any, traj: Trajectory) -> Trajectory:
    """``traj`` with each step labelled by ``task.check_steps`` (a step beyond the expert's last is False)
    and ``meta['correct'] = task.check_answer`` on its ``meta['answer']`` (or its target if absent).

    ``check_steps`` also returns one False per *missing* step; those have no step to sit on, so they are
    counted in ``meta['missing_steps']`` instead (a trace that stops short is not silently complete)."""
    actions = [s.action for s in traj.steps]
    ok = task.check_steps(problem, actions)
    labels = ok[: len(actions)] + [False] * (len(actions) - len(ok))  # the checker's verdict, one per step
    steps = tuple(replace(s, label=bool(lab)) for s, lab in zip(traj.steps, labels))
    answer = traj.meta.get("answer", traj.target)
    meta = {**traj.meta, "correct": task.check_answer(problem, answer), "missing_steps": max(0, len(ok) - len(actions))}
    return Trajectory(traj.input, traj.target, steps, meta)


def with_answer_step(traj: Trajectory, fmt: StepFormat, label: bool | None = None) -> Trajectory:
    """``traj`` with its final answer appended as one more step, ``answer_prefix + answer`` (``meta['answer']``,
    or the target if absent; an empty answer when none was generated), labelled ``label``.

    The ``steps`` layout that a PRM reads has no answer: a trace whose steps are right but whose answer
    was copied wrong would look perfect. With the answer as the last step (as PRM800K's last step holds
    the answer), a PRM judges it too, and an outcome reward model (ORM) is a PRM whose only label sits on
    that step."""
    answer = traj.meta.get("answer", traj.target)
    step = Step(fmt.answer_prefix + (answer or ""), label=label)
    return Trajectory(traj.input, traj.target, (*traj.steps, step), traj.meta)


_DIGIT = re.compile(r"[0-9]")


def corrupt_digit(action: str, rng: random.Random) -> str:
    """Replace one random digit of ``action`` by another digit; unchanged if it has no digit."""
    spots = [m.start() for m in _DIGIT.finditer(action)]
    return _swap_digit(action, rng.choice(spots), rng) if spots else action


def corrupt_addition_result(action: str, rng: random.Random) -> str:
    """Addition steps ``k:3+6+0=9,0>d``: replace one digit of the result (``9,0``, after ``=``) by
    another digit. Falls back to :func:`corrupt_digit` on a step without ``=``."""
    eq = action.find("=")
    if eq < 0:
        return corrupt_digit(action, rng)
    end = action.find(">", eq)
    spots = [eq + 1 + m.start() for m in _DIGIT.finditer(action[eq + 1 : end if end >= 0 else None])]
    return _swap_digit(action, rng.choice(spots), rng) if spots else corrupt_digit(action, rng)


def _swap_digit(text: str, i: int, rng: random.Random) -> str:
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1 :]


def inject_corruptions(
    task, problem: Any, traj: Trajectory, rng: random.Random, rate: float, *, corrupt: Corruption | None = None,
) -> Trajectory:
    """Corrupt each step of ``traj`` (usually ``task.expert(problem)``) with probability ``rate``, then
    label every step with the task's checker (:func:`oracle_label`).

    ``corrupt`` defaults to :func:`corrupt_addition_result` for :class:`AdditionTask` and to
    :func:`corrupt_digit` otherwise. Labels come from the checker, not from "was corrupted": a
    corruption that is still valid stays True, and on tasks whose checker follows the trace (grid) a
    corruption can also change later labels. ``meta['corrupted']`` lists the indices of changed steps.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    corrupt = corrupt or (corrupt_addition_result if isinstance(task, AdditionTask) else corrupt_digit)
    steps, changed = [], []
    for t, s in enumerate(traj.steps):
        action = corrupt(s.action, rng) if rng.random() < rate else s.action
        if action != s.action:
            changed.append(t)
        steps.append(replace(s, action=action, label=None))
    corrupted = Trajectory(traj.input, traj.target, tuple(steps), {**traj.meta, "corrupted": changed})
    return oracle_label(task, problem, corrupted)
