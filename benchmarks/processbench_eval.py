"""A PRM trained here, evaluated on the real ProcessBench data with its first-error F1.

Trains a tiny character-level PRM (no pretrained weights exist on this machine) on PRMBench's training
files (step labels from GPT-4o-injected, human-filtered errors), chooses the first-error threshold on
one half of a ProcessBench subset (even positions) and reports ProcessBench's metric on the other half (odd), beside the two
trivial predictors on the same half: uniform random step scores through the same threshold procedure
(mean and 90th percentile over ``--draws`` draws, :func:`procsup.evaluation.prm_report.processbench_section`),
always -1, always "the first step is wrong", and the oracle. Expect a low number: a 0.5M-parameter
model trained for minutes on 2.4k solutions has no mathematics; the point is the pipeline, end to end.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/processbench_eval.py    # ~10 min on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see the Makefile

import argparse
import datetime as dt
import glob
import json
import tempfile
import time
from pathlib import Path

import torch

from procsup.data.converters import read_prmbench, read_processbench
from procsup.data.trajectory import Trajectory
from procsup.evaluation.prm_metrics import choose_threshold, processbench_scores, step_auroc
from procsup.evaluation.prm_report import processbench_section
from procsup.models.factory import TinyModelConfig, build_tiny_model, save_model
from procsup.models.prm import score
from procsup.trainers.loop import TrainResult
from procsup.trainers.prm import PRMConfig, train_prm

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def add_tiny_prm_args(p: argparse.ArgumentParser, *, threads: int) -> None:
    """The flags of :func:`train_tiny_prm`, shared with ``prmbench_eval.py``."""
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-chars", type=int, default=1500, help="training solutions longer than this are skipped")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=threads)


def train_tiny_prm(args: argparse.Namespace, workdir: Path) -> tuple[TrainResult, PRMConfig, list[Trajectory]]:
    """A character-level llama token classifier trained as a PRM on PRMBench's training files
    (``prm800k_train_p1_first400_*``; records whose ``error_steps`` point past the last step are
    rejected), solutions over ``args.max_chars`` characters skipped. Returns the training result, its
    config (for ``step_format``) and the training solutions."""
    train = []
    for f in sorted(glob.glob(str(SHARED / "prmbench" / "prm800k_train_p1_first400_*.jsonl"))):
        train += read_prmbench(f, rejects=workdir / "rejects.jsonl")
    train = [t for t in train if len(t.input) + sum(len(s.action) + 1 for s in t.steps) <= args.max_chars]
    # 8192 positions: the longest held-out PRMBench solution has 4,472 tokens (llama has no learned position
    # embeddings, so this changes no weight; it only lets score() accept those rows)
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers, max_positions=8192))
    save_model(model, tok, workdir / "backbone")
    cfg = PRMConfig(output_dir=str(workdir / "prm"), model=str(workdir / "backbone"), max_steps=args.steps,
                    batch_size=args.batch, learning_rate=1e-3, warmup_steps=20, log_steps=25)
    return train_prm(cfg, trajectories=train), cfg, train


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", default="gsm8k", help="ProcessBench subset: gsm8k, math, olympiadbench, omnimath")
    add_tiny_prm_args(p, threads=2)
    p.add_argument("--draws", type=int, default=100, help="draws of uniform random step scores (the random rows)")
    p.add_argument("--out", default="benchmarks/results/processbench_eval_random_rows.json",
                   help="JSON to write; an existing file is never overwritten")
    args = p.parse_args(argv)
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists: give a new --out (recorded results are kept)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result, cfg, train = train_tiny_prm(args, Path(tmp))
        bench = read_processbench(SHARED / "processbench" / f"{args.subset}.json", keep_after_error=True)
        scores = score(result.model, result.tokenizer, bench, cfg.step_format, batch_size=8)
    labels = [t.meta["first_error"] for t in bench]
    # the file lists erroneous samples first: split by parity so both halves hold both kinds
    calib, test = range(0, len(bench), 2), range(1, len(bench), 2)
    section = processbench_section(scores, labels, threshold=None, seed=0, draws=args.draws, split=(calib, test))
    threshold, ours, rand = section["threshold"], section["prm"], section["random_scores"]
    _, calib_f1 = choose_threshold([scores[i] for i in calib], [labels[i] for i in calib])
    oracle = processbench_scores([labels[i] for i in test], [labels[i] for i in test])
    # step AUROC over the steps whose label is known (up to and including the first error)
    pairs = [(s, lab) for i in test for s, lab in zip(scores[i], bench[i].labels) if lab is not None]
    auroc = step_auroc([s for s, _ in pairs], [lab for _, lab in pairs])
    out = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "args": vars(args),
        "train_solutions": len(train), "train_final": result.final_metrics, "train_seconds": result.seconds,
        "threshold": threshold, "calibration_f1": calib_f1, "test": ours,
        "random_scores": rand, "random_draws": args.draws,
        "always_minus_one": section["always_no_error"], "always_first_step": section["always_first_step"],
        "oracle": oracle, "step_auroc": auroc, "wall_seconds": time.perf_counter() - t0, "threads": args.threads,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(f"ProcessBench/{args.subset}, odd positions ({len(test)} problems); threshold {threshold:.4f} chosen on the even ones")
    print("| predictor | error acc | correct acc | F1 |\n|---|---|---|---|")
    rows = (("PRM trained here", ours), (f"random scores, mean of {args.draws}", {k: v["mean"] for k, v in rand.items()}),
            (f"random scores, p90 of {args.draws}", {k: v["p90"] for k, v in rand.items()}),
            ("always -1", section["always_no_error"]), ("always 0 (first step wrong)", section["always_first_step"]),
            ("oracle", oracle))
    for name, m in rows:
        print(f"| {name} | {m['error_acc']:.3f} | {m['correct_acc']:.3f} | {m['f1']:.3f} |")
    print(f"step AUROC (labelled steps) {auroc:.3f}; {len(train)} training solutions; wall {out['wall_seconds']:.0f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
