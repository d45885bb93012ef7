"""Best-of-N reranking with a step scorer (Cobbe et al., 2021; with a PRM, Lightman et al., 2023):
sample N full traces per problem, score every step, keep the trace with the highest aggregated score."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from procsup.data.trajectory import Trajectory
from procsup.data.views import with_answer_step
from procsup.evaluation import prm_metrics
from procsup.evaluation.prm_metrics import Aggregation, aggregate
from procsup.rollout import complete, start
from procsup.scorers import StepScorer


@dataclass
class SearchResult:
    """What a search did on one problem. Candidates are trajectories whose ``meta`` holds ``answer``,
    ``correct``, ``step_scores`` (the scorer's, or ``[0.0]`` for a trace with no step) and ``score``
    (``aggregate(step_scores, how)``)."""

    problem: Any
    chosen: Trajectory
    candidates: list[Trajectory]
    """best-of-N: all N candidates in sample order; beam search: the finished beams, best first."""
    samples: int
    """Policy samples spent on this problem: generated steps (an answer line counting as one), or actions."""


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


def scored(traj: Trajectory, step_scores: Sequence[float], how: Aggregation) -> Trajectory:
    """``traj`` with ``meta['step_scores']`` and ``meta['score']`` (:func:`solution_score`)."""
    scores, score = solution_score(step_scores, how)
    return replace(traj, meta={**traj.meta, "step_scores": scores, "score": score})


def best_of_n(policy, scorer: StepScorer, problems: Sequence[Any], n: int, how: Aggregation = "min", seed: int = 0,
              *, score_answer: bool = False) -> BestOfN:
    """Sample ``n`` traces per problem (:func:`procsup.rollout.complete`, any policy mode), score their steps
    and choose the highest ``aggregate(step_scores, how)``; ties go to the first sample, as in
    :func:`prm_metrics.best_of_n`, which computes ``accuracy``. With ``score_answer`` the scorer also scores
    the answer line, as one more step (:func:`~procsup.data.views.with_answer_step`); the candidates'
    step scores then end with the answer's."""
    traces = complete(policy, start(policy.task, problems), n, seed=seed)
    flat = [t for ts in traces for t in ts]
    rows = [with_answer_step(t, policy.fmt) for t in flat] if score_answer else flat
    flat_scores = iter(scorer(rows))
    results = []
    for p, ts in zip(problems, traces):
        cands = [scored(t, next(flat_scores), how) for t in ts]
        best = max(range(len(cands)), key=lambda i: cands[i].meta["score"])  # max keeps the first of ties
        results.append(SearchResult(p, cands[best], cands, sum(t.meta["samples"] for t in ts)))
    scores = [[c.meta["step_scores"] for c in r.candidates] for r in results]
    correct = [[bool(c.meta["correct"]) for c in r.candidates] for r in results]
    answers = [[c.meta["answer"] for c in r.candidates] for r in results]
    return BestOfN(results, prm_metrics.best_of_n(scores, correct, how), how, scores, correct, answers)
