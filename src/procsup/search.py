"""Test-time search with a process reward model (PRM): best-of-N reranking and step-level beam search.

* :func:`best_of_n`: sample N full traces per problem, score every step in one PRM pass, keep the trace
  with the highest aggregated score (Cobbe et al., 2021; with a PRM, Lightman et al., 2023).
* :func:`beam_search`: grow traces one step at a time; each live beam proposes ``expand`` next steps,
  the PRM scores each extended prefix, the best ``beam_width`` survive (Snell et al., 2024, "Scaling LLM
  Test-Time Compute Optimally...", section 5).
* :func:`state_beam_search`: the same over a state-mode policy, which sees each state alone while the
  task's executor applies its actions (the traces of :func:`~procsup.annotation.oracle.sample_state_traces`).

Both count policy ``samples``: generated steps, where the answer line counts as one step. With that
count, beam search and best-of-N can be compared at equal policy compute.

The policy is any Hugging Face causal LM trained on the ``history`` layout of
:mod:`procsup.data.tokenize`; the PRM is any token-classification model read by
:func:`procsup.models.prm.score`. Prefixes are built with :func:`~procsup.data.tokenize.tokenize_many`
(pieces tokenized apart), so the policy continues exactly the token rows it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import procsup.models.prm as prm_models
from procsup.annotation.oracle import sample_generate, sample_traces, seeded, with_answer_step
from procsup.data.tokenize import StepFormat, prompt_ids, tokenize_many
from procsup.data.trajectory import Step, Trajectory
from procsup.evaluation import prm_metrics
from procsup.evaluation.generation import greedy_generate
from procsup.evaluation.prm_metrics import Aggregation, aggregate


@dataclass
class Candidate:
    """One scored trace: ``trajectory.meta`` holds ``answer`` (None if none) and ``correct``."""

    trajectory: Trajectory
    step_scores: list[float]
    """The PRM's P(step correct) for each step, or ``[0.0]`` for a trace with no step (see :func:`solution_score`)."""
    score: float
    """``aggregate(step_scores, how)``."""

    @property
    def answer(self) -> str | None:
        return self.trajectory.meta.get("answer")

    @property
    def correct(self) -> bool:
        return bool(self.trajectory.meta.get("correct"))


@dataclass
class SearchResult:
    """What a search did on one problem."""

    problem: Any
    chosen: Candidate
    candidates: list[Candidate]
    """best-of-N: all N candidates in sample order; beam search: the finished beams, best first."""
    samples: int
    """Policy samples spent on this problem: generated steps, the answer line counting as one."""


@dataclass
class BestOfN:
    """Best-of-N results, with the candidate tables that :mod:`procsup.evaluation.prm_metrics` takes."""

    results: list[SearchResult]
    accuracy: float
    """Share of problems whose chosen candidate is correct (:func:`prm_metrics.best_of_n`)."""
    how: Aggregation = "min"
    candidates_scores: list[list[list[float]]] = field(default_factory=list)
    candidates_correct: list[list[bool]] = field(default_factory=list)
    candidates_answers: list[list[str | None]] = field(default_factory=list)

    def curve(
        self, ns: Sequence[int] = (1, 2, 4, 8, 16), seed: int | None = None, draws: int = 16
    ) -> dict[int, dict[str, float]]:
        """Accuracy against N (best-of-N, pass@N, majority and weighted majority vote): see
        :func:`prm_metrics.best_of_n_curve`."""
        return prm_metrics.best_of_n_curve(
            self.candidates_scores, self.candidates_correct, self.how, candidates_answers=self.candidates_answers,
            ns=ns, seed=seed, draws=draws,
        )

    def majority_vote(self) -> float:
        return prm_metrics.majority_vote(self.candidates_answers, self.candidates_correct)


def solution_score(step_scores: Sequence[float], how: Aggregation) -> tuple[list[float], float]:
    """``(step_scores, aggregate(step_scores, how))``; a trace with no step gets the step scores ``[0.0]``
    (nothing vouches for it, and the prm_metrics functions need at least one score per candidate)."""
    scores = list(step_scores) or [0.0]
    return scores, aggregate(scores, how)


