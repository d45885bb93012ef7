"""Metrics for process reward models (PRMs): small pure functions over per-step scores.

A PRM gives each step of a solution a score, read as "probability that this step is correct" (higher is
better). From those scores this module computes:

* solution scores: :func:`aggregate` (``last`` | ``min`` | ``product`` | ``mean``);
* ProcessBench (Zheng et al., 2024, "ProcessBench: Identifying Process Errors in Mathematical
  Reasoning", arXiv 2412.06559): :func:`first_error`, :func:`processbench_scores`,
  :func:`choose_threshold`;
* PRMBench (Song et al., 2025, "PRMBench: A Fine-grained and Challenging Benchmark for Process-Level
  Reward Models", arXiv 2501.03124): :func:`prmbench_predictions`, :func:`prmbench_scores`;
* step classification: :func:`step_auroc`, :func:`step_accuracy`;
* reranking N sampled solutions: :func:`best_of_n`, :func:`majority_vote`,
  :func:`weighted_majority_vote`, :func:`best_of_n_curve`.

Conventions, used everywhere here: a step is flagged as wrong when its score is ``< threshold`` (so a
score equal to the threshold passes; the one exception is :func:`prmbench_predictions`, which keeps
PRMBench's official ``score > threshold``); step labels are 1/True for a correct step, 0/False for a wrong
one, and anything else (notably the -100 ignore index) is rejected rather than cast to bool.

Plain Python on purpose: numpy is not a declared dependency of procsup, and these are a few thousand
numbers at most.
"""

from __future__ import annotations

import bisect
import math
import numbers
import random
from collections.abc import Hashable, Sequence
from typing import Literal

Aggregation = Literal["last", "min", "product", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "product", "mean")


# --------------------------------------------------------------------------------------------------
# Input checks


def _scores(values: Sequence[float], name: str) -> list[float]:
    """``values`` as a non-empty list of finite floats, or a ValueError naming ``name``."""
    if len(values) == 0:
        raise ValueError(f"{name} is empty")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars are Real too
            raise ValueError(f"{name}[{i}] must be a number, got {type(v).__name__}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{name}[{i}] must be finite, got {v}")
        out.append(v)
    return out


def _binary(values: Sequence[bool | int], name: str) -> list[bool]:
    """Step labels as bools. Only True/False/1/0 are accepted: a -100 (ignore index) or a soft label
    silently cast to bool is the classic label-alignment bug, so it is an error here. (numpy bools are
    not accepted; ``array.tolist()`` turns them into Python bools.)"""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or (isinstance(v, numbers.Integral) and v in (0, 1)):
            out.append(bool(v))
        else:
            raise ValueError(f"{name}[{i}] must be 0/1 or a bool, got {v!r}")
    return out


def _same_length(a: Sequence, b: Sequence, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} items but {name_b} has {len(b)}; they must be equal")
    if len(a) == 0:
        raise ValueError(f"{name_a} and {name_b} are empty")


# --------------------------------------------------------------------------------------------------
# Solution scores


