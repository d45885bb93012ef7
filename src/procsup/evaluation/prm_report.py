"""One report of a process reward model on labelled trajectories: what ``procsup evaluate-prm`` prints.

Every number comes from :mod:`procsup.evaluation.prm_metrics`; this module decides which metrics the data
allows, how it is split, and which trivial predictors stand beside the PRM, since a PRM number alone says
little (a ProcessBench F1 of 0.3 can be below what random scores reach through the same threshold search):

* **ProcessBench first-error F1** (Zheng et al., 2024) when the trajectories have a first error
  (``meta["first_error"]``, or read off hard step labels) and both kinds (with and without an error) occur.
  The threshold is chosen (:func:`~procsup.evaluation.prm_metrics.choose_threshold`) on a seeded random
  half and the F1 reported on the other half, or a given threshold is applied to all of them. Shuffled,
  not cut in half: ProcessBench files list the erroneous samples first, so a first half would hold no
  error-free sample. Trivial rows on the same test half: uniform random step scores through the *same*
  threshold procedure (mean and 90th percentile over ``draws``), always "no error" (-1), always "the first
  step is wrong" (0).
* **Step AUROC and accuracy** over the steps with a hard label (accuracy at the threshold in use, 0.5
  when none was chosen), beside random scores and "always correct".
* **PRMBench score** (Song et al., 2025) when every trajectory has a ``meta["classification"]`` and
  every step a hard label: official rule (correct iff score > 0.5), beside "always correct" and a coin
  biased to the share of correct steps.
* **Best-of-N and voting** when trajectories repeat a problem (same ``input``) and carry
  ``meta["correct"]`` (and ``meta["answer"]`` for the votes), beside a random candidate and the first
  one, and pass@N (the ceiling).
"""

from __future__ import annotations

import random
import statistics
import textwrap
from collections.abc import Sequence
from typing import Any

from procsup.data.trajectory import Trajectory
from procsup.evaluation import prm_metrics as pm

DRAWS = 100


def first_error_of(traj: Trajectory) -> int | None:
    """The 0-based index of the first wrong step, -1 for none, None when unknown: ``meta["first_error"]``
    when given (converters of first-error datasets keep it), else the first hard False label, or -1 when
    every step is labelled True."""
    given = traj.meta.get("first_error")
    if isinstance(given, int) and not isinstance(given, bool) and -1 <= given < len(traj.steps):
        return given
    for t, label in enumerate(traj.labels):
        if label is False:
            return t
        if label is not True:
            return None  # unlabelled or soft before any error: the first error is unknown
    return -1


def _quantile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p90": _quantile(values, 0.9)}


def _random_scores(rng: random.Random, shapes: Sequence[Sequence[Any]]) -> list[list[float]]:
    return [[rng.random() for _ in s] for s in shapes]


