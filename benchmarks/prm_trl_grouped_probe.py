"""Why TRL's length-grouped arm of ``prm_train_vs_trl.py`` "did not learn" (issue 17, item 5): per-step losses.

Trains TRL 1.13's ``PRMTrainer`` at the settings of ``prm_train_vs_trl.py`` (same data, the same initial
weights from ``--seed``, lr, schedule, batch, steps) once per trainer seed in ``--order-seeds``. With dropout
off, TRL's seed only sets the data order: transformers' ``LengthGroupedSampler`` permutation
(``--sampler group_by_length``) or the random sampler's (``--sampler random``);
``group_by_length_batches_shuffled`` keeps transformers' batches but shuffles their order within each
mega-batch of 50 batches (no jump from the shortest rows back to the longest at the boundaries; the first
mega-batch assumes 50 batches per mega-batch, as at >= 3,200 rows). Records every step's loss,
batch shape and learning rate, the largest loss after warm-up, the held-out step accuracy and AUROC (scored
by ``procsup.models.prm.score`` as in the benchmark) and the spread of the held-out scores (a collapsed model
gives every step nearly the same score). Not a timing run.

Needs TRL 1.13 (``pip install -e '.[trl-bench]'``, or on ``PYTHONPATH``).

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prm_trl_grouped_probe.py \\
        --sampler group_by_length --order-seeds 0,1,2 --out benchmarks/results/prm_trl_grouped_probe_grouped.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prm_train_vs_trl as bench  # noqa: E402  (the benchmark's data, model and TRL set-up: one room)


def run_one(init, tok_trl, tok, ds, held_out, args, order_seed: int, out_dir: str) -> dict:
    targs = argparse.Namespace(**{**vars(args), "seed": order_seed})
    targs.trl_group_by_length = args.sampler != "random"
    trainer = bench.trl_trainer(init, tok_trl, ds, targs, out_dir)  # deep-copies init: same weights every run
    if args.sampler == "group_by_length_batches_shuffled":
        grouped = trainer._get_train_sampler

        class Shuffled:  # transformers' batches, in a random order within each mega-batch of 50
            def __init__(self, sampler):
                self.sampler = sampler

            def __len__(self):
                return len(self.sampler)

            def __iter__(self):  # drawn when the loop iterates, as the plain sampler is: the same batches
                order = list(self.sampler)
                batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
                rng = random.Random(order_seed)
                for m in range(0, len(batches), 50):
                    part = batches[m:m + 50]
                    rng.shuffle(part)
                    batches[m:m + 50] = part
                return iter([i for b in batches for i in b])

        trainer._get_train_sampler = lambda *a, **kw: Shuffled(grouped(*a, **kw))
    steps: list[dict] = []
    compute_loss = trainer.compute_loss

    def logged(model, inputs, return_outputs=False, **kw):
        out = compute_loss(model, inputs, return_outputs=return_outputs, **kw)
        lab = inputs["labels"]
        steps.append({"loss": float((out[0] if return_outputs else out).detach()),
                      "lr": trainer.lr_scheduler.get_last_lr()[0], "shape": list(inputs["input_ids"].shape),
                      "labelled": int((lab != -100).sum()), "correct_share": float((lab == 1).sum() / (lab != -100).sum()),
                      "padding": float(1 - inputs["attention_mask"].float().mean())})
        return out

    trainer.compute_loss = logged
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    probs = [p for ps in bench.score(trainer.model, tok, held_out, bench.FMT) for p in ps]
    metrics = bench.held_out_metrics(trainer.model, tok, held_out)
    losses = [s["loss"] for s in steps]
    after = losses[args.warmup:]
    peak = max(range(len(after)), key=after.__getitem__) + args.warmup
    windows = [statistics.mean(losses[i:i + 20]) for i in range(0, len(losses), 20)]
    return {"order_seed": order_seed, **metrics, "held_out_score_std": statistics.pstdev(probs),
            "held_out_score_mean": statistics.mean(probs), "max_loss_after_warmup": losses[peak],
            "max_loss_step": peak, "loss_per_20_steps": windows, "last_20_mean_loss": windows[-1],
            "seconds_not_a_timing": seconds, "steps": steps}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sampler", choices=["group_by_length", "group_by_length_batches_shuffled", "random"], required=True)
    p.add_argument("--order-seeds", default="0,1,2", help="TRL trainer seeds (with dropout off: the data order)")
    p.add_argument("--threads", type=int, default=1)
    bench.add_run_args(p)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if Path(args.out).exists():
        raise FileExistsError(f"{args.out} exists: results files are never overwritten")
    import datasets
    import transformers
    import trl  # noqa: F401  (fail here, before any work)

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    tok = bench.char_tokenizer()
    tok_trl = copy.deepcopy(tok)
    tok_trl.bos_token = None
    train, held_out = bench.make_data(args.train_size, args.eval_size, args.max_digits, args.corrupt, args.seed)
    ds = bench.stepwise_dataset(train)
    init = bench.initial_model(args, tok)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (int(s) for s in args.order_seeds.split(",")):
            run = run_one(init, tok_trl, tok, ds, held_out, args, k, f"{tmp}/{k}")
            runs.append(run)
            print(f"{args.sampler} order seed {k}: held-out step accuracy {run['step_accuracy']:.4f}, AUROC "
                  f"{run['step_auroc']:.4f}, score std {run['held_out_score_std']:.4f}, largest loss after warm-up "
                  f"{run['max_loss_after_warmup']:.3f} at step {run['max_loss_step']}, loss per 20 steps "
                  f"{[round(x, 3) for x in run['loss_per_20_steps']]}", flush=True)
    labels = [bool(lab) for t in held_out for lab in t.labels]
    result = {
        **bench.provenance(args, argv),
        "wall_s": time.perf_counter() - started,
        "setup": vars(args),
        "held_out_correct_share": sum(labels) / len(labels),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