def aggregate(step_scores: Sequence[float], how: Aggregation) -> float:
    """One score for a solution from its step scores.

    * ``product``: probability that every step is correct if steps were independent (Lightman et al.,
      2023, "Let's Verify Step by Step").
    * ``min``: the weakest step (Wang et al., 2024, "Math-Shepherd").
    * ``last``: the score of the final step (Snell et al., 2024, "Scaling LLM Test-Time Compute
      Optimally...", found it best for their PRM).
    * ``mean``: the average step score, a common baseline.
    """
    scores = _scores(step_scores, "step_scores")
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "product":
        return math.prod(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    raise ValueError(f"how must be one of {AGGREGATIONS}, got {how!r}")


# --------------------------------------------------------------------------------------------------
# ProcessBench


def first_error(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step whose score is ``< threshold``, or -1 if none: ProcessBench's prediction
    of the earliest erroneous step (official ``find_first_zero`` in QwenLM/ProcessBench
    ``code/run_eval_prm_trl.py``, with "score < threshold" in place of "argmax == 0")."""
    for i, s in enumerate(_scores(step_scores, "step_scores")):
        if s < threshold:
            return i
    return -1


def processbench_scores(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float | int]:
    """The ProcessBench metric (Zheng et al., 2024; official code QwenLM/ProcessBench
    ``code/run_eval_prm_trl.py``, ``run_eval_prm_rlhflow.py``).

    ``labels[i]`` is the 0-based index of the earliest wrong step of sample i, or -1 if no step is
    wrong; ``predictions[i]`` is the predicted index, same convention. A prediction counts only if it
    equals the label exactly.

    Returns ``error_acc`` (share of matches among samples with ``label != -1``), ``correct_acc`` (share
    of matches among ``label == -1``), ``f1`` (their harmonic mean), ``n_error`` and ``n_correct``.
    Accuracies are fractions in [0, 1]; the official script prints them times 100. Where the official
    code would divide 0 by 0 (both accuracies 0), ``f1`` is 0.0. Both groups must be non-empty, since
    the metric is undefined otherwise.
    """
    _same_length(predictions, labels, "predictions", "labels")
    for name, values in (("predictions", predictions), ("labels", labels)):
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < -1:
                raise ValueError(f"{name}[{i}] must be an int >= -1 (a step index, or -1 for no error), got {v!r}")
    error = [p == lab for p, lab in zip(predictions, labels) if lab != -1]
    correct = [p == lab for p, lab in zip(predictions, labels) if lab == -1]
    if not error or not correct:
        missing = "erroneous (label != -1)" if not error else "error-free (label == -1)"
        raise ValueError(f"no {missing} samples: the ProcessBench F1 needs both kinds")
    error_acc = sum(error) / len(error)
    correct_acc = sum(correct) / len(correct)
    return {
        "error_acc": error_acc,
        "correct_acc": correct_acc,
        "f1": _harmonic_mean(error_acc, correct_acc),
        "n_error": len(error),
        "n_correct": len(correct),
    }


def _harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def choose_threshold(
    step_scores_list: Sequence[Sequence[float]], labels: Sequence[int], grid: Sequence[float] | None = None
) -> tuple[float, float]:
    """The threshold that maximizes the ProcessBench F1 of :func:`first_error` on a calibration split,
    and that F1. Choose it on one split and report :func:`processbench_scores` on another.

    A PRM's scores are continuous while ProcessBench asks for one step index, so a threshold is part of
    the method; fitting it on the test split itself would inflate the F1.

    ``grid=None`` tries every threshold that gives different predictions: the lowest score (flags
    nothing), the midpoints between consecutive distinct scores, and ``+inf`` (flags every first
    step). Midpoints rather than the scores themselves, so the chosen threshold sits between the
    calibration scores instead of on one of them. Ties go to the smallest threshold (fewest steps
    flagged).
    """
    _same_length(step_scores_list, labels, "step_scores_list", "labels")
    samples = [_scores(s, f"step_scores_list[{i}]") for i, s in enumerate(step_scores_list)]
    # Sample i is predicted right at threshold t iff t lies in the interval (lo_i, hi_i]:
    #   label -1: no step < t            <=> t <= min(scores)              -> (-inf, min]
    #   label k : steps < k pass, k fails <=> scores[k] < t <= min(scores[:k]) -> (scores[k], min(scores[:k])]
    # so counting matches for every t is two binary searches, not a pass over all steps per threshold.
    lo_err, hi_err, hi_cor = [], [], []
    for i, (s, lab) in enumerate(zip(samples, labels)):
        if isinstance(lab, bool) or not isinstance(lab, numbers.Integral) or not -1 <= lab < len(s):
            raise ValueError(f"labels[{i}] must be -1 or a step index below {len(s)}, got {lab!r}")
        if lab == -1:
            hi_cor.append(min(s))
        else:
            lo, hi = s[lab], min(s[:lab], default=math.inf)
            if lo < hi:  # otherwise no threshold gets this sample right
                lo_err.append(lo)
                hi_err.append(hi)
    n_error = sum(lab != -1 for lab in labels)
    n_correct = len(labels) - n_error
    if n_error == 0 or n_correct == 0:
        missing = "erroneous (label != -1)" if n_error == 0 else "error-free (label == -1)"
        raise ValueError(f"no {missing} samples: the ProcessBench F1 needs both kinds")
    if grid is None:
        distinct = sorted({v for s in samples for v in s})
        candidates = [distinct[0]] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [math.inf]
    else:
        if len(grid) == 0:
            raise ValueError("grid is empty")
        if any(isinstance(g, bool) or not isinstance(g, numbers.Real) or math.isnan(g) for g in grid):
            raise ValueError(f"grid must hold numbers (inf allowed, nan not), got {list(grid)!r}")
        candidates = sorted(float(g) for g in grid)
    lo_err.sort()
    hi_err.sort()
    hi_cor.sort()
    best_t, best_f1 = candidates[0], -1.0
    for t in candidates:
        # count(a < t) = bisect_left(sorted a, t); an interval (lo, hi] contains t iff lo < t and not hi < t.
        error_acc = (bisect.bisect_left(lo_err, t) - bisect.bisect_left(hi_err, t)) / n_error
        correct_acc = (len(hi_cor) - bisect.bisect_left(hi_cor, t)) / n_correct
        f1 = _harmonic_mean(error_acc, correct_acc)
        if f1 > best_f1:
            best_t, best_f1 = t, f1
    return best_t, best_f1


# --------------------------------------------------------------------------------------------------
# PRMBench

PRMBENCH_THRESHOLD = 0.5
"""PRMBench's default ``validity_threshold`` (official ``mr_eval/models/abstract_model.py``)."""


def prmbench_predictions(step_scores: Sequence[float], threshold: float = PRMBENCH_THRESHOLD) -> list[bool]:
    """PRMBench's per-step prediction: a step is predicted correct iff its score is ``> threshold``.

    The official rule (``step_level_validity_labels = [item > self.validity_threshold ...]`` in the PRM
    wrappers of ssmisya/PRMBench, e.g. ``mr_eval/models/math_shepherd.py``, and in ``docs/document.md``;
    threshold 0.5 by default), so, unlike :func:`first_error`, a score equal to the threshold counts as
    a predicted error here.
    """
    return [s > threshold for s in _scores(step_scores, "step_scores")]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(hits: int, false_pos: int, false_neg: int) -> float | None:
    # 2PR/(P+R) written with counts; None when the class is neither present nor predicted
    den = 2 * hits + false_pos + false_neg
    return 2 * hits / den if den else None


def _prmbench_group(tp: int, fp: int, tn: int, fn: int, n_solutions: int) -> dict[str, float | int | None]:
    """PRMBench's numbers for one pool of steps; "positive" = a correct step, as in the official code."""
    f1 = _f1(tp, fp, fn)
    negative_f1 = _f1(tn, fn, fp)
    # the F1 of each kind of step the pool holds: both kinds -> their mean (PRMScore); only correct
    # steps (multi_solutions) -> the positive F1, the number the official leaderboard prints as MS.
    present = [v for v, n in ((f1, tp + fn), (negative_f1, tn + fp)) if n]
    return {
        "prmscore": sum(present) / len(present) if present else None,
        "f1": f1,
        "negative_f1": negative_f1,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "negative_precision": _ratio(tn, tn + fn),
        "negative_recall": _ratio(tn, tn + fp),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "n_solutions": n_solutions,
        "n_steps": tp + fp + tn + fn,
    }


def prmbench_scores(
    predictions: Sequence[Sequence[bool | int]], labels: Sequence[Sequence[bool | int]], classes: Sequence[str]
) -> dict[str, dict]:
    """PRMBench's PRMScore (Song et al., 2025), overall and per error class, from per-step binary
    predictions.

    Followed: ssmisya/PRMBench ``mr_eval/tasks/prmtest_classified/task.py`` (commit cc7db59;
    ``evaluate_function`` and ``eval_on_hallucination_step``) for the counts and F1s, and
    ``mr_visualize/eval_res_view/draw_tabs/form_excel_strs.ipynb`` (commit f260a05) for
    ``PRMScore = 0.5 * f1 + 0.5 * negative_f1``, from which the README's leaderboard is made. In detail:

    * ``predictions[i][k]`` says whether step k of solution i is predicted correct (see
      :func:`prmbench_predictions`); ``labels[i][k]`` whether it is correct (False iff k + 1 is in the
      record's ``error_steps``). *Every* step counts, those after the first error too: PRMBench marks
      all erroneous steps, so a step after an error can be correct.
    * A correct step is the positive class: TP = correct step predicted correct, FP = wrong step
      predicted correct, TN = wrong step predicted wrong, FN = correct step predicted wrong. Counts are
      pooled over the steps of all solutions of a group (micro-averaged), then ``f1`` = F1 of the
      positive class and ``negative_f1`` = F1 of the negative class; ``prmscore`` is their mean.
    * ``overall`` pools every solution given, ``multi_solutions`` included (the official total pools
      every class except the "correct" originals, below); ``per_class[c]`` pools the solutions of
      class ``c``.
    * ``multi_solutions`` solutions have no wrong step, so its ``negative_f1`` is 0 or undefined; for a
      group with only correct steps ``prmscore`` is ``f1``, which is what the official leaderboard
      prints in its MS column (the task code's 0.5 * f1 + 0.5 * (-1 or 0) there is not reported).
      Symmetrically, a group with only wrong steps gets ``negative_f1``.

    Where the official code divides by zero it writes -1 and computes on with it; here an undefined
    ratio is ``None``, and F1 is ``2TP / (2TP + FP + FN)``. The two agree wherever precision and
    recall are defined and not both 0; the official F1 is -1, not 0, when TP = 0 with FP, FN > 0.
    Not covered, as they concern other inputs: the official task also scores the original (all-correct)
    process of each ``redundency`` record as a class "correct", left out of the total and of the
    leaderboard; and for models that emit a separate redundancy score (ReasonEval) it judges the
    ``redundency`` and ``circular`` classes on that score instead of the validity one. Scores are
    fractions in [0, 1]; the leaderboard prints them times 100.

    Returns ``{"overall": group, "per_class": {class: group}}`` (classes sorted), each group holding
    ``prmscore``, ``f1``, ``negative_f1``, ``precision``, ``recall``, ``negative_precision``,
    ``negative_recall``, ``tp``, ``fp``, ``tn``, ``fn``, ``n_solutions``, ``n_steps``.
    """
    _same_length(predictions, labels, "predictions", "labels")
    _same_length(predictions, classes, "predictions", "classes")
    keys = ("tp", "fp", "tn", "fn", "n_solutions")
    counts: dict[str, dict[str, int]] = {}
    for i, (pred, lab, cls) in enumerate(zip(predictions, labels, classes)):
        if len(pred) != len(lab) or len(pred) == 0:
            raise ValueError(f"solution {i}: {len(pred)} predictions for {len(lab)} step labels; need as many, and at least one")
        if not isinstance(cls, str):
            raise ValueError(f"classes[{i}] must be a string, got {cls!r}")
        c = counts.setdefault(cls, dict.fromkeys(keys, 0))
        for predicted_correct, correct in zip(_binary(pred, f"predictions[{i}]"), _binary(lab, f"labels[{i}]")):
            if correct:
                c["tp" if predicted_correct else "fn"] += 1
            else:
                c["fp" if predicted_correct else "tn"] += 1
        c["n_solutions"] += 1
    total = {k: sum(c[k] for c in counts.values()) for k in keys}
    return {
        "overall": _prmbench_group(**total),
        "per_class": {cls: _prmbench_group(**counts[cls]) for cls in sorted(counts)},
    }


# --------------------------------------------------------------------------------------------------
# Step classification


def step_auroc(scores: Sequence[float], labels: Sequence[bool | int]) -> float:
    """Area under the ROC curve of step scores against binary step labels (1 = correct step): the
    probability that a random correct step scores higher than a random wrong one, ties counting half.

    Computed as the Mann-Whitney U statistic with average ranks for tied scores (Hanley & McNeil,
    1982), because scikit-learn is not a procsup dependency; it equals
    ``sklearn.metrics.roc_auc_score``. All-equal scores give 0.5. Raises ValueError if only one class
    is present, where AUROC is undefined.
    """
    _same_length(scores, labels, "scores", "labels")
    xs = _scores(scores, "scores")
    ys = _binary(labels, "labels")
    n_pos = sum(ys)
    n_neg = len(ys) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"step_auroc needs both classes, got {n_pos} correct and {n_neg} wrong steps")
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):  # 1-based ranks; a run of equal scores shares the mean of its ranks
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, ys) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def step_accuracy(scores: Sequence[float], labels: Sequence[bool | int], threshold: float = 0.5) -> float:
    """Share of steps classified right, predicting "correct" iff ``score >= threshold`` (the same rule
    as :func:`first_error`)."""
    _same_length(scores, labels, "scores", "labels")
    xs = _scores(scores, "scores")
    ys = _binary(labels, "labels")
    return sum((x >= threshold) == y for x, y in zip(xs, ys)) / len(xs)


