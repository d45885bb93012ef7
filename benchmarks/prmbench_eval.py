"""PRMBench's PRMScore of a PRM trained here, on the PRMBench files it was not trained on.

The same tiny character-level PRM as ``processbench_eval.py`` (same function, same flags), trained on
PRMBench's ``prm800k_train_p1_first400_*`` files and scored on the held-out ``prm800k_test_p1_*``,
``prm800k_test_p2_*`` and ``prm_test_p12_multi_solutions`` files with PRMBench's official metric
(:func:`procsup.evaluation.prm_metrics.prmbench_scores`: a step is predicted correct iff its score is
> 0.5; PRMScore = mean of the F1 on correct and on wrong steps, overall and per error class), beside
trivial predictors on the same steps: always "correct", a fair coin per step, a coin biased to the
share of correct steps (one draw per class, and mean and 90th percentile of the overall PRMScore over
``--draws`` draws, :func:`procsup.evaluation.prm_report.prmbench_section`), and the oracle. One more
row moves the threshold to the one that maximizes PRMScore on a sample of the training solutions.

Not the leaderboard's data: the official task (``prmtest_classified``) also scores the
``train_p1_first400`` files we train on, so these numbers share the metric, not the item set. Held-out
records are read as the official task reads them: one per (classification, idx), the first kept, and
``error_steps`` entries past the last step ignored (the official loop runs over the steps only); the
two records with an empty step are left out (our trajectory format rejects empty actions).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/prmbench_eval.py    # ~23 min on 1 busy thread
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see the Makefile

import argparse
import datetime as dt
import glob
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from processbench_eval import SHARED, add_tiny_prm_args, train_tiny_prm  # the sibling script

from procsup.data.converters import from_prmbench
from procsup.data.trajectory import Trajectory, TrajectoryError
from procsup.evaluation.prm_metrics import PRMBENCH_THRESHOLD, prmbench_predictions, prmbench_scores, step_auroc
from procsup.evaluation.prm_report import prmbench_section
from procsup.models.prm import score

HELDOUT = ("prm800k_test_p1_*.jsonl", "prm800k_test_p2_*.jsonl", "prm_test_p12_multi_solutions.jsonl")
# the leaderboard's column order and abbreviations (ssmisya/PRMBench README)
COLUMNS = {"redundency": "NR.", "circular": "NCL.", "counterfactual": "ES.", "step_contradiction": "SC.",
           "domain_inconsistency": "DC.", "confidence": "CI.", "missing_condition": "PS.", "deception": "DR.",
           "multi_solutions": "MS."}


def read_heldout(patterns=HELDOUT) -> tuple[list[Trajectory], dict[str, int]]:
    """The held-out records as trajectories, read as the official task reads them (see the module
    docstring), and counts of what that reading changed."""
    seen: set[tuple[str, str]] = set()
    out: list[Trajectory] = []
    stats = {"records": 0, "duplicates_dropped": 0, "error_steps_clipped": 0, "all_error_steps_clipped": 0, "rejected": 0}
    for path in sorted(f for pattern in patterns for f in glob.glob(str(SHARED / "prmbench" / pattern))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                stats["records"] += 1
                key = (record["classification"], record["idx"])
                if key in seen:
                    stats["duplicates_dropped"] += 1
                    continue
                seen.add(key)
                n = len(record["modified_process"])
                kept = [e for e in record["error_steps"] if e <= n]
                if kept != record["error_steps"]:
                    stats["error_steps_clipped"] += 1
                    stats["all_error_steps_clipped"] += not kept
                try:
                    out.append(from_prmbench({**record, "error_steps": kept}))
                except TrajectoryError:  # an empty step (2 records): not a valid trajectory here
                    stats["rejected"] += 1
    return out, stats


def score_by_length(model, tokenizer, trajectories: list[Trajectory], fmt, batch_size: int) -> list[list[float]]:
    """:func:`score` on length-sorted batches (less padding), returned in the input order."""
    def length(i: int) -> int:
        return len(trajectories[i].input) + sum(len(s.action) for s in trajectories[i].steps)

    order = sorted(range(len(trajectories)), key=length)
    scores = score(model, tokenizer, [trajectories[i] for i in order], fmt, batch_size=batch_size)
    out: list[list[float]] = [[] for _ in trajectories]
    for i, s in zip(order, scores):
        out[i] = s
    return out


def best_threshold(
    scores: list[list[float]], labels: list[list[bool]], classes: list[str], candidates: int = 200
) -> tuple[float, float]:
    """The threshold among ``candidates`` quantiles of the step scores (and the official 0.5) with the
    highest overall PRMScore, and that PRMScore; ties go to the lower threshold."""
    flat = sorted(s for ss in scores for s in ss)
    grid = sorted({flat[min(len(flat) - 1, k * len(flat) // candidates)] for k in range(candidates)} | {PRMBENCH_THRESHOLD})
    best = (grid[0], -1.0)
    for t in grid:
        value = prmbench_scores([prmbench_predictions(s, t) for s in scores], labels, classes)["overall"]["prmscore"]
        if value > best[1]:
            best = (t, value)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tiny_prm_args(p, threads=1)
    p.add_argument("--calibration", type=int, default=400, help="training solutions sampled to choose the tuned threshold")
    p.add_argument("--limit", type=int, default=0,
                   help="score every k-th held-out record so that about this many remain (0: all)")
    p.add_argument("--seed", type=int, default=0, help="for the calibration sample and the coin-flip predictor")
    p.add_argument("--draws", type=int, default=100, help="draws of the prior-biased coin (mean and p90 row)")
    p.add_argument("--out", default="benchmarks/results/prmbench_eval_prior_coin.json",
                   help="JSON to write; an existing file is never overwritten")
    args = p.parse_args(argv)
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists: give a new --out (recorded results are kept)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    heldout, stats = read_heldout()
    if args.limit and args.limit < len(heldout):
        heldout = heldout[:: -(-len(heldout) // args.limit)]
    with tempfile.TemporaryDirectory() as tmp:
        result, cfg, train = train_tiny_prm(args, Path(tmp))
        calibration = random.Random(args.seed).sample(train, min(args.calibration, len(train)))
        t1 = time.perf_counter()
        calib_scores = score_by_length(result.model, result.tokenizer, calibration, cfg.step_format, batch_size=8)
        scores = score_by_length(result.model, result.tokenizer, heldout, cfg.step_format, batch_size=8)
        score_seconds = time.perf_counter() - t1
    labels = [t.labels for t in heldout]
    classes = [t.meta["classification"] for t in heldout]
    tuned, calib_prmscore = best_threshold(calib_scores, [t.labels for t in calibration],
                                           [t.meta["classification"] for t in calibration])
    coin = random.Random(args.seed)
    prior = sum(map(sum, labels)) / sum(map(len, labels))  # the share of correct steps
    predictors = {
        "prm_threshold_0.5": [prmbench_predictions(s) for s in scores],
        "prm_tuned_threshold": [prmbench_predictions(s, tuned) for s in scores],
        "always_correct": [[True] * len(y) for y in labels],
        "coin_flip": [[coin.random() < 0.5 for _ in y] for y in labels],
        "coin_biased_to_prior": [[coin.random() < prior for _ in y] for y in labels],
        "oracle": labels,
    }
    results = {name: prmbench_scores(preds, labels, classes) for name, preds in predictors.items()}
    flat_scores = [s for ss in scores for s in ss]
    flat_labels = [y for ys in labels for y in ys]
    auroc = step_auroc(flat_scores, flat_labels)
    auroc_per_class = {}
    for cls in sorted(set(classes)):
        pairs = [(s, y) for ss, ys, c in zip(scores, labels, classes) if c == cls for s, y in zip(ss, ys)]
        if len({y for _, y in pairs}) == 2:  # multi_solutions has no wrong step: no AUROC
            auroc_per_class[cls] = step_auroc([s for s, _ in pairs], [y for _, y in pairs])
    stats.update(solutions=len(heldout), steps=len(flat_labels), wrong_step_share=flat_labels.count(False) / len(flat_labels))
    out = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "args": vars(args),
        "train_solutions": len(train), "train_final": result.final_metrics, "train_seconds": result.seconds,
        "heldout": stats, "score_seconds": score_seconds,
        "threshold": PRMBENCH_THRESHOLD, "tuned_threshold": tuned, "calibration_prmscore": calib_prmscore,
        "step_auroc": auroc, "step_auroc_per_class": auroc_per_class,
        "score_quantiles": {q: sorted(flat_scores)[int(q * (len(flat_scores) - 1))] for q in (0.0, 0.1, 0.5, 0.9, 1.0)},
        "results": results, "correct_step_share": prior,
        "coin_biased_to_prior_draws": prmbench_section(scores, heldout, seed=args.seed, draws=args.draws)["biased_coin"],
        "wall_seconds": time.perf_counter() - t0, "threads": args.threads, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(f"PRMBench held-out files: {stats['solutions']} solutions, {stats['steps']} steps "
          f"({stats['wrong_step_share']:.1%} wrong); PRMScore x 100, MS. = F1 on its all-correct steps")
    print("| predictor | Overall | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, r in results.items():
        cells = [r["overall"]["prmscore"]] + [r["per_class"][c]["prmscore"] for c in COLUMNS if c in r["per_class"]]
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in cells) + " |")
    spread = out["coin_biased_to_prior_draws"]["overall_prmscore"]
    print(f"coin biased to the prior ({prior:.3f}), overall over {args.draws} draws: mean {100 * spread['mean']:.1f}, "
          f"p90 {100 * spread['p90']:.1f}")
    print(f"tuned threshold {tuned:.4f} (PRMScore {calib_prmscore:.3f} on {len(calibration)} training solutions); "
          f"step AUROC {auroc:.3f}; {len(train)} training solutions; wall {out['wall_seconds']:.0f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