def processbench_section(scores: Sequence[Sequence[float]], first_errors: Sequence[int], *,
                         threshold: float | None, seed: int, draws: int,
                         split: tuple[Sequence[int], Sequence[int]] | None = None) -> dict[str, Any]:
    """First-error F1 of the PRM and of the trivial predictors (see the module docstring). ``split``, when
    given, is the (calibration, test) indices to use instead of the seeded random halves (a benchmark
    whose split is fixed elsewhere, e.g. ``benchmarks/processbench_eval.py``'s even/odd positions)."""
    n = len(first_errors)
    if threshold is None:
        if split is None:
            order = list(range(n))
            random.Random(seed).shuffle(order)
            calib, test = order[: n // 2], order[n // 2 :]
        else:
            calib, test = list(split[0]), list(split[1])
        for name, part in (("calibration", calib), ("test", test)):
            kinds = {fe == -1 for fe in (first_errors[i] for i in part)}
            if kinds != {True, False}:
                raise ValueError(f"the {name} half ({len(part)} samples) lacks samples with or without an error; "
                                 "give --threshold or more data")
    else:
        calib, test = [], list(range(n))

    def pick(rows, idx):
        return [rows[i] for i in idx]

    def run(rows) -> tuple[float, dict]:
        t = threshold if threshold is not None else pm.choose_threshold(pick(rows, calib), pick(first_errors, calib))[0]
        preds = [pm.first_error(s, t) for s in pick(rows, test)]
        return t, pm.processbench_scores(preds, pick(first_errors, test))

    t, prm = run(scores)
    rng = random.Random(f"{seed}:random-scores")
    randoms = [run(_random_scores(rng, scores))[1] for _ in range(draws)]
    labels = pick(first_errors, test)
    return {
        "threshold": t, "threshold_chosen_on": len(calib), "tested": len(test), "seed": seed,
        "prm": prm,
        "random_scores": {k: _spread([r[k] for r in randoms]) for k in ("error_acc", "correct_acc", "f1")},
        "always_no_error": pm.processbench_scores([-1] * len(labels), labels),
        "always_first_step": pm.processbench_scores([0] * len(labels), labels),
    }


def steps_section(scores: Sequence[Sequence[float]], trajs: Sequence[Trajectory], threshold: float, *,
                  seed: int, draws: int) -> dict[str, Any]:
    """Step AUROC and accuracy over the hard-labelled steps."""
    pairs = [(s, lab) for ss, t in zip(scores, trajs) for s, lab in zip(ss, t.labels) if isinstance(lab, bool)]
    if not pairs:
        raise ValueError("no step has a hard (true/false) label")
    xs, ys = [s for s, _ in pairs], [lab for _, lab in pairs]
    both = 0 < sum(ys) < len(ys)
    rng = random.Random(f"{seed}:random-steps")
    randoms = [[rng.random() for _ in xs] for _ in range(draws)]
    return {
        "n_steps": len(xs), "correct_share": sum(ys) / len(ys), "threshold": threshold,
        "prm": {"auroc": pm.step_auroc(xs, ys) if both else None, "accuracy": pm.step_accuracy(xs, ys, threshold)},
        "random_scores": {"auroc": _spread([pm.step_auroc(r, ys) for r in randoms]) if both else None,
                          "accuracy": _spread([pm.step_accuracy(r, ys, threshold) for r in randoms])},
        "always_correct": {"auroc": 0.5 if both else None, "accuracy": sum(ys) / len(ys)},
    }


def prmbench_section(scores: Sequence[Sequence[float]], trajs: Sequence[Trajectory], *, seed: int,
                     draws: int) -> dict[str, Any]:
    """PRMBench's PRMScore (overall and per class) of the PRM, "always correct" and a biased coin."""
    labels = [list(t.labels) for t in trajs]
    classes = [t.meta["classification"] for t in trajs]
    prior = sum(map(sum, labels)) / sum(map(len, labels))
    rng = random.Random(f"{seed}:coin")
    coins = [pm.prmbench_scores([[rng.random() < prior for _ in y] for y in labels], labels, classes)
             for _ in range(draws)]
    return {
        "threshold": pm.PRMBENCH_THRESHOLD, "correct_share": prior,
        "prm": pm.prmbench_scores([pm.prmbench_predictions(s) for s in scores], labels, classes),
        "always_correct": pm.prmbench_scores([[True] * len(y) for y in labels], labels, classes),
        "biased_coin": {"overall_prmscore": _spread([c["overall"]["prmscore"] for c in coins])},
    }


def best_of_n_section(scores: Sequence[Sequence[float]], trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Best-of-N per aggregation, majority and PRM-weighted majority vote, a random and the first candidate,
    and pass@N, over the problems (same ``input``) with two or more candidates."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trajs):
        groups.setdefault(t.input, []).append(i)
    problems = [idx for idx in groups.values() if len(idx) > 1]
    cand_scores = [[scores[i] for i in idx] for idx in problems]
    correct = [[bool(trajs[i].meta["correct"]) for i in idx] for idx in problems]
    answers = [[trajs[i].meta.get("answer") for i in idx] for idx in problems]
    has_answers = any(a is not None for row in answers for a in row)
    out: dict[str, Any] = {
        "problems": len(problems), "candidates": sum(map(len, problems)),
        "prm": {how: pm.best_of_n(cand_scores, correct, how) for how in pm.AGGREGATIONS},
        "random_candidate": statistics.fmean(sum(c) / len(c) for c in correct),
        "first_candidate": statistics.fmean(c[0] for c in correct),
        "pass_at_n": statistics.fmean(any(c) for c in correct),
    }
    if has_answers:
        out["majority_vote"] = pm.majority_vote(answers, correct)
        weights = [[pm.aggregate(s, "min") for s in row] for row in cand_scores]
        out["prm_weighted_majority_vote"] = pm.weighted_majority_vote(answers, weights, correct)
    return out


def prm_report(trajs: Sequence[Trajectory], scores: Sequence[Sequence[float]], *, threshold: float | None = None,
               seed: int = 0, draws: int = DRAWS) -> dict[str, Any]:
    """Every section the data allows (see the module docstring); a section the data does not allow is
    named in ``skipped`` with the reason."""
    if len(trajs) != len(scores):
        raise ValueError(f"{len(trajs)} trajectories but {len(scores)} score lists")
    for i, (t, s) in enumerate(zip(trajs, scores)):
        if len(s) != len(t.steps):
            raise ValueError(f"trajectory {i}: {len(s)} scores for {len(t.steps)} steps")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    out: dict[str, Any] = {"trajectories": len(trajs), "draws": draws, "skipped": {}}
    known = [(s, fe) for s, fe in zip(scores, map(first_error_of, trajs)) if fe is not None]
    try:
        if not known:
            raise ValueError("no trajectory has a known first error (meta.first_error or hard step labels)")
        out["processbench"] = processbench_section([s for s, _ in known], [fe for _, fe in known],
                                                   threshold=threshold, seed=seed, draws=draws)
    except ValueError as e:
        out["skipped"]["processbench"] = str(e)
    step_threshold = out["processbench"]["threshold"] if "processbench" in out else (threshold or 0.5)
    try:
        out["steps"] = steps_section(scores, trajs, step_threshold, seed=seed, draws=draws)
    except ValueError as e:
        out["skipped"]["steps"] = str(e)
    if all(isinstance(t.meta.get("classification"), str) and all(isinstance(x, bool) for x in t.labels) for t in trajs):
        out["prmbench"] = prmbench_section(scores, trajs, seed=seed, draws=draws)
    else:
        out["skipped"]["prmbench"] = "needs meta.classification and a hard label on every step"
    repeated = len({t.input for t in trajs}) < len(trajs)
    if repeated and all(isinstance(t.meta.get("correct"), bool) for t in trajs):
        out["best_of_n"] = best_of_n_section(scores, trajs)
    else:
        out["skipped"]["best_of_n"] = "needs several candidates per problem (same input) with meta.correct"
    return out


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as text tables, each line under 80 columns."""
    lines = [f"{report['trajectories']} trajectories; random rows: {report['draws']} draws"]
    if pb := report.get("processbench"):
        how = (f"chosen on {pb['threshold_chosen_on']}, seed {pb['seed']}" if pb["threshold_chosen_on"] else "given")
        lines += ["", f"ProcessBench first-error F1 on {pb['tested']} ({pb['threshold']:.4f} {how})",
                  f"  {'predictor':<34}{'error acc':>11}{'correct acc':>13}{'F1':>8}"]
        rs = pb["random_scores"]
        rows = [("PRM", pb["prm"]),
                ("random scores, mean", {k: rs[k]["mean"] for k in rs}),
                ("random scores, p90", {k: rs[k]["p90"] for k in rs}),
                ("always no error (-1)", pb["always_no_error"]),
                ("always first step wrong (0)", pb["always_first_step"])]
        lines += [f"  {name:<34}{_f(m['error_acc']):>11}{_f(m['correct_acc']):>13}{_f(m['f1']):>8}" for name, m in rows]
    if st := report.get("steps"):
        lines += ["", f"Steps: {st['n_steps']} hard-labelled, {st['correct_share']:.1%} correct; "
                      f"accuracy at {st['threshold']:.4f}",
                  f"  {'predictor':<34}{'AUROC':>11}{'accuracy':>13}"]
        rs = st["random_scores"]
        rows = [("PRM", st["prm"]["auroc"], st["prm"]["accuracy"]),
                ("random scores, mean", rs["auroc"] and rs["auroc"]["mean"], rs["accuracy"]["mean"]),
                ("random scores, p90", rs["auroc"] and rs["auroc"]["p90"], rs["accuracy"]["p90"]),
                ("always correct", st["always_correct"]["auroc"], st["always_correct"]["accuracy"])]
        lines += [f"  {name:<34}{_f(a):>11}{_f(acc):>13}" for name, a, acc in rows]
    if pr := report.get("prmbench"):
        classes = sorted(pr["prm"]["per_class"])
        lines += ["", f"PRMBench PRMScore (correct iff score > {pr['threshold']}; "
                      f"{pr['correct_share']:.1%} of steps correct)",
                  f"  {'predictor':<34}{'overall':>11}"]
        coin = pr["biased_coin"]["overall_prmscore"]
        rows = [("PRM", pr["prm"]["overall"]["prmscore"]), ("always correct", pr["always_correct"]["overall"]["prmscore"]),
                ("coin biased to the prior, mean", coin["mean"]), ("coin biased to the prior, p90", coin["p90"])]
        lines += [f"  {name:<34}{_f(v):>11}" for name, v in rows]
        lines += [f"  PRM, {c[:28]:<29}{_f(pr['prm']['per_class'][c]['prmscore']):>11}" for c in classes]
    if bo := report.get("best_of_n"):
        lines += ["", f"Best-of-N over {bo['problems']} problems ({bo['candidates']} candidates)",
                  f"  {'selection':<34}{'accuracy':>11}"]
        rows = [(f"PRM ({how})", v) for how, v in bo["prm"].items()]
        rows += [(name.replace("_", " "), bo[name]) for name in ("majority_vote", "prm_weighted_majority_vote") if name in bo]
        rows += [("random candidate", bo["random_candidate"]), ("first candidate", bo["first_candidate"]),
                 ("pass@N (ceiling)", bo["pass_at_n"])]
        lines += [f"  {name:<34}{_f(v):>11}" for name, v in rows]
    for name, reason in report["skipped"].items():
        lines.append(textwrap.fill(f"(no {name}: {reason})", width=79, subsequent_indent=" "))
    return "\n".join(lines)