# --------------------------------------------------------------------------------------------------
# Reranking N candidates per problem


def _check_candidates(a: Sequence[Sequence], b: Sequence[Sequence], name_a: str, name_b: str) -> None:
    _same_length(a, b, name_a, name_b)
    for i, (x, y) in enumerate(zip(a, b)):
        if len(x) != len(y):
            raise ValueError(f"problem {i}: {name_a} has {len(x)} candidates but {name_b} has {len(y)}")
        if len(x) == 0:
            raise ValueError(f"problem {i} has no candidates")


def best_of_n(
    candidates_scores: Sequence[Sequence[Sequence[float]]], candidates_correct: Sequence[Sequence[bool]], how: Aggregation,
    candidates_answers: Sequence[Sequence[Hashable | None]] | None = None,
) -> float:
    """Share of problems whose top-scored candidate is correct (best-of-N reranking, Cobbe et al., 2021;
    with a PRM, Lightman et al., 2023).

    ``candidates_scores[p][c]`` are the step scores of candidate c of problem p, combined with
    :func:`aggregate` ``(how)``; ``candidates_correct[p][c]`` says whether its final answer is right.
    Ties go to the candidate with the lowest index.

    With ``candidates_answers``, only finished candidates (answer not ``None``) are ranked, as
    :func:`majority_vote` counts only them; a problem whose candidates all lack an answer counts as wrong.
    Without, every candidate is ranked, whatever it ended with.
    """
    _check_candidates(candidates_scores, candidates_correct, "candidates_scores", "candidates_correct")
    if candidates_answers is not None:
        _check_candidates(candidates_scores, candidates_answers, "candidates_scores", "candidates_answers")
    hits = 0
    for p, (scores, correct) in enumerate(zip(candidates_scores, candidates_correct)):
        solution_scores = [aggregate(s, how) for s in scores]
        ranked = [c for c in range(len(scores)) if candidates_answers is None or candidates_answers[p][c] is not None]
        if ranked:
            best = max(ranked, key=solution_scores.__getitem__)  # max keeps the first of ties
            hits += bool(correct[best])
    return hits / len(candidates_scores)


