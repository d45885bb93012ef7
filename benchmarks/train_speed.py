"""Training speed of PAL on the addition benchmark's model: tokens/s, and model FLOPs utilization (MFU)
against a float32 matrix-multiply rate measured in the same run on the same machine.

It also shows where the time of a ``train()`` call goes (cProfile, and torch.profiler by op), compares
the trainer's loop with a hand-written lower bound, and measures the overheads that were removed from
the trainer, before and after side by side in the same run:

* tokenization (once per run): one tokenizer call per piece of every trajectory, now one batched call
  over the distinct pieces (``tokenize_many``);
* the data work of every step: a fresh permutation of all rows (``global_batch``) and one
  ``torch.tensor`` per row (``collate``), now a cached permutation per epoch and one tensor per field.

The old paths are kept here only (``tokenize_per_piece``, ``global_batch_redrawn``, ``collate_per_row``),
to measure against and to check that they give the very same rows and batches.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/train_speed.py    # ~3-4 min on 2 shared cores

The machine is shared with other jobs, so absolute times are noisy: compare ratios measured in the same
run (each repeat runs both sides, in alternating order), and read medians over repeats.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP reads it once. Spin-waiting threads made training ~35x slower on a
# shared 2-core machine (see the Makefile); the value in effect is recorded in the output.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import cProfile
import datetime as dt
import json
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from torch.profiler import ProfilerActivity, profile

from procsup.data.batch import collate
from procsup.data.tokenize import ANSWER, MODES, PROMPT, STEP0, Row, StepFormat
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.objectives.pal import pal_loss, token_nll
from procsup.tasks.addition import AdditionTask
from procsup.trainers.loop import global_batch
from procsup.trainers.pal import PALConfig, build_rows, train

FLOPS_FORMULA = "6 * N_params(non-embedding) + 12 * n_layer * d_model * seq_len  (PaLM/Chinchilla; seq_len = mean row length)"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads, for the matmul peak and for training")
    p.add_argument("--repeats", type=int, default=5, help="repeats of every timed measurement (medians are reported)")
    p.add_argument("--steps", type=int, default=15, help="optimizer steps per timed training run")
    p.add_argument("--arch", default="llama", help="model family (the addition benchmark's: llama)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (the addition benchmark's: 128)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers (the addition benchmark's: 2)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (the addition benchmark's: 4)")
    p.add_argument("--batch", type=int, default=64, help="rows per optimizer step (the addition benchmark's: 64)")
    p.add_argument("--mode", default="history", choices=MODES, help="PAL mode of the training rows")
    p.add_argument("--train-size", type=int, default=2000, help="trajectories in the timed training runs")
    p.add_argument("--setup-size", type=int, default=5000, help="trajectories in the tokenization before/after")
    p.add_argument("--bench-size", type=int, default=20000, help="the addition benchmark's training set, for the projection")
    p.add_argument("--bench-steps", type=int, default=1000, help="the addition benchmark's optimizer steps, for the projection")
    p.add_argument("--out", default="benchmarks/results/train_speed.json", help="JSON output path")
    args = p.parse_args(argv)
    if min(args.threads, args.repeats, args.steps, args.batch, args.train_size, args.setup_size) < 1:
        p.error("counts must be >= 1")
    return args


# --- the machine's float32 matmul rate -----------------------------------------------------------------


def mm_gflops(m: int, k: int, n: int, repeats: int, min_seconds: float) -> list[float]:
    """GFLOP/s of torch.mm on float32 (m, k) x (k, n) matrices: ``repeats`` timings of >= min_seconds each
    (also used by real_model_speed.py)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):  # warm-up (and MKL's buffers)
        torch.mm(a, b)
    t = time.perf_counter()
    torch.mm(a, b)
    reps = max(1, int(min_seconds / max(time.perf_counter() - t, 1e-6)))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        rates.append(2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return rates


def matmul_rates(sizes=(512, 1024, 2048), repeats: int = 5, min_seconds: float = 0.2) -> dict[int, list[float]]:
    """GFLOP/s of torch.mm on n x n float32 matrices: per size, ``repeats`` timings of >= min_seconds each."""
    return {n: mm_gflops(n, n, n, repeats, min_seconds) for n in sizes}


# --- data, model, FLOPs --------------------------------------------------------------------------------


def make_trajectories(mode: str, count: int, seed: int = 0):
    """Addition problems with 1-3 digit operands, as the addition benchmark draws them (carry_heavy 0.3)."""
    task = AdditionTask(carry_heavy=0.3)
    problems = task.sample_range(seed, 3, count)
    return [task.state_trajectory(p) if mode == "state" else task.expert(p) for p in problems]


def model_flops_per_token(model, mean_seq_len: float) -> tuple[float, int]:
    """(FLOPs per trained token, non-embedding parameter count), by FLOPS_FORMULA. Tied input/output
    embeddings are one tensor, counted once and excluded (so is the LM head's matmul: 2-3% here)."""
    cfg = model.config
    emb = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    n_params = sum(p.numel() for p in model.parameters() if id(p) not in emb)
    # learned absolute positions (gpt2) are embeddings too
    n_params -= sum(p.numel() for n, p in model.named_parameters() if n.endswith(("wpe.weight", "embed_positions.weight")))
    return 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * mean_seq_len, n_params


def pal_config(args, output_dir: str) -> PALConfig:
    return PALConfig(
        output_dir=output_dir, mode=args.mode, batch_size=args.batch, max_steps=args.steps, learning_rate=2e-3,
        warmup_steps=min(50, args.steps // 10), progress=False,
    )


def run_trainer(args, model0, tok, trajs) -> dict:
    """One procsup ``train()`` run; its own clock covers the optimizer steps (not tokenization)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = train(pal_config(args, tmp), model=copy.deepcopy(model0), tokenizer=tok, trajectories=trajs)
    return {"seconds": res.seconds, "tokens": res.tokens, "rows": args.steps * args.batch}


def run_hand_loop(args, model0, batches) -> dict:
    """The lower bound: the same forward, loss, backward, clipping and AdamW step on batches collated in
    advance; no accelerate, scheduler, logging or data work in the loop."""
    model = copy.deepcopy(model0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    t = time.perf_counter()
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # (B, T, V)
        terms = pal_loss(token_nll(logits, b["input_ids"]), b["segment_ids"][:, 1:], 1.0)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "tokens": sum(int(b["attention_mask"].sum()) for b in batches), "rows": args.steps * args.batch}


# --- the overhead that was removed: one tokenizer call per piece ------------------------------------------


def tokenize_per_piece(trajs, tokenizer, fmt: StepFormat, mode: str) -> list[Row]:
    """The trainer's tokenization before the fix (``tokenize()`` of procsup 4597274, one trajectory and
    one tokenizer call per piece at a time). Kept only to measure the fix against and check equality."""

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    rows, eos = [], [tokenizer.eos_token_id]
    for traj in trajs:
        if mode == "state":
            for t, step in enumerate(traj.steps):
                ids = encode(step.state) + encode(fmt.input_sep)
                segs = [PROMPT] * len(ids)
                act = encode(step.action)
                rows.append(Row(tuple(ids + act + eos), tuple(segs + [STEP0 + t] * (len(act) + 1))))
            continue
        ids = encode(traj.input) + encode(fmt.input_sep)
        segs = [PROMPT] * len(ids)
        if mode == "history":
            for t, step in enumerate(traj.steps):
                for text in (step.action, fmt.step_sep):
                    toks = encode(text)
                    ids, segs = ids + toks, segs + [STEP0 + t] * len(toks)
        toks = encode(fmt.answer_prefix + traj.target)
        rows.append(Row(tuple(ids + toks + eos), tuple(segs + [ANSWER] * (len(toks) + 1))))
    return rows


def global_batch_redrawn(num_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """``global_batch`` before the fix: a new permutation of every row at every step."""
    start, out = step * batch_size, []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_rows)
        perm = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        out.extend(perm[offset : offset + batch_size - len(out)])
    return out


def collate_per_row(rows, pad_id: int) -> dict[str, torch.Tensor]:
    """``collate`` before the fix: one ``torch.tensor`` per row and field."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segs = torch.full((len(rows), width), PROMPT, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], segs[i, :n], mask[i, :n] = torch.tensor(r.input_ids), torch.tensor(r.segment_ids), 1
    return {"input_ids": ids, "attention_mask": mask, "segment_ids": segs}


def data_seconds(rows, batch_size: int, pad_id: int, steps: int, batcher, collator) -> float:
    """Seconds per step of a training step's data work: pick the global batch, collate it."""
    t = time.perf_counter()
    for s in range(steps):
        collator([rows[i] for i in batcher(len(rows), batch_size, s, 0)], pad_id)
    return (time.perf_counter() - t) / steps


# --- profiles ----------------------------------------------------------------------------------------------

# (label, path suffix, function): the outermost call of each is what cProfile's cumulative time counts
PHASES = [
    ("tokenize (build_rows, once)", "procsup/trainers/pal.py", "build_rows"),
    ("data: global_batch", "procsup/trainers/loop.py", "global_batch"),
    ("data: collate", "procsup/trainers/pal.py", "collate"),
    ("model forward", "torch/nn/modules/module.py", "_wrapped_call_impl"),
    ("loss (token_nll + pal_loss)", "procsup/objectives/pal.py", "token_nll"),
    ("loss (token_nll + pal_loss)", "procsup/objectives/pal.py", "pal_loss"),
    ("backward", "accelerate/accelerator.py", "backward"),
    ("clip_grad_norm_", "accelerate/accelerator.py", "clip_grad_norm_"),
    ("optimizer step + zero_grad", "accelerate/optimizer.py", "step"),
    ("optimizer step + zero_grad", "accelerate/optimizer.py", "zero_grad"),
    ("lr scheduler", "torch/optim/lr_scheduler.py", "step"),
    ("final checkpoint", "procsup/trainers/loop.py", "save_checkpoint"),
]


def profile_train(args, model0, tok, trajs) -> list[dict]:
    """cProfile of one whole ``train()`` call, cut into the phases above (the rest is 'other')."""
    with tempfile.TemporaryDirectory() as tmp:
        prof = cProfile.Profile()
        prof.enable()
        train(pal_config(args, tmp), model=copy.deepcopy(model0), tokenizer=tok, trajectories=trajs)
        prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    def cum(suffix: str, name: str) -> float:
        return max((v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == name), default=0.0)

    total = cum("procsup/trainers/pal.py", "train")
    phases: dict[str, float] = {}
    for label, suffix, name in PHASES:
        phases[label] = phases.get(label, 0.0) + cum(suffix, name)
    phases["other (accelerate set-up, metrics, Python)"] = total - sum(phases.values())
    return [{"phase": k, "seconds": v, "share": v / total} for k, v in phases.items()] + [
        {"phase": "train() total", "seconds": total, "share": 1.0}
    ]


def profile_ops(args, model0, batches) -> list[dict]:
    """torch.profiler over the hand loop: self time by op class, and the matmuls' own GFLOP/s."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        run_hand_loop(args, model0, batches)
    groups: dict[str, list[float]] = {}
    for e in prof.key_averages():
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            g = "matmul (mm/addmm/bmm)"
        elif "scaled_dot_product" in e.key:
            g = "attention (SDPA kernels)"
        else:
            g = "everything else (elementwise, norms, rotary, softmax, AdamW, copies)"
        acc = groups.setdefault(g, [0.0, 0.0])
        acc[0] += e.self_cpu_time_total / 1e6
        acc[1] += e.flops or 0
    total = sum(v[0] for v in groups.values())
    return [
        {"ops": g, "seconds": s, "share": s / total, "gflop_per_s": f / s / 1e9 if f else None}
        for g, (s, f) in sorted(groups.items(), key=lambda kv: -kv[1][0])
    ]


# --- reporting -------------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "torch_threads": threads,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "load_average_at_start": os.getloadavg(),
    }


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def med(xs) -> float:
    return statistics.median(xs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    info = machine_info(args.threads)
    env = f"OMP_WAIT_POLICY={info['OMP_WAIT_POLICY']}"
    command = f"{env} {shlex.quote(sys.executable)} {' '.join(shlex.quote(a) for a in sys.argv)}"
    print(f"# train_speed  {started:%Y-%m-%d %H:%M} UTC  ({env}, {args.threads} torch threads)", flush=True)

    # 1. matmul peak, before and after the training runs (the load of a shared machine drifts)
    mm_before = matmul_rates(repeats=args.repeats)

    # 2. throughput: procsup's train() and the hand-written lower bound, alternating
    model0, tok = build_tiny_model(TinyModelConfig(args.arch, args.hidden, args.layers, args.heads), seed=0)
    trajs = make_trajectories(args.mode, args.train_size)
    rows = build_rows(trajs, tok, pal_config(args, "unused"))
    batches = [collate([rows[i] for i in global_batch(len(rows), args.batch, s, 0)], tok.pad_token_id) for s in range(args.steps)]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    mean_len = statistics.fmean(len(r.input_ids) for r in rows)
    fpt, n_params = model_flops_per_token(model0, mean_len)
    warm = copy.copy(args)
    warm.steps = 2
    run_trainer(warm, model0, tok, trajs[:200])  # first-call costs (lazy init, kernels) out of the timings
    run_hand_loop(warm, model0, batches[:2])
    trainer_runs, hand_runs = [], []
    for r in range(args.repeats):
        for side in (("trainer", "hand") if r % 2 == 0 else ("hand", "trainer")):
            if side == "trainer":
                trainer_runs.append(run_trainer(args, model0, tok, trajs))
            else:
                hand_runs.append(run_hand_loop(args, model0, batches))
        print(f"  throughput repeat {r + 1}/{args.repeats}: train() {trainer_runs[-1]['seconds']:.1f} s, "
              f"hand loop {hand_runs[-1]['seconds']:.1f} s", flush=True)

    # 3. the removed overhead: per-piece tokenizer calls vs one batched call, alternating
    setup_trajs = make_trajectories(args.mode, args.setup_size, seed=1)
    cfg = pal_config(args, "unused")
    assert tokenize_per_piece(setup_trajs, tok, cfg.step_format, args.mode) == build_rows(setup_trajs, tok, cfg), \
        "the batched tokenization must give the very same rows"
    before, after = [], []
    for r in range(args.repeats):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            if side == 0:
                tokenize_per_piece(setup_trajs, tok, cfg.step_format, args.mode)
                before.append(time.perf_counter() - t)
            else:
                build_rows(setup_trajs, tok, cfg)
                after.append(time.perf_counter() - t)
        print(f"  tokenization repeat {r + 1}/{args.repeats}: before {before[-1]:.2f} s, after {after[-1]:.2f} s", flush=True)

    # 4. the per-step data work, on as many rows as the addition benchmark has (a permutation's cost grows with it)
    bench_rows = [rows[i % len(rows)] for i in range(round(len(rows) * args.bench_size / args.train_size))]
    for s in range(3):
        old = collate_per_row([bench_rows[i] for i in global_batch_redrawn(len(bench_rows), args.batch, s, 0)], tok.pad_token_id)
        new = collate([bench_rows[i] for i in global_batch(len(bench_rows), args.batch, s, 0)], tok.pad_token_id)
        assert all(torch.equal(old[k], new[k]) and old[k].dtype == new[k].dtype for k in old), "the very same batches"
    data_before, data_after = [], []
    for r in range(args.repeats):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            if side == 0:
                data_before.append(
                    data_seconds(bench_rows, args.batch, tok.pad_token_id, 20, global_batch_redrawn, collate_per_row))
            else:
                data_after.append(data_seconds(bench_rows, args.batch, tok.pad_token_id, 20, global_batch, collate))

    # 5. where the time goes
    phases = profile_train(args, model0, tok, trajs)
    ops = profile_ops(args, model0, batches[: min(4, args.steps)])
    mm_after = matmul_rates(repeats=args.repeats)

    # --- numbers
    mm = {n: mm_before[n] + mm_after[n] for n in mm_before}
    peak = max(med(v) for v in mm.values())
    def summary(runs):
        tps = [r["tokens"] / r["seconds"] for r in runs]
        sps = [r["rows"] / r["seconds"] for r in runs]
        return {"tokens_per_s": med(tps), "samples_per_s": med(sps), "s_per_step": med(r["seconds"] for r in runs) / args.steps,
                "gflop_per_s": med(tps) * fpt / 1e9, "mfu": med(tps) * fpt / 1e9 / peak, "tokens_per_s_runs": tps}
    trainer_s, hand_s = summary(trainer_runs), summary(hand_runs)
    loop_ratio = med(h["seconds"] / t["seconds"] for h, t in zip(hand_runs, trainer_runs))
    tok_ratio = med(b / a for b, a in zip(before, after))
    per_1k_before, per_1k_after = med(before) / args.setup_size * 1e3, med(after) / args.setup_size * 1e3
    loop_s = args.bench_steps * trainer_s["s_per_step"]
    proj = {
        "trajectories": args.bench_size, "steps": args.bench_steps, "loop_seconds": loop_s,
        "tokenize_seconds_before": per_1k_before * args.bench_size / 1e3,
        "tokenize_seconds_after": per_1k_after * args.bench_size / 1e3,
    }
    proj["share_before"] = proj["tokenize_seconds_before"] / (proj["tokenize_seconds_before"] + loop_s)
    proj["share_after"] = proj["tokenize_seconds_after"] / (proj["tokenize_seconds_after"] + loop_s)
    info["load_average_at_end"] = os.getloadavg()

    # --- report
    model_desc = f"{args.arch} d={args.hidden} L={args.layers} H={args.heads}, {n_params:,} non-embedding parameters"
    out = [
        f"Command: `{command}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; OMP_WAIT_POLICY={info['OMP_WAIT_POLICY']}; torch threads {args.threads}  ",
        f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, shared (load average "
        f"{info['load_average_at_start'][0]:.1f} at start, {info['load_average_at_end'][0]:.1f} at end); "
        f"torch {info['torch']}, transformers {info['transformers']}  ",
        f"Model: {model_desc}. Data: {args.mode}-mode addition rows (1-3 digit operands), batch {args.batch}, "
        f"mean row length {mean_len:.1f} tokens, {100 * (1 - real / padded):.1f}% of batch positions are padding.  ",
        f"Model FLOPs per token = {FLOPS_FORMULA} = {fpt / 1e6:.3f} MFLOP.  ",
        f"Medians of {args.repeats} repeats of {args.steps} optimizer steps (each repeat runs both rows, alternating order).",
        "",
        md_table(["float32 torch.mm, n x n", *[str(n) for n in mm]],
                 [["GFLOP/s (median)", *[f"{med(v):.1f}" for v in mm.values()]]]),
        f"\nMatmul peak (the best median): **{peak:.1f} GFLOP/s**.\n",
        md_table(
            ["loop", "tokens/s (non-pad)", "samples/s", "s/step", "model GFLOP/s", "MFU"],
            [[name, f"{s['tokens_per_s']:,.0f}", f"{s['samples_per_s']:.1f}", f"{s['s_per_step']:.3f}", f"{s['gflop_per_s']:.1f}",
              f"{100 * s['mfu']:.1f}%"]
             for name, s in (("procsup train()", trainer_s),
                             ("hand-written loop, batches collated in advance (lower bound)", hand_s))],
        ),
        f"\ntrain() reaches {100 * loop_ratio:.0f}% of the hand-written loop's speed (median of per-repeat ratios).\n",
        "Where one train() call's time goes (cProfile; it inflates Python-heavy parts such as tokenization):\n",
        md_table(["phase", "seconds", "ms per step", "share"],
                 [[p["phase"], f"{p['seconds']:.2f}",
                   "-" if "once" in p["phase"] or "total" in p["phase"] or "checkpoint" in p["phase"]
                   else f"{p['seconds'] / args.steps * 1e3:.1f}", f"{100 * p['share']:.1f}%"] for p in phases]),
        "",
        f"Op time in the hand loop ({min(4, args.steps)} steps, torch.profiler self time):\n",
        md_table(["ops", "share", "GFLOP/s of these ops"],
                 [[o["ops"], f"{100 * o['share']:.1f}%", f"{o['gflop_per_s']:.1f}" if o["ops"].startswith("matmul") else "-"]
                  for o in ops]),
        "\nOverhead removed (1): tokenizing each piece with its own tokenizer call "
        f"({args.setup_size:,} {args.mode} trajectories, same rows checked equal):\n",
        md_table(["tokenization", "seconds (median)", "s per 1k trajectories"],
                 [["before: one tokenizer call per piece", f"{med(before):.2f}", f"{per_1k_before:.2f}"],
                  ["after: tokenize_many, one call over distinct pieces", f"{med(after):.2f}", f"{per_1k_after:.2f}"]]),
        f"\nSpeed-up {tok_ratio:.1f}x (median of per-repeat ratios). Projected on the addition benchmark "
        f"({args.bench_size:,} trajectories, {args.bench_steps} steps at this run's "
        f"{trainer_s['s_per_step']:.3f} s/step = {loop_s:.0f} s): "
        f"tokenization (scaled linearly) {proj['tokenize_seconds_before']:.1f} s -> {proj['tokenize_seconds_after']:.1f} s, "
        f"{100 * proj['share_before']:.1f}% -> {100 * proj['share_after']:.1f}% of the train() call.",
        f"\nOverhead removed (2): the data work of every step, at the addition benchmark's {len(bench_rows):,} rows "
        f"(median of {args.repeats} x 20 steps, same batches checked equal):\n",
        md_table(["global_batch + collate", "ms per step", "share of this run's train() step"],
                 [["before: permutation drawn every step, a tensor per row", f"{1e3 * med(data_before):.2f}",
                   f"{100 * med(data_before) / trainer_s['s_per_step']:.1f}%"],
                  ["after: permutation cached per epoch, a tensor per field", f"{1e3 * med(data_after):.2f}",
                   f"{100 * med(data_after) / trainer_s['s_per_step']:.1f}%"]]),
        f"\nSpeed-up {med(b / a for b, a in zip(data_before, data_after)):.1f}x (median of per-repeat ratios).",
    ]
    report = "\n".join(out)
    print("\n" + report)
    result = {
        "command": command, "date": started.isoformat(), "machine": info, "args": vars(args), "model": model_desc,
        "flops_formula": FLOPS_FORMULA, "flops_per_token": fpt, "non_embedding_params": n_params, "mean_row_length": mean_len,
        "pad_fraction": 1 - real / padded, "matmul_gflop_per_s": {str(n): v for n, v in mm.items()},
        "matmul_peak_gflop_per_s": peak,
        "trainer": trainer_s, "hand_loop": hand_s, "trainer_over_hand_speed": loop_ratio,
        "profile_phases": phases, "profile_ops": ops,
        "data_per_step": {"rows": len(bench_rows), "before_s": data_before, "after_s": data_after},
        "tokenize": {"trajectories": args.setup_size, "before_s": before, "after_s": after, "speedup": tok_ratio},
        "projection_addition_benchmark": proj, "report_markdown": report,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
