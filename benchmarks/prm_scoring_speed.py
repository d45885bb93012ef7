"""One-pass PRM scoring vs scoring each prefix separately, side by side in one run.

A PRM reads step t's score at step t's boundary token. ``procsup.models.prm.score`` gets every step of a
trajectory from one forward pass; the naive way (one forward pass per prefix, as in evaluators that
re-score ``steps[:t+1]``) costs n passes over growing prefixes. Same model, same trajectories, same
scores (checked); the ratio of times is the speed-up.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/prm_scoring_speed.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see the Makefile

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification

from procsup.data.trajectory import Trajectory
from procsup.models.factory import TinyModelConfig, char_tokenizer, tiny_hf_config
from procsup.models.prm import score
from procsup.tasks.addition import AdditionTask


def per_prefix_scores(model, tok, trajs: list[Trajectory], batch_size: int) -> list[list[float]]:
    """The naive scorer: step t's score from a pass over the prefix ``steps[:t+1]`` alone."""
    prefixes = [Trajectory(t.input, "", t.steps[: k + 1]) for t in trajs for k in range(len(t.steps))]
    flat = [s[-1] for s in score(model, tok, prefixes, batch_size=batch_size)]
    out, i = [], 0
    for t in trajs:
        out.append(flat[i : i + len(t.steps)])
        i += len(t.steps)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trajectories", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="steps per trajectory (digits of the addition problems)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default="benchmarks/results/prm_scoring_speed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = char_tokenizer()
    config = tiny_hf_config(TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers), tok)
    config.num_labels = 2
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config).eval()
    task = AdditionTask()
    trajs = [task.expert(q) for q in task.sample(0, args.steps, args.trajectories)]  # n digits -> n steps
    one, naive = [], []
    for r in range(args.repeats):
        for name in (("one", "naive") if r % 2 == 0 else ("naive", "one")):  # alternate order against drift
            t0 = time.perf_counter()
            if name == "one":
                s = score(model, tok, trajs, batch_size=args.batch)
            else:
                s = per_prefix_scores(model, tok, trajs, args.batch)
            (one if name == "one" else naive).append((time.perf_counter() - t0, s))
    max_diff = max(abs(a - b) for (_, x), (_, y) in zip(one, naive) for xs, ys in zip(x, y) for a, b in zip(xs, ys))
    t_one, t_naive = statistics.median(t for t, _ in one), statistics.median(t for t, _ in naive)
    ratios = [n / o for (o, _), (n, _) in zip(one, naive)]
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__},
        "setup": vars(args),
        "one_pass_s": t_one, "per_prefix_s": t_naive, "speedup_median_of_ratios": statistics.median(ratios),
        "trajectories_per_s_one_pass": args.trajectories / t_one, "max_abs_score_diff": max_diff,
    }
    print(f"PRM scoring, {args.trajectories} trajectories x {args.steps} steps, llama {args.hidden}x{args.layers}, "
          f"{args.threads} threads, OMP_WAIT_POLICY={result['machine']['OMP_WAIT_POLICY']}, medians of {args.repeats}")
    print("| scorer | seconds | trajectories/s |\n|---|---|---|")
    print(f"| one pass (procsup) | {t_one:.3f} | {args.trajectories / t_one:.1f} |")
    print(f"| each prefix separately | {t_naive:.3f} | {args.trajectories / t_naive:.1f} |")
    print(f"speed-up (median of per-repeat ratios): {result['speedup_median_of_ratios']:.2f}x; "
          f"max |score difference| {max_diff:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