def weighted_majority_vote(
    answers: Sequence[Sequence[Hashable | None]], weights: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]
) -> float:
    """Share of problems whose highest-weight answer is correct: each distinct final answer gets the sum
    of its candidates' weights (Uesato et al., 2022; Wang et al., 2024, "Math-Shepherd", with weights =
    PRM solution scores from :func:`aggregate`).

    Weights must be >= 0 (probabilities, not logits: a negative sum would penalize an answer for being
    frequent). ``None`` answers (nothing parsed) cast no vote; a problem where every answer is ``None``
    counts as wrong. Ties between answers go to the one that first appears. Candidates with the same
    answer must agree on ``correct``; otherwise the correctness check upstream is inconsistent and this
    raises ValueError.
    """
    _check_candidates(answers, weights, "answers", "weights")
    _check_candidates(answers, correct, "answers", "correct")
    hits = 0
    for p, (ans, ws, ok) in enumerate(zip(answers, weights, correct)):
        ws = _scores(ws, f"weights[{p}]")
        if min(ws) < 0:
            raise ValueError(f"weights[{p}] has a negative weight {min(ws)}; weights must be >= 0")
        totals: dict[Hashable, float] = {}  # insertion order = first appearance, which breaks ties
        is_right: dict[Hashable, bool] = {}
        for a, w, c in zip(ans, ws, ok):
            if a is None:
                continue
            if a in is_right and is_right[a] != bool(c):
                raise ValueError(f"problem {p}: answer {a!r} is marked both correct and incorrect")
            totals[a] = totals.get(a, 0.0) + w
            is_right[a] = bool(c)
        if totals:
            winner = max(totals, key=totals.__getitem__)  # max keeps the first of ties
            hits += is_right[winner]
    return hits / len(answers)


