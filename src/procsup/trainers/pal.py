"""Process-aligned training (PAL) of a Hugging Face causal LM, and its outcome-only baseline.

Kartik & Shah, "Process Aligned Learning: Supervise the Journey, Not Just the Destination" (2025),
section 3: ``L_i = L_out + lambda * sum_t l(M(s_t), a_t)`` (+ ``mu * L_consistency``), teacher-forced. ``mode`` picks how a step
is conditioned (see :mod:`procsup.data.tokenize`): ``history`` (the chain of thought as one sequence),
``state`` (``M(s_t) -> a_t``, each step on its own) or ``outcome`` (x -> y only: the baseline, same
model and trainer).

The loop is written on ``accelerate`` rather than ``transformers.Trainer`` because PAL needs its own
rows (one per step in state mode), a loss with several logged terms, and a data order that is a pure
function of (seed, step), which makes resuming exact and makes N processes with a global batch B
equal to one process with batch B (each process takes a contiguous slice of the same global batch;
DDP averages the gradients). ``accelerate launch --num_processes N`` runs it as DDP (gloo on CPU).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from procsup.data.io import read_jsonl
from procsup.data.batch import collate
from procsup.data.tokenize import MODES, Mode, Row, StepFormat, step_starts, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.models.factory import load_model
from procsup.objectives.consistency import action_consistency, hidden_consistency
from procsup.objectives.pal import pal_loss, token_nll
from procsup.trainers.options import CheckpointOptions

log = logging.getLogger(__name__)
LOGGED = ("loss", "loss_out", "loss_steps", "step_nll", "loss_consistency")


@dataclass(kw_only=True)
class PALConfig(CheckpointOptions):
    """Everything a PAL (or outcome-only) training run needs. Build it in Python, from YAML or from
    ``key=value`` flags (``procsup train``). Optimizer, logging and checkpoint fields:
    :class:`~procsup.trainers.options.CheckpointOptions`; a row is a sequence (one per step in state mode)."""

    output_dir: str
    """Where checkpoints, ``metrics.jsonl`` and the final model go."""
    model: str | None = None
    """Local directory of a Hugging Face causal LM (safetensors). Not needed when a model object is passed."""
    train_file: str | None = None
    """JSONL of trajectories. Not needed when trajectories are passed in Python."""
    rejects_file: str | None = None
    """If set, bad records of train_file are written here with their reason instead of stopping the run."""
    mode: Mode = "history"
    """history: one sequence x, a_1..a_n, y; state: M(s_t) -> a_t per step; outcome: x -> y (baseline)."""
    lam: float = 1.0
    """lambda, the weight of the summed per-step losses."""
    mu: float = 0.0
    """Weight of the behavior consistency loss (0: off). Steps with equal ``key`` in a batch are pulled
    together at the position where the model decides the step (see objectives/consistency.py)."""
    consistency: Literal["hidden", "action"] = "hidden"
    """hidden: squared L2 between last-layer hidden states; action: symmetric KL between next-token
    distributions."""
    input_sep: str = "\n"
    """Separator after the input x (or state s_t)."""
    step_sep: str = "\n"
    """Separator after each step; its last token is the step's boundary token."""
    answer_prefix: str = "A:"
    """Text before the final answer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be a finite number >= 0, got {self.mu}")
        if self.consistency not in ("hidden", "action"):
            raise ValueError(f"consistency must be hidden or action, got {self.consistency!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        self.step_format  # validates the separators

    @property
    def step_format(self) -> StepFormat:
        return StepFormat(input_sep=self.input_sep, step_sep=self.step_sep, answer_prefix=self.answer_prefix)


@dataclass
class TrainResult:
    model: torch.nn.Module
    tokenizer: object
    steps: int
    seconds: float
    tokens: int
    """Non-padding tokens processed (all processes)."""
    final_metrics: dict


@functools.lru_cache(maxsize=2)  # a batch spans at most two epochs (unless rows < batch_size)
def _epoch_order(num_rows: int, seed: int, epoch: int, lengths: tuple[int, ...] | None, group: int) -> tuple[int, ...]:
    # cached: drawing a permutation of every row at every step cost ~5 ms at 50k rows (state mode)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_rows, generator=gen).tolist()
    if lengths is None:
        return tuple(order)
    # length-grouped (as transformers' LengthGroupedSampler): within random chunks of `group` rows, longest
    # first, so that a batch holds rows of similar length and pads little
    chunks = [sorted(order[i : i + group], key=lambda r: -lengths[r]) for i in range(0, num_rows, group)]
    return tuple(r for chunk in chunks for r in chunk)


def global_batch(num_rows: int, batch_size: int, step: int, seed: int, lengths: tuple[int, ...] | None = None) -> list[int]:
    """Row indices of the global batch at ``step``: epochs of seeded permutations, a pure function.

    With ``lengths`` (one per row), each epoch's order is length-grouped within chunks of 50 batches.
    """
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_rows)
        order = _epoch_order(num_rows, seed, epoch, lengths, 50 * batch_size)
        out.extend(order[offset : offset + batch_size - len(out)])
    return out


def decision_points(rows: Sequence[Row]) -> dict[str, torch.Tensor]:
    """Where each keyed step is decided, for the consistency loss: the position before the step's first
    token. Returns row (N,), pos (N,) and key (N,) ids, keys numbered within this batch."""
    numbers: dict[str, int] = {}
    row_idx, pos, key = [], [], []
    for i, r in enumerate(rows):
        for start, k in zip(step_starts(r), r.step_keys):
            if k is not None and start > 0:
                row_idx.append(i)
                pos.append(start - 1)
                key.append(numbers.setdefault(k, len(numbers)))
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return {"row": as_tensor(row_idx), "pos": as_tensor(pos), "key": as_tensor(key)}


def build_rows(trajectories: Sequence[Trajectory], tokenizer, cfg: PALConfig) -> list[Row]:
    return tokenize_many(trajectories, tokenizer, cfg.step_format, cfg.mode)


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def make_optimizer(model, cfg) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (weight decay on matrices only) and linear warm-up then cosine decay to 0. ``cfg`` has
    learning_rate, weight_decay, warmup_steps and max_steps."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )
    return optimizer, get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)


def start_run(accelerator, model, cfg) -> tuple[int, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int]:
    """What a checkpointed trainer (PAL, PRM) sets up before its loop: the rows per process (the global
    batch split evenly), ``output_dir``, the optimizer and schedule (:func:`make_optimizer`), and the step to
    start from (the newest checkpoint's with ``cfg.resume``, else 0). ``cfg``: a
    :class:`~procsup.trainers.options.CheckpointOptions` with ``output_dir``."""
    world = accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    optimizer, scheduler = make_optimizer(model, cfg)
    start = load_checkpoint(model, optimizer, scheduler, cfg) if cfg.resume else 0
    return cfg.batch_size // world, optimizer, scheduler, start


def save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, step: int) -> None:
    """Write checkpoint-<step> atomically (to a temporary folder, then renamed) on the main process.
    ``cfg`` is a trainer config dataclass with output_dir, max_steps and save_total_limit."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(cfg.output_dir)
        final, tmp = out / f"checkpoint-{step}", out / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        state = {"step": step, "max_steps": cfg.max_steps, "config": asdict(cfg)}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in _checkpoints(out)[: -cfg.save_total_limit or None]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(model, optimizer, scheduler, cfg) -> int:
    ckpts = _checkpoints(Path(cfg.output_dir))
    if not ckpts:
        return 0
    ckpt = ckpts[-1]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if state.get("max_steps", cfg.max_steps) != cfg.max_steps:
        raise ValueError(
            f"{ckpt} was written by a run with max_steps={state['max_steps']}, this run has {cfg.max_steps}: "
            "the learning-rate schedule would change; use the same max_steps or a new output_dir"
        )
    missing, unexpected = model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ValueError(f"{ckpt}: checkpoint does not fit the model (missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)})")
    opt_state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(opt_state["optimizer"])
    scheduler.load_state_dict(opt_state["scheduler"])
    log.info("resumed from %s (step %d)", ckpt, state["step"])
    return int(state["step"])


def train(
    cfg: PALConfig,
    *,
    model=None,
    tokenizer=None,
    trajectories: Sequence[Trajectory] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train ``model`` (or ``cfg.model`` loaded from disk) on ``trajectories`` (or ``cfg.train_file``)."""
    accelerator = accelerator or Accelerator()
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set PALConfig.model to a local model directory or pass model=")
        model, tokenizer = load_model(cfg.model)
    if trajectories is None:
        if cfg.train_file is None:
            raise ValueError("no data: set PALConfig.train_file or pass trajectories=")
        trajectories = read_jsonl(cfg.train_file, rejects=cfg.rejects_file)
    rows = build_rows(trajectories, tokenizer, cfg)
    if not rows:
        raise ValueError("no training rows: the data is empty")
    world, rank = accelerator.num_processes, accelerator.process_index
    per_proc, optimizer, scheduler, start = start_run(accelerator, model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    metrics_path = Path(cfg.output_dir) / "metrics.jsonl"
    bar = tqdm(
        total=cfg.max_steps, initial=start, desc=f"train[{cfg.mode}]",
        disable=not (cfg.progress and accelerator.is_local_main_process), dynamic_ncols=True,
    )
    tokens_total, t0, last = 0, time.perf_counter(), {}
    window = {"tokens": 0, "time": time.perf_counter()}
    for step in range(start, cfg.max_steps):
        idx = global_batch(len(rows), cfg.batch_size, step, cfg.seed)[rank * per_proc : (rank + 1) * per_proc]
        batch = {k: v.to(accelerator.device) for k, v in collate([rows[i] for i in idx], tokenizer.pad_token_id).items()}
        want_hidden = cfg.mu > 0 and cfg.consistency == "hidden"
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=want_hidden)
        terms = pal_loss(token_nll(out.logits, batch["input_ids"]), batch["segment_ids"][:, 1:], cfg.lam)  # logits (B, T, V)
        if cfg.mu > 0:
            d = {k: v.to(accelerator.device) for k, v in decision_points([rows[i] for i in idx]).items()}
            if want_hidden:
                terms["loss_consistency"] = hidden_consistency(out.hidden_states[-1][d["row"], d["pos"]], d["key"])
            else:
                terms["loss_consistency"] = action_consistency(out.logits[d["row"], d["pos"]], d["key"])
            terms["loss"] = terms["loss"] + cfg.mu * terms["loss_consistency"]
        else:
            terms["loss_consistency"] = torch.zeros((), device=accelerator.device)
        accelerator.backward(terms["loss"])
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        n_tok = int(batch["attention_mask"].sum()) * world  # equal slices: an estimate without a sync
        tokens_total += n_tok
        window["tokens"] += n_tok
        done = step + 1
        if done % cfg.log_steps == 0 or done == cfg.max_steps:
            reduced = accelerator.reduce(
                torch.stack([terms[k].detach() for k in LOGGED]), reduction="mean"
            )
            now = time.perf_counter()
            last = {
                "step": done,
                "loss": reduced[0].item(),
                "loss_out": reduced[1].item(),
                "loss_steps": reduced[2].item(),
                "step_nll": reduced[3].item(),
                "loss_consistency": reduced[4].item(),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": window["tokens"] / max(now - window["time"], 1e-9),
            }
            window = {"tokens": 0, "time": now}
            if not math.isfinite(last["loss"]):  # the reduced value is the same on every process: all stop
                raise FloatingPointError(f"loss is {last['loss']} at step {done}; lower learning_rate")
            if accelerator.is_main_process:
                with metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(last) + "\n")
            bar.set_postfix(loss=f"{last['loss']:.4f}", out=f"{last['loss_out']:.3f}", steps=f"{last['loss_steps']:.3f}")
        bar.update(1)
        if cfg.save_steps and done % cfg.save_steps == 0 and done != cfg.max_steps:
            save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, done)
    bar.close()
    seconds = time.perf_counter() - t0
    save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, cfg.max_steps)
    model = accelerator.unwrap_model(model)
    model.eval()
    return TrainResult(model, tokenizer, cfg.max_steps - start, seconds, tokens_total, last)
