"""State-mode PAL with a separate action head: a classification loss on every step.

Kartik & Shah (2025), section 3: "If the model has a separate action head, we attach a classification
loss there". Each demonstration step ``(s_t, a_t)`` is one row; the loss of a batch of rows is
``lam * mean_rows CE(head(s_t), a_t)``, the action-head form of the state-mode PAL loss (there is no
outcome term in state mode: every row is a step). The head reads the hidden state at the end of the state
prompt ``s_t · input_sep`` (see :mod:`procsup.models.action_head`).

Single process: the whole global batch is computed on one device (``accelerate`` places model and data, as
in :mod:`procsup.trainers.pal`; the data order is :func:`~procsup.trainers.loop.global_batch`). The loss
is :func:`procsup.objectives.pal.action_head_loss`.
No intermediate checkpoints: runs are short; the final model is saved to ``output_dir/model``.

Logged (``metrics.jsonl``, every ``log_steps``): ``loss`` (minimised, lam included), ``loss_steps`` (mean
step cross-entropy), ``step_accuracy`` (share of the batch's steps whose argmax is a_t), ``lr``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from procsup.data.batch import pad
from procsup.data.io import check_paths, read_jsonl
from procsup.data.tokenize import StepFormat, prompt_ids
from procsup.data.trajectory import Trajectory
from procsup.models.action_head import ActionHeadModel
from procsup.models.factory import load_model
from procsup.objectives.pal import action_head_loss
from procsup.trainers.loop import MetricsLog, TrainResult, claim_output_dir, global_batch, make_optimizer
from procsup.trainers.options import OptimizerOptions


@dataclass(kw_only=True)
class ActionHeadConfig(OptimizerOptions):
    """An action-head PAL run (state mode). Build it in Python, from YAML or from ``key=value`` flags.
    Optimizer and logging fields: :class:`~procsup.trainers.options.OptimizerOptions` (no checkpoints: a run
    takes minutes here and writes its model at the end)."""

    output_dir: str
    """Where ``metrics.jsonl`` and the final model (``output_dir/model``) go."""
    actions: tuple[str, ...]
    """The fixed action vocabulary, one head output per action (e.g. ``U,D,L,R``); a step whose action is
    not in it is an error."""
    model: str | None = None
    """Local directory of a Hugging Face causal LM, the backbone. Not needed when a model object is passed."""
    train_file: str | None = None
    """JSONL of trajectories whose steps have states. Not needed when trajectories are passed in Python."""
    lam: float = 1.0
    """lambda, the weight of the step classification loss."""
    input_sep: str = "\n"
    """Separator after the state s_t; the head reads the hidden state at its last token."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.actions, str):
            raise ValueError(f"actions must be a sequence of strings, got the string {self.actions!r}")
        self.actions = tuple(self.actions)  # YAML gives a list
        distinct = len(set(self.actions)) == len(self.actions)
        if not self.actions or not distinct or not all(isinstance(a, str) and a for a in self.actions):
            raise ValueError(f"actions must be distinct non-empty strings, got {self.actions!r}")
        if not (math.isfinite(self.lam) and self.lam > 0):
            raise ValueError(f"lam must be a finite number > 0, got {self.lam}")

    @property
    def step_format(self) -> StepFormat:
        return StepFormat(input_sep=self.input_sep)


def step_rows(trajectories: Sequence[Trajectory], actions: Sequence[str]) -> tuple[list[str], list[int]]:
    """Every step as (state, action index), in order; a missing state or an unknown action is a ValueError
    naming the trajectory and the step."""
    index = {a: i for i, a in enumerate(actions)}
    states, labels = [], []
    for i, traj in enumerate(trajectories):
        for t, step in enumerate(traj.steps):
            if step.state is None:
                raise ValueError(f"trajectory {i}, step {t}: no state (the action head is trained in state mode)")
            if step.action not in index:
                raise ValueError(f"trajectory {i}, step {t}: action {step.action!r} is not one of {tuple(actions)}")
            states.append(step.state)
            labels.append(index[step.action])
    return states, labels


def train_action_head(
    cfg: ActionHeadConfig, *, model=None, tokenizer=None, trajectories: Sequence[Trajectory] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train an action head on ``model`` (a causal LM backbone, or ``cfg.model`` loaded from disk) with the
    steps of ``trajectories`` (or ``cfg.train_file``). ``TrainResult.model`` is the :class:`ActionHeadModel`.
    ``output_dir`` is locked for the run (:func:`~procsup.trainers.loop.claim_output_dir`; no checkpoints, so
    no resume: a rerun replaces ``model/`` and appends to ``metrics.jsonl``)."""
    accelerator = accelerator or Accelerator()
    if accelerator.num_processes > 1:
        raise ValueError("train_action_head runs in one process; launch it without --num_processes")
    # every path checked before the model loads: a missing file or rejects_file == train_file fails at once
    check_paths(inputs={"train_file": cfg.train_file if trajectories is None else None})
    with claim_output_dir(accelerator, cfg):
        return _train(cfg, model, tokenizer, trajectories, accelerator)


def _train(cfg: ActionHeadConfig, model, tokenizer, trajectories, accelerator: Accelerator) -> TrainResult:
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set ActionHeadConfig.model to a local model directory or pass model=")
        model, tokenizer, _ = load_model(cfg.model)
    if trajectories is None:
        if cfg.train_file is None:
            raise ValueError("no data: set ActionHeadConfig.train_file or pass trajectories=")
        trajectories = read_jsonl(cfg.train_file)
    states, labels = step_rows(trajectories, cfg.actions)
    if not states:
        raise ValueError("no training rows: the data has no steps")
    policy = ActionHeadModel(model, tokenizer, cfg.actions, cfg.step_format, seed=cfg.seed)
    cache = {s: prompt_ids(tokenizer, s, cfg.step_format) for s in set(states)}
    prompts = [cache[s] for s in states]
    targets = torch.tensor(labels)  # (N,)

    out_dir = Path(cfg.output_dir)
    optimizer, scheduler = make_optimizer(policy, cfg)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    policy.train()

    bar = tqdm(total=cfg.max_steps, desc="train[action-head]", disable=not cfg.progress, dynamic_ncols=True)
    tokens, t0, last = 0, time.perf_counter(), {}
    metrics = MetricsLog(out_dir, bar)
    for step in range(cfg.max_steps):
        idx = global_batch(len(prompts), cfg.batch_size, step, cfg.seed)
        ids, mask = pad([prompts[i] for i in idx], tokenizer.pad_token_id)  # (B, T), right-padded
        ids, mask, y = ids.to(accelerator.device), mask.to(accelerator.device), targets[idx].to(accelerator.device)
        terms = action_head_loss(policy(ids, mask), y, cfg.lam)  # logits (B, A)
        accelerator.backward(terms["loss"])
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(mask.sum())

        done = step + 1
        if done % cfg.log_steps == 0 or done == cfg.max_steps:
            last = {
                "step": done,
                "loss": terms["loss"].item(),
                "loss_steps": terms["loss_steps"].item(),
                "step_accuracy": terms["step_accuracy"].item(),
                "lr": scheduler.get_last_lr()[0],
            }
            metrics.write(last, f"step {done}", loss=f"{last['loss']:.4f}", acc=f"{last['step_accuracy']:.3f}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    policy = accelerator.unwrap_model(policy)
    policy.eval()
    policy.save(out_dir / "model")
    return TrainResult(policy, tokenizer, cfg.max_steps, seconds, tokens, last)