def within_problem_auroc(
    solution_scores: Sequence[Sequence[float]], candidates_correct: Sequence[Sequence[bool]]
) -> tuple[float | None, int]:
    """How well a reward model ranks one problem's candidates: for every problem with both a correct and a
    wrong candidate, the AUROC of its candidates' solution scores (:func:`step_auroc` on that problem
    alone), averaged over those problems. Returns ``(mean, number of such problems)``; ``(None, 0)`` when
    no problem has both.

    This is what best-of-N needs. A pooled AUROC over all problems' candidates also rewards telling easy
    problems from hard ones, which does not help to choose among one problem's samples."""
    _check_candidates(solution_scores, candidates_correct, "solution_scores", "candidates_correct")
    per = [step_auroc(s, c) for s, c in zip(solution_scores, candidates_correct) if 0 < sum(map(bool, c)) < len(c)]
    return (sum(per) / len(per) if per else None), len(per)


def majority_vote(
    candidates_answers: Sequence[Sequence[Hashable | None]], candidates_correct: Sequence[Sequence[bool]]
) -> float:
    """Share of problems whose most frequent final answer is correct (self-consistency, Wang et al.,
    2023): :func:`weighted_majority_vote` with every weight 1, so the same tie and ``None`` rules."""
    weights = [[1.0] * len(a) for a in candidates_answers]
    return weighted_majority_vote(candidates_answers, weights, candidates_correct)