def _prm_scores(prm, prm_tokenizer, trajectories: Sequence[Trajectory], fmt: StepFormat) -> list[list[float]]:
    # through the module attribute, so that tests can substitute a hand-made scorer
    return prm_models.score(prm, prm_tokenizer, trajectories, fmt) if trajectories else []


def best_of_n(
    policy, tokenizer, prm, prm_tokenizer, task, problems: Sequence[Any], fmt: StepFormat, n: int,
    how: Aggregation = "min", temperature: float = 1.0, seed: int = 0, *, prm_fmt: StepFormat | None = None,
    max_new_tokens: int | None = None, score_answer: bool = False,
) -> BestOfN:
    """Sample ``n`` traces per problem (:func:`~procsup.annotation.oracle.sample_traces`), score them with
    the PRM, and choose the highest ``aggregate(step_scores, how)``; ties go to the first sample, as in
    :func:`prm_metrics.best_of_n`, which computes ``accuracy``. ``prm_fmt`` (default ``fmt``) is the
    PRM's own step format, when its separator differs from the policy's. With ``score_answer`` the PRM also
    scores the answer line, as one more step (:func:`~procsup.annotation.oracle.with_answer_step`); the
    candidates' step scores then end with the answer's."""
    traces = sample_traces(policy, tokenizer, task, problems, fmt, n, temperature, seed, max_new_tokens)
    flat = [t for ts in traces for t in ts]
    scored = [with_answer_step(t, prm_fmt or fmt) for t in flat] if score_answer else flat
    flat_scores = iter(_prm_scores(prm, prm_tokenizer, scored, prm_fmt or fmt))
    results = []
    for p, ts in zip(problems, traces):
        cands = [Candidate(t, *solution_score(next(flat_scores), how)) for t in ts]
        best = max(range(len(cands)), key=lambda i: cands[i].score)  # max keeps the first of ties
        samples = sum(len(t.steps) + (t.meta["answer"] is not None) for t in ts)
        results.append(SearchResult(p, cands[best], cands, samples))
    scores = [[c.step_scores for c in r.candidates] for r in results]
    correct = [[c.correct for c in r.candidates] for r in results]
    answers = [[c.answer for c in r.candidates] for r in results]
    return BestOfN(results, prm_metrics.best_of_n(scores, correct, how), how, scores, correct, answers)


@dataclass(frozen=True)
class _Beam:
    problem: int
    steps: tuple[str, ...]
    step_scores: tuple[float, ...]
    score: float


def _step_budget(tokenizer, experts: Sequence[Trajectory], fmt: StepFormat) -> int:
    """Enough new tokens for 1.2x the longest expert step or answer line (as rollout's history budget)."""
    texts = [s.action + fmt.step_sep for e in experts for s in e.steps]
    texts += [fmt.answer_prefix + e.target for e in experts]
    return int(1.2 * max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)) + 4


