"""``complete``: a policy turns prefixes (partial trajectories) into trajectories. The one sampler.

Everything above it (evaluation, search, annotation, RL) calls :func:`complete`; it works in every
policy mode:

* history (and outcome): the prefix is laid out as the model was trained (:mod:`procsup.data.tokenize`,
  ``x · sep_in · a_1 · sep · …``) and the model continues it, up to the next step separator
  (``until="step"``) or to the end (``until="answer"``); the text is parsed back into steps and an answer;
* state: the task's executor replays the prefix's actions, renders the state, the policy proposes an
  action, the executor applies it, until the task is done, an action cannot be applied, or the round limit
  (``until="step"``: one action).

A prefix is a :class:`~procsup.data.trajectory.Trajectory` of the task (``task.problem_of`` reads its
problem back from ``input``/``meta``); :func:`start` makes the empty ones. Every returned trajectory has
``meta``: ``answer`` (None if none was reached), ``correct`` (``task.check_answer``), ``finished`` (it
cannot go on: an answer was written, the task is done, or an action failed), ``samples`` (policy samples
this call spent on it: generated steps, an answer line counting as one; state mode: actions) and, in text
modes, ``tokens`` (generated tokens). State-mode steps carry the rendered ``state`` they were taken in.
Labels are not set here: a scorer (:mod:`procsup.scorers`) judges steps.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from procsup.data.tokenize import StepFormat, parse_history, tokenize_many
from procsup.data.trajectory import Step, Trajectory
from procsup.rollout.generate import seeded

Until = Literal["step", "answer"]


def start(task, problems: Sequence[Any]) -> list[Trajectory]:
    """Each problem as an empty prefix: its expert's input and meta (from which ``task.problem_of`` reads the
    problem back), no steps."""
    return [Trajectory(e.input, "", (), e.meta) for e in (task.expert(p) for p in problems)]


def complete(
    policy, prefixes: Sequence[Trajectory], n: int = 1, until: Until = "answer", *, seed: int | None = None,
    corrupt: Callable[[str], str] | None = None, max_env_steps: int | None = None,
) -> list[list[Trajectory]]:
    """``out[i][j]``: sample j of ``policy`` continuing ``prefixes[i]`` (``n`` per prefix).

    ``seed``: run inside :func:`~procsup.rollout.generate.seeded` (else torch's global generator as it
    stands; an action-head policy samples from its own generator). State mode only: ``corrupt`` may replace
    each proposed action before the executor sees it (annotation's injected errors; ``meta['corrupted']``
    lists the changed step indices), and ``max_env_steps`` caps the actions executed by the call in total
    (episodes still running when it is spent are cut: unfinished, no answer)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if until not in ("step", "answer"):
        raise ValueError(f"until must be step or answer, got {until!r}")
    if policy.mode != "state" and (corrupt is not None or max_env_steps is not None):
        raise ValueError("corrupt and max_env_steps need a state-mode policy (the executor applies actions)")
    if not prefixes:
        return []
    problems = [policy.task.problem_of(t) for t in prefixes]
    with seeded(seed, policy.device) if seed is not None else nullcontext():
        if policy.mode == "state":
            return _states(policy, prefixes, problems, n, until, corrupt, max_env_steps)
        return _text(policy, prefixes, problems, n, until)


# --- state mode: the executor runs the episode ----------------------------------------------------------
@dataclass
class _Episode:
    owner: int
    state: Any
    failed: bool
    steps: list[Step]
    new: int = 0
    corrupted: list[int] = field(default_factory=list)


def _replay(task, problem: Any, prefix: Trajectory) -> tuple[Any, bool]:
    """The task state after the prefix's actions, and whether one of them could not be applied."""
    state = task.initial_state(problem)
    for step in prefix.steps:
        nxt = task.execute(state, step.action)
        if nxt is None:
            return state, True
        state = nxt
    return state, False


def _act(task, e: _Episode, text: str, action: str, corrupt: Callable[[str], str] | None) -> None:
    if corrupt is not None:
        changed = corrupt(action)
        if changed != action:
            e.corrupted.append(len(e.steps))
        action = changed
    e.steps.append(Step(action, state=text))
    e.new += 1
    nxt = task.execute(e.state, action)
    e.failed = nxt is None
    e.state = e.state if nxt is None else nxt


