"""A PRM from SmolLM2-135M on real data, evaluated on ProcessBench with ``procsup score`` + ``procsup evaluate-prm``.

CPU budget (~200-300 forward tokens/s for the whole model, benchmarks/results/real/real_model_speed.md) rules out
fine-tuning on thousands of solutions, so this PRM is the frozen backbone read at each step's boundary token
with a trained head: the cheapest of the frozen-lower-layers family (procsup.models.lora.freeze_lower_layers
with no block trained). The backbone's hidden states at the boundaries are computed once (cached), the
head is a logistic regression on them (class-balanced, L2), and the depth read is chosen on a held-out part of
the training data: the PRM is SmolLM2's first K blocks + its final norm + the head, saved as an ordinary PRM
folder (procsup.json kind prm), so the evaluation is the CLI's, with its threshold chosen on a separate half and
its random-score rows.

Training data: PRMBench's training files (modified solutions, step i wrong iff listed in error_steps, with
their all-correct originals), the Math-Shepherd and PRM800K samples (23 solutions); solutions over
``--max-chars`` characters skipped, ``--train`` of them drawn with ``--seed``.

    make real-model
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_prm.py      # ~20 min on 2 shared cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: OpenMP reads it once

import argparse
import datetime as dt
import glob
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForTokenClassification

from procsup.data.batch import collate
from procsup.data.converters import read_math_shepherd, read_prm800k, read_prmbench, read_processbench
from procsup.data.tokenize import StepFormat, step_boundaries, tokenize_many
from procsup.evaluation.prm_metrics import step_auroc
from procsup.models.factory import load_model
from procsup.models.prm import HARD_LABELS
from procsup.models.saved import SavedFormat, write_format

DATA = Path("/work/shared/data")
OUT = Path(__file__).parent / "results" / "real"
FMT = StepFormat(input_sep="\n", step_sep="\n\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=".cache/smollm2")
    p.add_argument("--source", default="prmbench", choices=["prmbench", "processbench-math"],
                   help="prmbench: PRMBench training files + the Math-Shepherd/PRM800K samples; processbench-math: "
                   "ProcessBench's MATH subset (other problems than gsm8k; steps after the first error unlabelled)")
    p.add_argument("--train", type=int, default=600, help="training solutions drawn")
    p.add_argument("--max-chars", type=int, default=1000)
    p.add_argument("--layers", default="8,12,16,20", help="depths whose boundary states are tried")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", default="gsm8k", help="ProcessBench subset evaluated")
    p.add_argument("--work", type=Path, default=Path("runs/real-model-prm"))
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def training_data(args, rejects: Path):
    rng = random.Random(args.seed)
    if args.source == "processbench-math":
        pool = read_processbench(DATA / "processbench" / "math.json", rejects=rejects)
        pool = [t for t in pool if len(t.input) + sum(len(s.action) + 2 for s in t.steps) <= args.max_chars]
        return rng.sample(pool, min(args.train, len(pool)))
    prmbench = []
    for f in sorted(glob.glob(str(DATA / "prmbench" / "prm800k_train_p1_first400_*.jsonl"))):
        prmbench += read_prmbench(f, rejects=rejects, include_original=True)
    samples = read_math_shepherd(DATA / "openr_prm_samples" / "samples_math-shepherd.jsonl", rejects=rejects)
    samples += read_prm800k(DATA / "prm800k_samples" / "prm800k_samples_unique.jsonl", rejects=rejects)
    short = [t for t in prmbench if len(t.input) + sum(len(s.action) + 2 for s in t.steps) <= args.max_chars]
    short = [t for t in short if any(lab is not None for lab in t.labels)]
    return rng.sample(short, min(args.train, len(short))) + samples


@torch.no_grad()
def boundary_states(model, tok, trajs, depths: list[int], batch: int) -> tuple[dict[int, torch.Tensor], list]:
    """For each depth k, norm(h_k) at every labelled step boundary: (n_steps, d); the steps' labels and solutions."""
    rows = tokenize_many(trajs, tok, FMT, "steps")
    feats = {k: [] for k in depths}
    labels, solution = [], []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))  # little padding
    t0 = time.perf_counter()
    for n, start in enumerate(range(0, len(order), batch)):
        idx = order[start : start + batch]
        b = collate([rows[i] for i in idx], tok.pad_token_id)
        out = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        for j, i in enumerate(idx):
            bounds = step_boundaries(rows[i])
            keep = [(p, lab) for p, lab in zip(bounds, trajs[i].labels) if lab is not None]
            if not keep:
                continue
            pos = torch.tensor([p for p, _ in keep])
            for k in depths:
                # hidden_states[k]: after k blocks; the last one is already normed by the model
                h = out.hidden_states[k][j, pos]
                feats[k].append(h if k == model.config.num_hidden_layers else model.model.norm(h))
            labels += [float(lab) for _, lab in keep]
            solution += [i] * len(keep)
        if n % 10 == 0:
            print(f"  {start + len(idx)}/{len(rows)} rows, {time.perf_counter() - t0:.0f}s", flush=True)
    return {k: torch.cat(v) for k, v in feats.items()}, labels, solution


