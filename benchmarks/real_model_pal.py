"""The paper's language rows with a pretrained model: PAL (step loss) vs answer-only fine-tuning of SmolLM2-135M
with LoRA on GSM8K-style word problems, clean and with irrelevant sentences (issue 19, item 5).

Kartik & Shah (2025), section 5.1: a model trained on the steps of arithmetic word problems vs one trained on
the answers alone, tested on held-out stories and on the same stories with irrelevant sentences added. Here the
model is SmolLM2-135M-Instruct (``make real-model``), trained through the ordinary PAL trainer with its ``lora``
option (r=8, alpha=16, q/k/v/o of the top 10 of 30 blocks); both arms share everything but ``mode``:
``history`` (x, the steps, the answer: PAL's step loss) or ``outcome`` (x -> answer). The task is
``procsup.tasks.word_problems`` (stories of 2..3 operations in training, with exact step checkers), tested on
3-operation stories, clean and with ``--test-noise`` irrelevant sentences inserted (the same stories otherwise).

Protocol: for each arm, the learning rate is chosen from ``--lrs`` on a validation set (greedy exact match on
``--val`` clean stories; ties go to the smaller rate) with seed 0; then seeds 1..``--seeds``-1 train at that
rate. Every run trains on its own seed's ``--train`` stories for ``--steps`` steps of ``--batch`` stories. Every
chosen run is evaluated (greedy) from its saved checkpoint (a merged LoRA checkpoint loaded by ``load_policy``
like any model) on the test stories. Trivial rows: the untrained model through the same prompts (both arms'
formats), and the training set's most frequent answer. Every run is cached (``procsup.bench.cache``): a crash
resumes at the next unfinished run.

    make real-model
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_pal.py run --arm pal       # one process per arm
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_pal.py run --arm outcome
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_pal.py run --arm untrained
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_pal.py report --out <new json name>
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: OpenMP reads it once

import argparse
import datetime as dt
import json
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from procsup.bench.cache import cached_run
from procsup.bench.report import quiet_transformers
from procsup.evaluation.metrics import evaluate
from procsup.models.factory import load_model
from procsup.models.lora import LoRAConfig
from procsup.rollout.policy import LMPolicy, load_policy
from procsup.tasks.word_problems import WordProblemTask
from procsup.trainers.pal import PALConfig, train

OUT = Path(__file__).parent / "results" / "real"
ARMS = {"pal": "history", "outcome": "outcome"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--arm", choices=[*ARMS, "untrained"], help="run: which arm")
    p.add_argument("--model", default=".cache/smollm2")
    p.add_argument("--work", default="runs/real-model-pal", help="cached runs and checkpoints")
    p.add_argument("--train", type=int, default=300, help="training stories per seed (2..--train-ops operations)")
    p.add_argument("--train-ops", type=int, default=3, help="most operations of a training story; the test's")
    p.add_argument("--max-value", type=int, default=100, help="every quantity of a story stays below this")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lrs", default="1e-3,3e-3", help="learning-rate grid, chosen on validation with seed 0")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--run-seeds", default=None, help="run: only these seeds at the chosen rate (comma-separated; "
                   "the grid must be finished): lets a second process take some of an arm's seeds")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-layers", default="20-29", help="blocks with adapters, first-last (SmolLM2 has 30; "
                   "the top 10 skip two thirds of the backward pass); empty: all")
    p.add_argument("--val", type=int, default=30, help="validation stories (clean), seed 0's runs only")
    p.add_argument("--test", type=int, default=50, help="test stories (each clean and with noise)")
    p.add_argument("--test-noise", type=int, default=2, help="irrelevant sentences per noisy test story")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="real_model_pal.json", help="report: a new file name under " + str(OUT))
    return p.parse_args(argv)


def settings(args) -> dict:
    """What every run of the benchmark shares (part of each cache key)."""
    return {k: getattr(args, k) for k in ("model", "train", "train_ops", "max_value", "steps", "batch", "lora_r",
                                          "lora_layers", "val", "test", "test_noise")}


def lora(args) -> LoRAConfig:
    first, _, last = args.lora_layers.partition("-")
    layers = tuple(range(int(first), int(last or first) + 1)) if first else ()
    return LoRAConfig(r=args.lora_r, alpha=2.0 * args.lora_r, layers=layers)


def problem_sets(args, seed: int) -> tuple[WordProblemTask, list, list, dict[str, list]]:
    """The task, seed's training stories, the validation stories and the test stories (clean and noisy: the same
    stories, noise inserted), held-out stories never equal to a training story of any seed."""
    task = WordProblemTask(max_value=args.max_value)
    train_sets = [task.sample_range(s, args.train_ops, args.train, min_size=2) for s in range(args.seeds)]
    seen = {p for ps in train_sets for p in ps}

    def held_out(s: int, n: int, noise: int) -> list:
        clean = task.sample(s, args.train_ops, 3 * n, noise=0)
        noisy = task.sample(s, args.train_ops, 3 * n, noise=noise)
        keep = [i for i, p in enumerate(clean) if p not in seen][:n]
        return [noisy[i] for i in keep]

    val = held_out(20_000, args.val, 0)
    tests = {"clean": held_out(10_000, args.test, 0), "noisy": held_out(10_000, args.test, args.test_noise)}
    return task, train_sets[seed], val, tests


def train_run(args, arm: str, lr: float, seed: int) -> dict:
    """Train one arm at one rate and seed (LoRA); seed 0 (the rate grid) is evaluated on the validation stories
    from its checkpoint."""
    key = {"arm": arm, "lr": lr, "seed": seed, **settings(args)}
    name = f"{arm}-lr{lr:g}-seed{seed}"

    def run(run_dir: Path) -> dict:
        task, problems, val, _ = problem_sets(args, seed)
        trajs = [task.expert(p) for p in problems]
        model, tok, _ = load_model(args.model)
        cfg = PALConfig(output_dir=str(run_dir / "train"), mode=ARMS[arm], learning_rate=lr, batch_size=args.batch,
                        max_steps=args.steps, warmup_steps=max(1, args.steps // 10), seed=seed, log_steps=10,
                        progress=False, save_total_limit=1, lora=lora(args), input_sep="\n", step_sep="\n")
        t0 = time.perf_counter()
        result = train(cfg, model=model, tokenizer=tok, trajectories=trajs)
        train_s = time.perf_counter() - t0
        trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
        del model, result
        t0 = time.perf_counter()
        scores = None
        if seed == 0:
            scores = evaluate(load_policy(run_dir / "train" / f"checkpoint-{args.steps}", task), val)
        return {"arm": arm, "lr": lr, "seed": seed, "val": scores, "val_seconds": time.perf_counter() - t0,
                "train_seconds": train_s, "trainable_parameters": trainable,
                "train_metrics": [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]}

    return cached_run(Path(args.work) / name, key, run)


def test_run(args, arm: str, lr: float, seed: int) -> dict:
    """The test stories (clean, noisy) through the saved checkpoint of a trained run."""
    key = {"arm": arm, "lr": lr, "seed": seed, "eval": "test", **settings(args)}
    ckpt = Path(args.work) / f"{arm}-lr{lr:g}-seed{seed}" / "train" / f"checkpoint-{args.steps}"

    def run(run_dir: Path) -> dict:
        task, _, _, tests = problem_sets(args, seed)
        policy = load_policy(ckpt, task)
        return {"arm": arm, "lr": lr, "seed": seed, "test": {c: evaluate(policy, ps) for c, ps in tests.items()}}

    return cached_run(Path(args.work) / f"test-{arm}-lr{lr:g}-seed{seed}", key, run)


def choose_lr(runs: list[dict]) -> float:
    """The rate with the best validation exact match; ties to the smaller rate."""
    return max(runs, key=lambda r: (r["val"]["exact_match"], -r["lr"]))["lr"]


def run_arm(args) -> None:
    lrs = [float(x) for x in args.lrs.split(",")]
    arm = args.arm
    seeds = range(args.seeds) if args.run_seeds is None else [int(s) for s in args.run_seeds.split(",")]
    if 0 not in seeds:  # another process runs the grid: never start (and clobber) one of its runs here
        missing = [lr for lr in lrs if not (Path(args.work) / f"{arm}-lr{lr:g}-seed0" / "eval.json").is_file()]
        if missing:
            raise SystemExit(f"{arm}: the grid is not finished (lr {missing}); run seed 0 first")
    grid = [train_run(args, arm, lr, 0) for lr in lrs]
    for r in grid:
        print(f"{arm} lr {r['lr']:g} seed 0: val exact {r['val']['exact_match']:.3f} "
              f"({r['train_seconds']:.0f}s train)", flush=True)
    lr = choose_lr(grid)
    print(f"{arm}: lr {lr:g} chosen on validation", flush=True)
    for seed in seeds:
        r = train_run(args, arm, lr, seed)
        t = test_run(args, arm, lr, seed)
        print(f"{arm} seed {seed} ({r['train_seconds']:.0f}s train): test {json.dumps(t['test'])}", flush=True)
    for other in lrs if 0 in seeds else ():  # the checkpoints of the rates not chosen are not needed again (538 MB each)
        if other != lr:
            shutil.rmtree(Path(args.work) / f"{arm}-lr{other:g}-seed0" / "train", ignore_errors=True)


def untrained_run(args) -> dict:
    """The base model through both arms' prompts, and the training set's most frequent answer."""
    key = {"arm": "untrained", **settings(args)}

    def run(run_dir: Path) -> dict:
        task, problems, val, tests = problem_sets(args, 0)
        model, tok, _ = load_model(args.model)
        fmt = PALConfig(output_dir="-", input_sep="\n", step_sep="\n").step_format
        out = {}
        for arm, mode in ARMS.items():
            policy = LMPolicy(model, tok, task, fmt, mode=mode)
            out[f"untrained-{arm}"] = {c: evaluate(policy, ps) for c, ps in tests.items()}
        majority = {}
        for s in range(args.seeds):
            answers = Counter(str(p.answer) for p in problem_sets(args, s)[1])
            top = answers.most_common(1)[0][0]
            majority[str(s)] = {"answer": top, **{c: {"exact_match": sum(str(p.answer) == top for p in ps) / len(ps),
                                                      "n": len(ps)} for c, ps in {"val": val, **tests}.items()}}
        out["majority"] = majority
        return out

    return cached_run(Path(args.work) / "untrained", key, run)


def sample_stat(values: list[float | None]) -> dict | None:
    """Mean and *sample* std (n - 1) over seeds, with the per-seed values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "per_seed": vals}


