"""Process-aligned training (PAL) of a Hugging Face causal LM, and its outcome-only baseline.

Kartik & Shah, "Process Aligned Learning: Supervise the Journey, Not Just the Destination" (2025),
section 3: ``L_i = L_out + lambda * sum_t l(M(s_t), a_t)`` (+ ``mu * L_consistency``), teacher-forced. ``mode`` picks how a step
is conditioned (see :mod:`procsup.data.tokenize`): ``history`` (the chain of thought as one sequence),
``state`` (``M(s_t) -> a_t``, each step on its own) or ``outcome`` (x -> y only: the baseline, same
model and trainer).

The loop is written on ``accelerate`` rather than ``transformers.Trainer`` because PAL needs its own
rows (one per step in state mode), a loss with several logged terms, and a data order that is a pure
function of (seed, step) (:func:`procsup.trainers.loop.global_batch`), which makes resuming exact.
``accelerate launch --num_processes N`` runs it as DDP (gloo on CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from procsup.data.batch import collate
from procsup.data.io import check_paths, read_jsonl
from procsup.data.tokenize import MODES, Mode, Row, StepFormat, check_length, step_starts, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.models.factory import load_model, max_positions
from procsup.models.saved import SavedFormat
from procsup.objectives.consistency import action_consistency, hidden_consistency
from procsup.objectives.pal import pal_loss, token_nll
from procsup.trainers.loop import (
    MetricsLog,
    Run,
    TrainResult,
    claim_output_dir,
    data_source,
    global_batch,
    make_accelerator,
    micro_batches,
    prepare_model,
    save_checkpoint,
    start_run,
    start_trackers,
    within_length,
)
from procsup.trainers.options import CheckpointOptions

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
        if self.mu > 0 and self.gradient_accumulation_steps > 1:
            raise ValueError("gradient_accumulation_steps > 1 with mu > 0: the consistency loss pairs the steps of a "
                             "whole batch, micro-batches would pair fewer; use one or the other")
        self.step_format  # validates the separators

    @property
    def step_format(self) -> StepFormat:
        return StepFormat(input_sep=self.input_sep, step_sep=self.step_sep, answer_prefix=self.answer_prefix)


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


def _forward(model, rows: Sequence[Row], tokenizer, cfg: PALConfig, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The loss terms of ``rows`` (:data:`LOGGED`) and their batch's attention mask."""
    batch = {k: v.to(device) for k, v in collate(rows, tokenizer.pad_token_id).items()}
    want_hidden = cfg.mu > 0 and cfg.consistency == "hidden"
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch.get("position_ids"), output_hidden_states=want_hidden)  # task-given ids or None
    terms = pal_loss(token_nll(out.logits, batch["input_ids"]), batch["segment_ids"][:, 1:], cfg.lam)  # logits (B, T, V)
    if cfg.mu > 0:
        d = {k: v.to(device) for k, v in decision_points(rows).items()}
        if want_hidden:
            terms["loss_consistency"] = hidden_consistency(out.hidden_states[-1][d["row"], d["pos"]], d["key"])
        else:
            terms["loss_consistency"] = action_consistency(out.logits[d["row"], d["pos"]], d["key"])
        terms["loss"] = terms["loss"] + cfg.mu * terms["loss_consistency"]
    else:
        terms["loss_consistency"] = torch.zeros((), device=device)
    return terms, batch["attention_mask"]


@torch.no_grad()
def evaluate_rows(model, rows: Sequence[Row], tokenizer, cfg: PALConfig, device) -> dict[str, float]:
    """The loss terms on held-out rows (``eval_loss``, ``eval_loss_out``, ...): batches of batch_size, each
    term a mean over rows (``eval_step_nll`` a row-weighted mean of batch means). No gradient."""
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(LOGGED, 0.0)
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        terms, _ = _forward(model, chunk, tokenizer, cfg, device)
        for k in LOGGED:
            sums[k] += terms[k].item() * len(chunk)
    model.train(was_training)
    return {f"eval_{k}": v / len(rows) for k, v in sums.items()}