def beam_search(
    policy, tokenizer, prm, prm_tokenizer, task, problems: Sequence[Any], fmt: StepFormat, *, beam_width: int,
    expand: int, max_steps: int, how: Aggregation = "min", temperature: float = 1.0, seed: int = 0,
    prm_fmt: StepFormat | None = None, max_step_tokens: int | None = None, batch_size: int = 64,
) -> list[SearchResult]:
    """Step-level beam search guided by a PRM, all problems' beams batched together.

    Each round, every live beam samples ``expand`` continuations, each cut at the first ``step_sep``
    (generation stops there). If some continuation starts with ``answer_prefix``, a copy of the beam
    finishes; the other continuations become new steps (duplicates within a beam dropped), the PRM
    scores each extended prefix in one pass and a beam's score is ``aggregate(step_scores, how)``
    (``last``: the new step's probability).
    A problem keeps its best ``beam_width - finished`` live beams and stops once ``beam_width`` beams
    have finished. After ``max_steps`` rounds the live beams are finished as they are, so no beam has
    more than ``max_steps`` steps. The answer of a finished beam is generated greedily after its steps
    and ``answer_prefix`` (encoded on its own: with a sub-word tokenizer the training row encoded
    ``answer_prefix + y`` as one piece, a small mismatch accepted here).

    Returns per problem the finished beams, best first (at most ``beam_width``), the best as ``chosen``,
    and ``samples``: sampled continuations plus one per greedy answer.
    """
    if min(beam_width, expand, max_steps) < 1:
        raise ValueError(f"beam_width, expand and max_steps must be >= 1, got {beam_width}, {expand}, {max_steps}")
    prm_fmt = prm_fmt or fmt
    experts = [task.expert(p) for p in problems]
    budget = max_step_tokens or _step_budget(tokenizer, experts, fmt)
    samples = [0] * len(problems)
    finished: list[list[_Beam]] = [[] for _ in problems]
    live = [_Beam(i, (), (), 0.0) for i in range(len(problems))]
    with seeded(seed, policy.device):
        for _ in range(max_steps):
            if not live:
                break
            rows = tokenize_many([_partial(experts[b.problem], b.steps) for b in live], tokenizer, fmt, "steps")
            gens = sample_generate(
                policy, tokenizer, [r.input_ids for r in rows], expand, budget, temperature,
                stop_strings=[fmt.step_sep], batch_size=batch_size,
            )
            proposals: list[tuple[_Beam, str]] = []
            for beam, toks in zip(live, gens):
                samples[beam.problem] += expand
                texts = [tokenizer.decode(t) for t in toks]
                if any(t.startswith(fmt.answer_prefix) for t in texts):
                    finished[beam.problem].append(beam)  # one finished copy, however many samples answered
                steps = [t.partition(fmt.step_sep)[0] for t in texts if not t.startswith(fmt.answer_prefix)]
                proposals.extend((beam, step) for step in dict.fromkeys(steps))  # the other samples still branch
            extended = [_partial(experts[b.problem], (*b.steps, s)) for b, s in proposals]
            scored = []
            for (b, step), raw in zip(proposals, _prm_scores(prm, prm_tokenizer, extended, prm_fmt)):
                step_scores, agg = solution_score(raw, how)
                scored.append(_Beam(b.problem, (*b.steps, step), tuple(step_scores), agg))
            live = _survivors(scored, finished, beam_width)
    for b in live:  # out of rounds: finish as they are
        finished[b.problem].append(b)
    return _finish(policy, tokenizer, task, problems, experts, fmt, finished, samples, beam_width)


def _survivors(scored: Sequence[Any], finished: Sequence[list], beam_width: int) -> list:
    """Each problem's best ``beam_width - finished`` of this round's scored beams (stable: ties keep
    sample order), problems in order."""
    by_problem: dict[int, list] = {}
    for b in scored:
        by_problem.setdefault(b.problem, []).append(b)
    return [b for i in sorted(by_problem)
            for b in sorted(by_problem[i], key=lambda b: -b.score)[: max(beam_width - len(finished[i]), 0)]]


def _partial(expert: Trajectory, steps: Sequence[str]) -> Trajectory:
    return Trajectory(expert.input, "", tuple(Step(a) for a in steps))


def _finish(policy, tokenizer, task, problems, experts, fmt, finished, samples, beam_width) -> list[SearchResult]:
    """Keep each problem's best ``beam_width`` finished beams and generate their answers greedily."""
    kept = [sorted(beams, key=lambda b: -b.score)[:beam_width] for beams in finished]
    flat = [b for beams in kept for b in beams]
    prefix = tokenizer(fmt.answer_prefix, add_special_tokens=False)["input_ids"]
    rows = tokenize_many([_partial(experts[b.problem], b.steps) for b in flat], tokenizer, fmt, "steps")
    budget = _step_budget(tokenizer, experts, fmt)
    gens = greedy_generate(policy, tokenizer, [list(r.input_ids) + prefix for r in rows], budget) if rows else []
    answers = iter(tokenizer.decode(g).partition(fmt.step_sep)[0].strip() for g in gens)
    results = []
    for i, (p, beams) in enumerate(zip(problems, kept)):
        cands = []
        for b in beams:
            answer = next(answers)
            samples[i] += 1
            meta = {**experts[i].meta, "answer": answer, "correct": task.check_answer(p, answer)}
            traj = Trajectory(experts[i].input, answer, tuple(Step(a) for a in b.steps), meta)
            cands.append(Candidate(traj, list(b.step_scores) or [0.0], b.score))  # a stepless beam scores 0.0
        results.append(SearchResult(p, cands[0], cands, samples[i]))
    return results


