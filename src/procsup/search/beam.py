"""Step-level beam search with a step scorer (Snell et al., 2024, "Scaling LLM Test-Time Compute
Optimally...", section 5), for a policy in any mode.

Each round every live beam samples ``expand`` next steps (:func:`procsup.rollout.complete` with
``until="step"``; duplicates within a beam dropped), the scorer scores each extended trace, and a problem
keeps its best ``beam_width - finished`` (ties keep sample order). A beam finishes when one of its samples
writes the answer line (history: one finished copy of the beam, however many samples answered) or when a
surviving extension ends the episode (state: the task is done, or the action could not be applied).
A problem stops once ``beam_width`` beams have finished; after ``max_steps`` rounds the live beams finish
as they are. ``samples`` counts the policy's samples, so beam search and best-of-N compare at equal cost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from procsup.data.tokenize import tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.evaluation.prm_metrics import Aggregation
from procsup.rollout import complete, seeded, start, step_budget
from procsup.scorers import StepScorer
from procsup.search.best_of_n import SearchResult, scored, solution_score


@dataclass(frozen=True)
class _Beam:
    problem: int
    traj: Trajectory
    """The steps so far, with ``complete``'s meta (``finished``, ``answer``)."""
    step_scores: tuple[float, ...]
    score: float


def beam_search(
    policy, scorer: StepScorer, problems: Sequence[Any], *, beam_width: int, expand: int, how: Aggregation = "min",
    max_steps: int | None = None, seed: int = 0,
) -> list[SearchResult]:
    """Beam search over ``problems``, all problems' beams batched together (see the module doc).

    ``max_steps`` defaults to 4x the longest expert trace. The answer of a finished history-mode beam is
    generated greedily after its steps and ``answer_prefix`` (encoded on its own: the training row encoded
    ``answer_prefix + y`` as one piece, a small mismatch with a sub-word tokenizer), one more sample; a
    state-mode beam's answer is the executor's (None if unfinished or failed).

    Returns per problem the finished beams, best first (at most ``beam_width``; ``meta['step_scores']``,
    ``meta['score']``), the best as ``chosen``, and the policy ``samples`` spent."""
    if min(beam_width, expand) < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"beam_width, expand and max_steps must be >= 1, got {beam_width}, {expand}, {max_steps}")
    task = policy.task
    prefixes = start(task, problems)
    limit = max_steps or 4 * max(len(task.expert(p).steps) for p in problems)
    if policy.mode != "state" and policy.max_new_tokens is None:  # one step budget for every round: all problems'
        policy = replace(policy, max_new_tokens=step_budget(policy.tokenizer, [task.expert(p) for p in problems], policy.fmt))
    samples = [0] * len(problems)
    finished: list[list[_Beam]] = [[] for _ in problems]
    live = [_Beam(i, prefix, (), 0.0) for i, prefix in enumerate(prefixes)]
    with seeded(seed, policy.device):
        for _ in range(limit):
            if not live:
                break
            proposals: list[tuple[_Beam, Trajectory]] = []
            for beam, outs in zip(live, complete(policy, [b.traj for b in live], expand, until="step")):
                samples[beam.problem] += expand
                grown = [o for o in outs if len(o.steps) > len(beam.traj.steps)]
                if len(grown) < len(outs):  # a sample wrote the answer line: one finished copy of the beam
                    finished[beam.problem].append(beam)
                distinct: dict[str, Trajectory] = {}
                for o in grown:  # the first sample of each new step, in sample order
                    distinct.setdefault(o.steps[-1].action, o)
                proposals.extend((beam, o) for o in distinct.values())
            raw = scorer([o for _, o in proposals]) if proposals else []
            extended = [_Beam(b.problem, o, *_scores(r, how)) for (b, o), r in zip(proposals, raw)]
            live = []
            for b in _survivors(extended, finished, beam_width):
                (finished[b.problem] if b.traj.meta["finished"] else live).append(b)
    for b in live:  # out of rounds: finish as they are
        finished[b.problem].append(b)
    kept = [sorted(beams, key=lambda b: -b.score)[:beam_width] for beams in finished]
    answers = iter(_answers(policy, [b for beams in kept for b in beams], prefixes))
    results = []
    for i, (p, prefix, beams) in enumerate(zip(problems, prefixes, kept)):
        cands = []
        for b in beams:
            answer, cost = next(answers)
            samples[i] += cost
            meta = {**prefix.meta, "answer": answer, "correct": task.check_answer(p, answer)}
            cands.append(scored(Trajectory(prefix.input, answer or "", b.traj.steps, meta), b.step_scores, how))
        results.append(SearchResult(p, cands[0], cands, samples[i]))
    return results


def _scores(raw: Sequence[float], how: Aggregation) -> tuple[tuple[float, ...], float]:
    step_scores, agg = solution_score(raw, how)
    return tuple(step_scores), agg


def _survivors(scored_beams: Sequence[_Beam], finished: Sequence[list], beam_width: int) -> list[_Beam]:
    """Each problem's best ``beam_width - finished`` of this round's scored beams (stable: ties keep
    sample order), problems in order."""
    by_problem: dict[int, list[_Beam]] = {}
    for b in scored_beams:
        by_problem.setdefault(b.problem, []).append(b)
    return [b for i in sorted(by_problem)
            for b in sorted(by_problem[i], key=lambda b: -b.score)[: max(beam_width - len(finished[i]), 0)]]


def _answers(policy, beams: Sequence[_Beam], prefixes: Sequence[Trajectory]) -> list[tuple[str | None, int]]:
    """``(answer, policy samples spent on it)`` for each finished beam: state mode, the executor's answer
    (none if the episode did not finish); text modes, a greedy answer line after ``answer_prefix``, with
    the step budget of the search's problems."""
    if policy.mode == "state":
        return [(b.traj.meta.get("answer"), 0) for b in beams]
    if not beams:
        return []
    tok, fmt, task = policy.tokenizer, policy.fmt, policy.task
    prefix = tok(fmt.answer_prefix, add_special_tokens=False)["input_ids"]
    rows = tokenize_many([Trajectory(b.traj.input, "", b.traj.steps) for b in beams], tok, fmt, "steps")
    budget = step_budget(tok, [task.expert(task.problem_of(t)) for t in prefixes], fmt)
    greedy = replace(policy, temperature=None, batch_size=256)  # 256 rows a call: what the recorded runs used
    gens = greedy.generate([list(r.input_ids) + prefix for r in rows], 1, budget)
    return [(tok.decode(g[0]).partition(fmt.step_sep)[0].strip(), 1) for g in gens]
