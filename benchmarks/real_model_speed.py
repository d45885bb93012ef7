"""Training speed of SmolLM2-135M on CPU: full fine-tune vs LoRA vs frozen lower layers, in tokens/s and model
FLOPs utilization (MFU) against the float32 matmul rate measured in the same run.

Each arm runs the step a procsup trainer runs (forward, token NLL on every position, backward, AdamW step;
procsup.models.lora sets what trains) on GSM8K question + answer text cut to ``--seq`` tokens, batch
``--batch``. Timings are medians of ``--repeats`` runs of ``--steps`` steps after one warm-up step; the arms
alternate in order across repeats (a shared machine's load drifts).

FLOPs per token, counted per arm from the model's own linear layers (LoRA's A and B included):
forward 2 * in * out for every linear, + 4 * d * T per layer for attention (PaLM's count);
backward 2 * in * out for the input gradient of every linear at or above the lowest trainable layer (+ 8 * d * T
attention per such layer) and 2 * in * out for the weight gradient of every trainable linear.
So a full fine-tune is the usual 6N + 12 L d T, a frozen model's forward 2N + 4 L d T. MFU = counted FLOP/s over
the best float32 matmul GFLOP/s measured in this run (torch.mm, square and model-shaped).

    make real-model
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_speed.py     # ~5 min on 2 shared cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: OpenMP reads it once

import argparse
import datetime as dt
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn

from procsup.models.factory import load_model
from procsup.models.lora import LoRAConfig, apply_lora, freeze_lower_layers, merge_lora, trainable_parameters

OUT = Path(__file__).parent / "results" / "real"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=".cache/smollm2", help="the imported folder (make real-model)")
    p.add_argument("--data", default="/work/shared/data/gsm8k/train.jsonl")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--top-layers", type=int, default=4, help="blocks trained in the frozen-lower arm")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def matmul_rates(shapes, repeats: int, min_seconds: float = 0.3) -> dict[str, float]:
    """Median GFLOP/s of torch.mm per (m, k, n) float32 shape."""
    from train_speed import mm_gflops  # benchmarks/ is on sys.path when this script runs

    return {f"{m}x{k}x{n}": statistics.median(mm_gflops(m, k, n, repeats, min_seconds)) for m, k, n in shapes}


def _depth(name: str, num_layers: int) -> int:
    parts = name.split(".")
    if "layers" in parts:
        return int(parts[parts.index("layers") + 1])
    return -1 if "embed" in name else num_layers


def flops_per_token(model: nn.Module, seq: int, train: bool) -> float:
    """The count in the module docstring, for what ``requires_grad`` says trains."""
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    trainable = [_depth(n, layers) for n, p in model.named_parameters() if p.requires_grad]
    lowest = min(trainable) if (train and trainable) else layers + 1
    total = 0.0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            mm = 2 * module.in_features * module.out_features
            total += mm
            if train and _depth(name, layers) >= lowest:
                total += mm  # input gradient
            if train and module.weight.requires_grad:
                total += mm  # weight gradient
    attn_layers_back = max(0, layers - max(lowest, 0)) if train else 0
    return total + 4 * d * seq * layers + 8 * d * seq * attn_layers_back


def batches(tokenizer, path: str, batch: int, seq: int, count: int) -> list[torch.Tensor]:
    ids: list[int] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            ids += tokenizer(rec["question"] + "\n" + rec["answer"] + "\n\n", add_special_tokens=False)["input_ids"]
            if len(ids) >= batch * seq * count:
                break
    flat = torch.tensor(ids[: batch * seq * count])
    return list(flat.view(count, batch, seq))


def step(model, optimizer, x: torch.Tensor) -> None:
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_arm(name: str, path: str, args):
    model, _, _ = load_model(path)
    if name == "lora":
        apply_lora(model, LoRAConfig(r=args.lora_r, alpha=2.0 * args.lora_r))
    elif name == "lora-all-linear":
        apply_lora(model, LoRAConfig(r=args.lora_r, alpha=2.0 * args.lora_r, target_modules=(
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")))
    elif name == "frozen-lower":
        freeze_lower_layers(model, args.top_layers)
    elif name == "forward-only":
        model.requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5) if params else None
    return model, optimizer


def time_arm(name: str, model, optimizer, data: list[torch.Tensor], steps: int) -> float:
    """Tokens/s over ``steps`` steps (forward only when optimizer is None)."""
    tokens = sum(x.numel() for x in data[:steps])
    t = time.perf_counter()
    for x in data[:steps]:
        if optimizer is None:
            with torch.no_grad():
                model(input_ids=x)
        else:
            step(model, optimizer, x)
    return tokens / (time.perf_counter() - t)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    env = f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    command = f"{env} {shlex.quote(sys.executable)} {' '.join(shlex.quote(a) for a in sys.argv)}"
    print(f"# real_model_speed {started:%Y-%m-%d %H:%M} UTC ({env}, {args.threads} torch threads)", flush=True)
    shapes = [(2048, 2048, 2048), (args.batch * args.seq, 576, 1536), (args.batch * args.seq, 576, 49152)]
    mm_before = matmul_rates(shapes, args.repeats)
    print("matmul GFLOP/s", mm_before, flush=True)

    _, tok, _ = load_model(args.model)
    data = batches(tok, args.data, args.batch, args.seq, args.steps + 1)
    arms = ["forward-only", "full", "lora", "lora-all-linear", "frozen-lower"]
    built = {}
    for name in arms:
        model, optimizer = make_arm(name, args.model, args)
        time_arm(name, model, optimizer, data[:1], 1)  # warm-up: lazy init, allocator
        built[name] = (model, optimizer)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.repeats):
        for name in (arms if r % 2 == 0 else arms[::-1]):
            model, optimizer = built[name]
            rates[name].append(time_arm(name, model, optimizer, data[1:], args.steps))
            print(f"repeat {r} {name}: {rates[name][-1]:.1f} tokens/s", flush=True)
    mm_after = matmul_rates(shapes, args.repeats)
    peak = max(*mm_before.values(), *mm_after.values())

    rows = []
    for name in arms:
        model, optimizer = built[name]
        train = optimizer is not None
        fpt = flops_per_token(model, args.seq, train)
        trainable, total = trainable_parameters(model)
        total = trainable_parameters(built["full"][0])[1] if name == "forward-only" else total
        tps = statistics.median(rates[name])
        rows.append({"arm": name, "trainable_params": trainable if train else 0, "total_params": total,
                     "tokens_per_s": tps, "tokens_per_s_runs": rates[name], "gflop_per_token": fpt / 1e9,
                     "gflop_per_s": tps * fpt / 1e9, "mfu": tps * fpt / 1e9 / peak,
                     "full_ft_equivalent_mfu": tps * flops_per_token(built["full"][0], args.seq, True) / 1e9 / peak})
    # the LoRA arm's merge is exact: a check that what was timed is what would be saved
    model = built["lora"][0]
    x = data[0][:1, :16]
    with torch.no_grad():
        before = model(input_ids=x).logits
        merge_lora(model)
        merge_err = (model(input_ids=x).logits - before).abs().max().item()
    finished = dt.datetime.now(dt.timezone.utc)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {
        "command": command, "date": started.isoformat(timespec="seconds"),
        "wall_seconds": (finished - started).total_seconds(),
        "machine": {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": args.threads,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "load_average_at_end": os.getloadavg(),
                    "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "matmul_gflop_per_s": {"before": mm_before, "after": mm_after, "peak_used": peak},
        "flops_formula": __doc__.split("\n\n")[2].replace("\n", " "),
        "lora_merge_max_abs_logit_change": merge_err,
        "arms": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_model_speed.json").write_text(json.dumps(result, indent=1))
    lines = [f"# SmolLM2-135M training speed on CPU ({started:%Y-%m-%d %H:%M} UTC)", "",
             f"`{command}`", "",
             f"{cpu}, {args.threads} torch threads, {env}, load average at the end {os.getloadavg()[0]:.2f}; "
             f"batch {args.batch} x {args.seq} tokens (GSM8K train text), median of {args.repeats} x {args.steps} steps; "
             f"wall {result['wall_seconds']:.0f} s. float32 matmul peak in this run: {peak:.1f} GFLOP/s "
             f"(before: {', '.join(f'{k} {v:.1f}' for k, v in mm_before.items())}; after: "
             f"{', '.join(f'{k} {v:.1f}' for k, v in mm_after.items())}).", "",
             "| arm | trainable params | tokens/s | GFLOP/token | GFLOP/s | MFU | MFU counting 6N+12LdT per token |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['arm']} | {row['trainable_params']:,} | {row['tokens_per_s']:.1f} | {row['gflop_per_token']:.3f} | "
                     f"{row['gflop_per_s']:.1f} | {row['mfu']:.1%} | {row['full_ft_equivalent_mfu']:.1%} |")
    lines += ["", f"LoRA r={args.lora_r} (alpha {2 * args.lora_r}) on q/k/v/o, or on every linear of the blocks; frozen-lower "
              f"trains the top {args.top_layers} of 30 blocks and the final norm (the head is tied to the frozen "
              f"embeddings). Merging the LoRA arm changed its logits by at most {merge_err:.2e}.",
              "FLOPs: " + result["flops_formula"]]
    (args.out / "real_model_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