def best_of_n_curve(
    candidates_scores: Sequence[Sequence[Sequence[float]]],
    candidates_correct: Sequence[Sequence[bool]],
    how: Aggregation,
    *,
    candidates_answers: Sequence[Sequence[Hashable | None]] | None = None,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    seed: int | None = None,
    draws: int = 16,
) -> dict[int, dict[str, float]]:
    """Accuracy against the number of candidates N, for each N in ``ns``.

    With ``seed=None`` each problem keeps its first N candidates: one deterministic evaluation, fine
    when candidates were sampled independently. With a seed, every problem draws ``draws`` random
    subsets of N candidates (without replacement; one generator per N, seeded from ``(seed, N)``),
    kept in their original order so ties still go to the lowest index, and accuracies are averaged over
    the draws.

    Returns ``{N: {"best_of_n": ..., "oracle": ...}}``; ``oracle`` is the share of problems with at
    least one correct candidate among the N (pass@N, the ceiling for any reranker). Given
    ``candidates_answers``, also ``best_of_n_finished`` (:func:`best_of_n` among the candidates with an
    answer, the ones the votes count), ``majority_vote`` and ``weighted_majority_vote`` (weights =
    ``aggregate(steps, how)``).
    """
    _check_candidates(candidates_scores, candidates_correct, "candidates_scores", "candidates_correct")
    if candidates_answers is not None:
        _check_candidates(candidates_scores, candidates_answers, "candidates_scores", "candidates_answers")
    if len(ns) == 0:
        raise ValueError("ns is empty")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    fewest = min(len(c) for c in candidates_correct)
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= fewest:
            raise ValueError(f"every N must be an int in [1, {fewest}] (the fewest candidates of any problem), got {n!r}")
    solution_scores = [[aggregate(s, how) for s in cands] for cands in candidates_scores]
    out: dict[int, dict[str, float]] = {}
    for n in ns:
        rng = random.Random(f"{seed}:{n}")  # one stream per N, so a curve does not depend on the other Ns
        n_draws = 1 if seed is None else draws
        totals: dict[str, float] = {}
        for _ in range(n_draws):
            picks = [list(range(n)) if seed is None else sorted(rng.sample(range(len(c)), n)) for c in candidates_correct]
            correct = _subset(candidates_correct, picks)
            metrics = {
                "best_of_n": best_of_n(_subset(candidates_scores, picks), correct, how),
                "oracle": sum(any(c) for c in correct) / len(correct),
            }
            if candidates_answers is not None:
                answers = _subset(candidates_answers, picks)
                metrics["best_of_n_finished"] = best_of_n(_subset(candidates_scores, picks), correct, how, answers)
                metrics["majority_vote"] = majority_vote(answers, correct)
                metrics["weighted_majority_vote"] = weighted_majority_vote(answers, _subset(solution_scores, picks), correct)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v
        out[n] = {k: v / n_draws for k, v in totals.items()}
    return out


def _subset(rows: Sequence[Sequence], picks: list[list[int]]) -> list[list]:
    """``rows[p]`` restricted to the candidate indices ``picks[p]``, for every problem p."""
    return [[row[i] for i in idx] for row, idx in zip(rows, picks)]