def report(args) -> None:
    work = Path(args.work)
    lrs = [float(x) for x in args.lrs.split(",")]
    out: dict = {"settings": settings(args), "lrs": lrs, "arms": {}}
    rows = [["row", "lr", "clean exact", "noisy exact", "noise gap", "clean trace valid", "noisy trace valid"]]

    def fmt(s: dict | None) -> str:
        if s is None:
            return "n/a"
        return f"{100 * s['mean']:.1f}" + ("" if s["std"] is None else f" ± {100 * s['std']:.1f}")

    for arm in ARMS:
        grid = [json.loads((work / f"{arm}-lr{lr:g}-seed0" / "eval.json").read_text()) for lr in lrs]
        lr = choose_lr(grid)
        tests = [json.loads((work / f"test-{arm}-lr{lr:g}-seed{s}" / "eval.json").read_text()) for s in range(args.seeds)]
        trains = [json.loads((work / f"{arm}-lr{lr:g}-seed{s}" / "eval.json").read_text()) for s in range(args.seeds)]
        summary = {c: {m: sample_stat([t["test"][c][m] for t in tests]) for m in ("exact_match", "trace_valid",
                                                                                 "right_answer_wrong_steps")}
                   for c in ("clean", "noisy")}
        summary["noise_gap"] = sample_stat([t["test"]["clean"]["exact_match"] - t["test"]["noisy"]["exact_match"]
                                            for t in tests])
        out["arms"][arm] = {
            "lr": lr, "lr_grid_val_exact": {f"{g['lr']:g}": g["val"]["exact_match"] for g in grid},
            "test": summary, "per_seed": [t["test"] for t in tests],
            "train_seconds": [r["train_seconds"] for r in trains],
            "trainable_parameters": trains[0]["trainable_parameters"],
            "final_train_loss": [r["train_metrics"][-1].get("loss") for r in trains if r["train_metrics"]],
        }
        rows.append([f"{arm} (LoRA)", f"{lr:g}", fmt(summary["clean"]["exact_match"]),
                     fmt(summary["noisy"]["exact_match"]), fmt(summary["noise_gap"]),
                     fmt(summary["clean"]["trace_valid"]), fmt(summary["noisy"]["trace_valid"])])
    base = json.loads((work / "untrained" / "eval.json").read_text())
    out["untrained"] = {k: v for k, v in base.items() if k.startswith("untrained-")}
    out["majority"] = base["majority"]
    for arm in ARMS:
        u = base[f"untrained-{arm}"]
        rows.append([f"untrained, {arm} prompt", "-", f"{100 * u['clean']['exact_match']:.1f}",
                     f"{100 * u['noisy']['exact_match']:.1f}", "-",
                     "n/a" if u["clean"]["trace_valid"] is None else f"{100 * u['clean']['trace_valid']:.1f}",
                     "n/a" if u["noisy"]["trace_valid"] is None else f"{100 * u['noisy']['trace_valid']:.1f}"])
    maj = base["majority"]
    rows.append(["majority answer of the training set", "-",
                 fmt(sample_stat([maj[s]["clean"]["exact_match"] for s in maj])),
                 fmt(sample_stat([maj[s]["noisy"]["exact_match"] for s in maj])), "-", "n/a", "n/a"])
    table = "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                      + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    out["table_md"] = table
    out["record"] = {"command": " ".join(shlex.quote(a) for a in sys.argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                     "threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                     "note": "percent; mean ± sample std over seeds (n - 1)"}
    path = OUT / args.out
    if path.exists():
        raise FileExistsError(f"{path} exists; results are never overwritten: give --out a new name")
    path.write_text(json.dumps(out, indent=1))
    print(table)
    print(f"wrote {path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_transformers(False)
    if args.command == "report":
        return report(args)
    if args.arm is None:
        raise SystemExit("run needs --arm pal, outcome or untrained")
    t0 = time.perf_counter()
    if args.arm == "untrained":
        untrained_run(args)
    else:
        run_arm(args)
    print(f"{args.arm}: wall {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