@dataclass(frozen=True)
class _StateBeam:
    problem: int
    state: Any
    """The task state after the beam's last action; None if that action could not be executed."""
    steps: tuple[Step, ...]
    """``Step(action, state=rendered state)`` per action so far."""
    step_scores: tuple[float, ...]
    score: float


def state_beam_search(
    policy, tokenizer, prm, prm_tokenizer, task, problems: Sequence[Any], fmt: StepFormat, *, beam_width: int,
    expand: int, how: Aggregation = "min", layout: str = "step", temperature: float = 1.0, seed: int = 0,
    prm_fmt: StepFormat | None = None, max_steps: int | None = None, max_new_tokens: int = 16, batch_size: int = 256,
) -> list[SearchResult]:
    """Step-level beam search guided by a PRM over a state-mode policy (PAL's ``M(s_t) -> a_t``).

    Each round, every live beam samples ``expand`` actions from the policy on its rendered state
    (duplicates dropped); the task's executor applies each; the PRM scores every extended state-mode
    trace (as :func:`~procsup.annotation.oracle.sample_state_traces` writes them, read in ``layout``, see
    :mod:`procsup.data.views`) and a beam's score is ``aggregate(step_scores, how)``. A problem keeps its
    best ``beam_width - finished`` new beams; of those, a beam whose state is done finishes with the
    executor's answer, and one whose action could not be executed finishes with no answer. After
    ``max_steps`` rounds (default 4x the expert's steps) the live beams finish unanswered.

    Returns per problem the finished beams, best first, the best as ``chosen``, and ``samples``: the
    sampled actions (the executor writes the answer, so no answer line is generated)."""
    if min(beam_width, expand) < 1:
        raise ValueError(f"beam_width and expand must be >= 1, got {beam_width}, {expand}")
    prm_fmt = prm_fmt or fmt
    experts = [task.expert(p) for p in problems]
    limit = max_steps or 4 * max(len(e.steps) for e in experts)
    samples = [0] * len(problems)
    finished: list[list[_StateBeam]] = [[] for _ in problems]
    live = [_StateBeam(i, task.initial_state(p), (), (), 0.0) for i, p in enumerate(problems)]
    with seeded(seed, policy.device):
        for _ in range(limit):
            if not live:
                break
            texts = [task.render_state(b.state) for b in live]
            gens = sample_generate(policy, tokenizer, [prompt_ids(tokenizer, t, fmt) for t in texts], expand,
                                   max_new_tokens, temperature, batch_size=batch_size)
            proposals: list[tuple[_StateBeam, Step, Any]] = []
            for beam, text, toks in zip(live, texts, gens):
                samples[beam.problem] += expand
                for action in dict.fromkeys(tokenizer.decode(t) for t in toks):
                    proposals.append((beam, Step(action, state=text), task.execute(beam.state, action)))
            extended = [Trajectory(experts[b.problem].input, "", (*b.steps, step)) for b, step, _ in proposals]
            raw_scores = prm_models.score_in_layout(prm, prm_tokenizer, extended, prm_fmt, layout) if extended else []
            scored = []
            for (b, step, nxt), raw in zip(proposals, raw_scores):
                step_scores, agg = solution_score(raw, how)
                scored.append(_StateBeam(b.problem, nxt, (*b.steps, step), tuple(step_scores), agg))
            live = []
            for b in _survivors(scored, finished, beam_width):
                (finished[b.problem] if b.state is None or task.is_done(b.state) else live).append(b)
    for b in live:  # out of rounds: finish unanswered
        finished[b.problem].append(_StateBeam(b.problem, None, b.steps, b.step_scores, b.score))
    results = []
    for i, p in enumerate(problems):
        cands = []
        for b in sorted(finished[i], key=lambda b: -b.score)[:beam_width]:
            answer = task.answer(b.state) if b.state is not None else None
            meta = {**experts[i].meta, "answer": answer, "correct": task.check_answer(p, answer)}
            cands.append(Candidate(Trajectory(experts[i].input, answer or "", b.steps, meta), list(b.step_scores), b.score))
        results.append(SearchResult(p, cands[0], cands, samples[i]))
    return results