def train(
    cfg: PALConfig,
    *,
    model=None,
    tokenizer=None,
    trajectories: Sequence[Trajectory] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train ``model`` (or ``cfg.model`` loaded from disk) on ``trajectories`` (or ``cfg.train_file``), in
    ``cfg.output_dir``, which this run holds (:func:`~procsup.trainers.loop.claim_output_dir`) until it ends."""
    accelerator = accelerator or make_accelerator(cfg)
    # every path checked before the model loads: a missing file or rejects_file == train_file fails at once
    check_paths(inputs={"train_file": cfg.train_file if trajectories is None else None, "eval_file": cfg.eval_file},
                outputs={"rejects_file": cfg.rejects_file})
    with claim_output_dir(accelerator, cfg):
        return _train(cfg, model, tokenizer, trajectories, accelerator)


def check_data_mode(trajectories: Sequence[Trajectory], mode: str, source) -> None:
    """Data that says which mode it was made for (``meta['mode']``, written by ``procsup make-data``) must be
    trained in that mode: history actions are whole lines and state actions answers to one state, so the
    other mode would train without complaint and then fail every rollout. Outcome mode reads x and y only."""
    made = sorted({t.meta.get("mode") for t in trajectories} - {None})
    if mode != "outcome" and made and made != [mode]:
        raise ValueError(f"{source}: the data was made for mode={','.join(made)} (meta.mode), this run has "
                         f"mode={mode}; make data for {mode} mode (procsup make-data --mode {mode}) or train mode={made[0]}")


def _train(cfg: PALConfig, model, tokenizer, trajectories, accelerator: Accelerator) -> TrainResult:
    base_model = None
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set PALConfig.model to a local model directory or pass model=")
        model, tokenizer, _ = load_model(cfg.model)
        base_model = cfg.model
    train_file = None
    if trajectories is None:
        if cfg.train_file is None:
            raise ValueError("no data: set PALConfig.train_file or pass trajectories=")
        train_file = cfg.train_file
        trajectories = read_jsonl(train_file, rejects=cfg.rejects_file)
    check_data_mode(trajectories, cfg.mode, train_file or "the trajectories")
    max_length = cfg.max_length or max_positions(model.config)
    counts = [len(t.steps) if cfg.mode == "state" else 1 for t in trajectories]
    trajectories, rows = within_length(trajectories, build_rows(trajectories, tokenizer, cfg), counts, max_length,
                                       train_file=train_file, rejects_file=cfg.rejects_file)
    if not rows:
        raise ValueError("no training rows: the data is empty")
    eval_rows = build_rows(read_jsonl(cfg.eval_file), tokenizer, cfg) if cfg.eval_file else None
    if eval_rows is not None:
        check_length(eval_rows, max_length, [f"{cfg.eval_file}, row {i}" for i in range(len(eval_rows))])
    model = prepare_model(model, cfg)
    run = Run(data_source(train_file))
    world, rank = accelerator.num_processes, accelerator.process_index
    per_proc, optimizer, scheduler, start = start_run(accelerator, model, cfg, run)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    positions = "task-given" if any(r.position_ids is not None for r in rows) else None  # decoding needs the same rule
    saved = SavedFormat("policy", cfg.step_format, cfg.mode, base_model=base_model, data=run.data,
                        positions=positions)  # procsup.json
    bar = tqdm(
        total=cfg.max_steps, initial=start, desc=f"train[{cfg.mode}]",
        disable=not (cfg.progress and accelerator.is_local_main_process), dynamic_ncols=True,
    )
    tokens_total, t0, last = 0, time.perf_counter(), {}
    metrics = MetricsLog(cfg.output_dir, bar, main_process=accelerator.is_main_process,
                         accelerator=start_trackers(accelerator, cfg, "procsup-pal"))
    accumulation, eval_every = cfg.gradient_accumulation_steps, cfg.eval_steps or cfg.log_steps
    for step in range(start, cfg.max_steps):
        idx = global_batch(len(rows), cfg.batch_size, step, cfg.seed)[rank * per_proc : (rank + 1) * per_proc]
        if accumulation == 1:
            terms, mask = _forward(model, [rows[i] for i in idx], tokenizer, cfg, accelerator.device)
            accelerator.backward(terms["loss"])
            n_tok = int(mask.sum()) * world  # equal slices: an estimate without a sync
        else:
            # each micro-batch's mean weighted by its share of the rows: the sum is the whole batch's mean
            terms, n_tok = dict.fromkeys(LOGGED, 0.0), 0
            for m, micro in enumerate(micro_batches(idx, accumulation)):
                sync = m == accumulation - 1 or world == 1
                with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                    part, mask = _forward(model, [rows[i] for i in micro], tokenizer, cfg, accelerator.device)
                    share = len(micro) / len(idx)
                    accelerator.backward(part["loss"] * share)
                for k in LOGGED:
                    terms[k] = terms[k] + part[k].detach() * share
                n_tok += int(mask.sum()) * world
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        tokens_total += n_tok
        metrics.add(tokens=n_tok)
        done = step + 1
        if done % cfg.log_steps == 0 or done == cfg.max_steps:
            reduced = accelerator.reduce(
                torch.stack([terms[k].detach() for k in LOGGED]), reduction="mean"
            )
            counts, span = metrics.window()
            last = {
                "step": done,
                "loss": reduced[0].item(),
                "loss_out": reduced[1].item(),
                "loss_steps": reduced[2].item(),
                "step_nll": reduced[3].item(),
                "loss_consistency": reduced[4].item(),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": counts["tokens"] / span,
            }
            metrics.write(last, f"step {done}", loss=f"{last['loss']:.4f}", out=f"{last['loss_out']:.3f}",
                          steps=f"{last['loss_steps']:.3f}")
        if eval_rows and (done % eval_every == 0 or done == cfg.max_steps):
            evaluated = evaluate_rows(model, eval_rows, tokenizer, cfg, accelerator.device)
            metrics.write({"step": done, **evaluated}, f"step {done}")
            last = {**last, **evaluated}
        bar.update(1)
        if cfg.save_steps and done % cfg.save_steps == 0 and done != cfg.max_steps:
            save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, done, saved=saved, run=run,
                            metrics=last)
    bar.close()
    seconds = time.perf_counter() - t0
    save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, cfg.max_steps, saved=saved, run=run,
                    metrics=last)
    if cfg.report_to != "none":
        accelerator.end_training()
    model = accelerator.unwrap_model(model)
    model.eval()
    return TrainResult(model, tokenizer, cfg.max_steps - start, seconds, tokens_total, last)