def fit_head(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 300) -> tuple[torch.Tensor, float]:
    """Class-balanced logistic regression on standardized features; (w, b) in the raw feature space."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    pos = y.mean().clamp(1e-3, 1 - 1e-3)
    weight = torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, weight=weight)
                + l2 * w.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / std).detach()
    return w_raw, float(b.detach() - (w_raw * mean).sum())


def save_prm(base_dir: str, tok, depth: int, w: torch.Tensor, b: float, out: Path) -> Path:
    """SmolLM2's first ``depth`` blocks + final norm + a 2-class head whose "right" logit is w.h + b."""
    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    config.num_hidden_layers = depth
    config.num_labels = 2
    config.id2label = dict(HARD_LABELS)
    config.label2id = {v: k for k, v in HARD_LABELS.items()}
    config.classifier_dropout = 0.0
    prm = AutoModelForTokenClassification.from_pretrained(base_dir, config=config, local_files_only=True)
    with torch.no_grad():
        prm.score.weight.zero_()
        prm.score.bias.zero_()
        right = config.label2id["right"]
        prm.score.weight[right] = w
        prm.score.bias[right] = b
    prm.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    sources = ("prmbench", "math-shepherd", "prm800k")
    write_format(out, SavedFormat("prm", FMT, "steps", base_model=base_dir, label_source=sources))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    env = f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    command = f"{env} {shlex.quote(sys.executable)} {' '.join(shlex.quote(a) for a in sys.argv)}"
    args.work.mkdir(parents=True, exist_ok=True)
    depths = [int(k) for k in args.layers.split(",")]
    trajs = training_data(args, args.work / "rejects.jsonl")
    model, tok, _ = load_model(args.model)
    model.model.layers = model.model.layers[: max(depths)]  # blocks past the deepest read are never run
    model.config.num_hidden_layers = max(depths)
    model.eval()
    print(f"{len(trajs)} training solutions; boundary states at depths {depths}", flush=True)
    feats, labels, solution = boundary_states(model, tok, trajs, depths, args.batch)
    extract_s = time.perf_counter() - t0
    y = torch.tensor(labels)
    # a held-out fifth of the solutions (not of the steps: a PRMBench solution and its original share steps)
    held = set(random.Random(args.seed + 1).sample(range(len(trajs)), len(trajs) // 5))
    val = torch.tensor([j for j, i in enumerate(solution) if i in held])
    fit = torch.tensor([j for j, i in enumerate(solution) if i not in held])
    choice = {}
    for k in depths:
        w, b = fit_head(feats[k][fit], y[fit])
        s = (feats[k][val] @ w + b).tolist()
        choice[k] = step_auroc(s, [bool(v) for v in y[val].tolist()])
        print(f"depth {k}: held-out step AUROC {choice[k]:.3f}", flush=True)
    best = max(choice, key=choice.get)
    w, b = fit_head(feats[best], y)
    prm_dir = save_prm(args.model, tok, best, w, b, args.work / "prm")
    fit_s = time.perf_counter() - t0 - extract_s

    scored, report = args.work / f"scored-{args.subset}.jsonl", args.work / f"report-{args.subset}.json"
    bench = DATA / "processbench" / f"{args.subset}.json"
    procsup = str(Path(sys.executable).parent / "procsup")
    cmds = [[procsup, "score", str(prm_dir), str(bench), str(scored), "--from", "processbench", "--batch-size", "8"],
            [procsup, "evaluate-prm", str(scored), "--json", str(report)]]
    logs = []
    for cmd in cmds:
        t = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        logs.append({"command": " ".join(shlex.quote(c) for c in cmd), "seconds": time.perf_counter() - t,
                     "stdout": done.stdout})
        print(done.stdout, flush=True)
    evaluation = json.loads(report.read_text())
    result = {
        "command": command, "date": started.isoformat(timespec="seconds"), "wall_seconds": time.perf_counter() - t0,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": args.threads,
        "load_average_at_end": os.getloadavg(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_solutions": len(trajs), "train_steps_labelled": len(labels), "train_right_share": float(y.mean()),
        "held_out_step_auroc_by_depth": choice, "depth": best,
        "seconds": {"boundary_states": extract_s, "head_fit": fit_s, "score_and_evaluate": [g["seconds"] for g in logs]},
        "cli": logs, "processbench": evaluation,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"real_model_prm_{args.source}_{args.subset}.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
