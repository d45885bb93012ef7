"""The single-seed validation trials of issue 18 (trials.jsonl): coupled addition with the library pieces.

Not a benchmark: one seed, 100 validation problems per length (seed 20000 + seed, never the test seed).
The trials in trials.jsonl ran before the answer-lane change of commit 7c2bde8 (answer digits then at
B(s-1)+5); with the current rule this script trains the current layout. Appends to ``--log`` and writes
its runs under ``--out``.

Example: OMP_NUM_THREADS=1 python benchmarks/results/positions/trial.py --arch llama --spread 1.0 --steps 1500
"""

import argparse
import json
import os
import random
import time

import torch

from procsup.data.positions import add_positions, random_offsets, shifted
from procsup.data.tokenize import StepFormat
from procsup.evaluation.metrics import evaluate
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rollout import LMPolicy
from procsup.tasks.addition import AdditionTask
from procsup.trainers.pal import PALConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    for name, kind, default in [("arch", str, "gpt2"), ("hidden", int, 64), ("layers", int, 2), ("heads", int, 4),
                                ("steps", int, 1000), ("lr", float, 2e-3), ("stride", int, 10),
                                ("max_offset", int, 200), ("mode", str, "history"), ("train_max", int, 3),
                                ("seed", int, 0), ("test", str, "3,5,8,12"), ("n_test", int, 100),
                                ("coupled", int, 1), ("batch", int, 64), ("spread", float, 0.0),
                                ("slot_max", int, 22), ("out", str, "runs/positions-trials"),
                                ("log", str, "runs/positions-trials/trials.jsonl")]:
        ap.add_argument(f"--{name}", type=kind, default=default)
    a = ap.parse_args()
    torch.set_num_threads(1)
    fmt = StepFormat()
    task = AdditionTask(carry_heavy=0.3, index_hints=False, pad_answer=True)
    problems = task.sample_range(a.seed, a.train_max, 20000)
    trajs = [task.expert(p) for p in problems]
    if a.coupled:
        rng, rows = random.Random(a.seed), []
        for t, p, o in zip(trajs, problems, random_offsets(len(trajs), a.max_offset, a.seed)):
            spread = rng.random() < a.spread
            slots = sorted(rng.sample(range(1, a.slot_max + 1), p.columns + 1)) if spread else None
            rows.append(add_positions(t, shifted(task.coupled_positions(a.stride, fmt, slots), o), fmt, a.mode))
        trajs = rows
    cfg = TinyModelConfig(arch=a.arch, hidden_size=a.hidden, num_layers=a.layers, num_heads=a.heads)
    model, tok = build_tiny_model(cfg, seed=a.seed)
    name = (f"{a.mode}-{a.arch}-h{a.hidden}-l{a.layers}-s{a.steps}-st{a.stride}-o{a.max_offset}-c{a.coupled}"
            f"-sp{a.spread}-tm{a.train_max}-seed{a.seed}-{int(time.time())}")
    pal = PALConfig(output_dir=os.path.join(a.out, name), mode=a.mode, learning_rate=a.lr, batch_size=a.batch,
                    max_steps=a.steps, warmup_steps=min(50, a.steps // 10), seed=a.seed, progress=False, save_steps=0)
    t0 = time.time()
    result = train(pal, model=model, tokenizer=tok, trajectories=trajs)
    out = {"name": name, "train_s": round(time.time() - t0),
           "final": {k: round(v, 4) for k, v in result.final_metrics.items() if isinstance(v, float)}}
    policy = LMPolicy(result.model, tok, task, fmt, mode=a.mode,
                      positions=task.coupled_positions(a.stride, fmt) if a.coupled else None)
    for d in map(int, a.test.split(",")):
        t1 = time.time()
        ev = evaluate(policy, task.sample(20_000 + a.seed, d, a.n_test))  # validation problems, never the test seed
        out[d] = {"em": ev["exact_match"], "valid": ev.get("trace_valid"), "s": round(time.time() - t1)}
        print(d, out[d], flush=True)
    with open(a.log, "a") as f:
        f.write(json.dumps({**vars(a), **{str(k): v for k, v in out.items()}}) + "\n")


if __name__ == "__main__":
    main()