def _states(policy, prefixes, problems, n, until, corrupt, max_env_steps) -> list[list[Trajectory]]:
    task = policy.task
    starts = [_replay(task, p, t) for p, t in zip(problems, prefixes)]
    # until="answer": n independent episodes per prefix (copies adjacent); until="step": n actions drawn
    # from each prefix's one state, as n samples of one prompt
    copies = n if until == "answer" else 1
    episodes = [_Episode(i, *starts[i], list(prefixes[i].steps)) for i in range(len(prefixes)) for _ in range(copies)]
    limit = 1 if until == "step" else policy.max_steps or 4 * max(len(task.expert(p).steps) for p in problems)
    used = 0
    for _ in range(limit):
        live = [e for e in episodes if not e.failed and not task.is_done(e.state)]
        if max_env_steps is not None:
            live = live[: max(max_env_steps - used, 0)]
        if not live:
            break
        texts = [task.render_state(e.state) for e in live]
        proposals = policy.propose(texts, 1 if until == "answer" else n)
        used += len(live)
        if until == "step":  # each episode forks into its n proposals
            forks = {id(e): [_Episode(e.owner, e.state, e.failed, list(e.steps)) for _ in acts]
                     for e, acts in zip(live, proposals)}
            for e, text, acts in zip(live, texts, proposals):
                for fork, action in zip(forks[id(e)], acts):
                    _act(task, fork, text, action, corrupt)
            episodes = [f for e in episodes for f in forks.get(id(e), [e] * n)]
        else:
            for e, text, acts in zip(live, texts, proposals):
                _act(task, e, text, acts[0], corrupt)
    out: list[list[Trajectory]] = [[] for _ in prefixes]
    for e in episodes:
        done = not e.failed and task.is_done(e.state)
        answer = task.answer(e.state) if done else None
        prefix = prefixes[e.owner]
        meta = {**prefix.meta, "answer": answer, "correct": task.check_answer(problems[e.owner], answer),
                "finished": done or e.failed, "failed": e.failed, "samples": e.new}
        if corrupt is not None:
            meta["corrupted"] = e.corrupted
        out[e.owner].append(Trajectory(prefix.input, answer or "", tuple(e.steps), meta))
    return out


# --- text modes: the model writes steps and the answer ------------------------------------------------------
def history_budget(tokenizer, experts: Sequence[Trajectory], fmt: StepFormat, mode: str) -> int:
    """Enough new tokens for 1.2x the longest expert output: a right trace fits, a wrong one that runs on
    is cut (it is wrong either way), and generation time stays bounded on long problems."""
    def length(e) -> int:
        text = fmt.answer_prefix + e.target
        if mode == "history":
            text = "".join(s.action + fmt.step_sep for s in e.steps) + text
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return int(1.2 * max(length(e) for e in experts)) + 4


def step_budget(tokenizer, experts: Sequence[Trajectory], fmt: StepFormat) -> int:
    """Enough new tokens for 1.2x the longest expert step or answer line."""
    texts = [s.action + fmt.step_sep for e in experts for s in e.steps]
    texts += [fmt.answer_prefix + e.target for e in experts]
    return int(1.2 * max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)) + 4


def _text(policy, prefixes, problems, n, until) -> list[list[Trajectory]]:
    task, tok, fmt = policy.task, policy.tokenizer, policy.fmt
    if policy.mode == "outcome" and (until == "step" or any(t.steps for t in prefixes)):
        raise ValueError("an outcome-mode policy writes the answer alone: no steps to continue or to write")
    experts = [task.expert(p) for p in problems]
    # the prefix as training laid it out (pieces tokenized apart): with no steps, the prompt x · input_sep
    rows = tokenize_many([Trajectory(t.input, "", t.steps) for t in prefixes], tok, fmt, "steps")
    prompts = [r.input_ids for r in rows]
    stops = list(getattr(policy, "stop_strings", ()))
    if until == "step":
        budget = policy.max_new_tokens or step_budget(tok, experts, fmt)
        gens = policy.generate(prompts, n, budget, stop_strings=[fmt.step_sep, *stops])
    else:
        gens = policy.generate(prompts, n, policy.max_new_tokens or history_budget(tok, experts, fmt, policy.mode),
                               stop_strings=stops or None)
    out = []
    for prefix, problem, samples in zip(prefixes, problems, gens):
        row = []
        for toks in samples:
            text = _before_stop(tok.decode(toks), stops)
            answered = text.startswith(fmt.answer_prefix)
            if policy.mode == "outcome":  # everything after the prefix: the model was trained to end there
                actions, answer, finished = [], text[len(fmt.answer_prefix):].strip() if answered else None, True
            elif until == "step":  # one line: a step (of "" if the model ended at once), or the answer line
                answer = text[len(fmt.answer_prefix):].partition(fmt.step_sep)[0].strip() if answered else None
                actions, finished = ([] if answered else [text.partition(fmt.step_sep)[0]]), answered
            else:
                actions, answer = parse_history(text, fmt)
                finished = True
            meta = {**prefix.meta, "answer": answer, "correct": task.check_answer(problem, answer),
                    "finished": finished, "samples": len(actions) + (answer is not None), "tokens": len(toks)}
            steps = (*prefix.steps, *(Step(a) for a in actions))
            row.append(Trajectory(prefix.input, answer or "", steps, meta))
        out.append(row)
    return out


def _before_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of ``stops`` (the policy's ``stop_strings``), which is dropped with the rest."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
