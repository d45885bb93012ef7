"""Training a process reward model on trajectories with step labels (``procsup train-prm``).

Hard labels (bool) train a 2-class token-classification head, soft labels (floats in [0, 1]) a 1-logit
head with binary cross-entropy (Lightman et al. 2023, "Let's Verify Step by Step"; Wang et al. 2024,
Math-Shepherd). Each step's label sits on its boundary token (:mod:`procsup.objectives.prm`), where
:func:`procsup.models.prm.score` reads it. An ORM is trained by labelling only the last step.

The loop is the PAL trainer's, on the same kit (:mod:`procsup.trainers.loop`: accelerate, data order a
pure function of (seed, step), safetensors checkpoints, exact resume, DDP under ``accelerate launch``),
with length-grouped batches on by default:
rows of similar length share a batch, so little of each batch is padding.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from procsup.data.batch import collate
from procsup.data.io import check_paths, read_jsonl
from procsup.data.tokenize import Row, StepFormat, check_length, tokenize_many
from procsup.data.trajectory import Label, Trajectory, TrajectoryError
from procsup.models.factory import max_positions, resolve_model
from procsup.models.positions import PositionReader
from procsup.models.prm import HARD_LABELS, SOFT_LABELS, build_prm, probabilities
from procsup.models.saved import SavedFormat
from procsup.objectives.prm import label_tensors, step_loss
from procsup.trainers.loop import (
    MetricsLog,
    Run,
    TrainResult,
    binary_auroc,
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


@dataclass(kw_only=True)
class PRMConfig(CheckpointOptions):
    """A PRM training run. Build it in Python, from YAML or from ``key=value`` flags (``procsup train-prm``).
    Optimizer, logging and checkpoint fields: :class:`~procsup.trainers.options.CheckpointOptions`."""

    output_dir: str
    """Where checkpoints and ``metrics.jsonl`` go."""
    model: str | None = None
    """Local directory of a Hugging Face backbone (a causal LM or a PRM checkpoint). Not needed when a model
    object is passed."""
    train_file: str | None = None
    """JSONL of trajectories whose steps carry labels."""
    rejects_file: str | None = None
    """If set, bad records of train_file are written here with their reason instead of stopping the run."""
    soft: bool = False
    """False: hard labels, 2-class head, cross-entropy. True: soft labels, 1-logit head, binary cross-entropy."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 0)."""
    batch_size: int = 16
    """Global batch size in trajectories (split evenly across processes)."""
    group_by_length: bool = True
    """Batch trajectories of similar length together (less padding)."""
    sparse_last_block: bool = True
    """Compute the last transformer block only at the labelled boundaries (every other position's output
    of that block is never read; same loss and gradients, see :mod:`procsup.models.positions`). Llama-family
    blocks only; other models run the full forward either way."""
    input_sep: str = "\n"
    """Separator after the prompt."""
    step_sep: str = "\n"
    """Separator after each step; its last token is where the step's score is read."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.step_format  # validates the separators

    @property
    def step_format(self) -> StepFormat:
        return StepFormat(input_sep=self.input_sep, step_sep=self.step_sep)


def check_labels(trajectories: Sequence[Trajectory], soft: bool) -> None:
    """Every trajectory needs at least one labelled step; a hard-label run needs bool labels."""
    for i, traj in enumerate(trajectories):
        labels = [lab for lab in traj.labels if lab is not None]
        if not labels:
            raise TrajectoryError(f"trajectory {i} has no step labels; a PRM trains on labelled steps", field="steps")
        if not soft and not all(isinstance(lab, bool) for lab in labels):
            t = next(t for t, lab in enumerate(traj.labels) if lab is not None and not isinstance(lab, bool))
            raise TrajectoryError(f"trajectory {i} has a soft label; train with soft=true", field=f"steps[{t}].label")


def label_source(trajectories: Sequence[Trajectory]) -> tuple[str, ...] | None:
    """The distinct ``meta["label_source"]`` values of the data (None if no trajectory says)."""
    found = {str(t.meta["label_source"]) for t in trajectories if t.meta.get("label_source") is not None}
    return tuple(sorted(found)) or None


def _forward(net, rows: Sequence[Row], labels: Sequence[Sequence[Label | None]], tokenizer, device):
    """Loss terms at the labelled boundaries of ``rows``, the picked logits (N, C), targets (N,) and the
    batch's attention mask."""
    batch = collate(rows, tokenizer.pad_token_id)
    values, mask = label_tensors(rows, labels, batch["input_ids"].size(1))
    rows_at, cols_at = mask.nonzero(as_tuple=True)
    picked = net(batch["input_ids"].to(device), batch["attention_mask"].to(device), rows_at.to(device), cols_at.to(device))
    target = values[mask].to(device)
    return step_loss(picked, target), picked, target, batch["attention_mask"]  # picked (N, C): the labelled boundaries


@torch.no_grad()
def evaluate_rows(net, rows: Sequence[Row], labels, tokenizer, batch_size: int, device) -> dict[str, float]:
    """``eval_loss`` and ``eval_step_accuracy`` (means over every labelled step of the held-out rows) and
    ``eval_auroc`` (step scores against label >= 0.5; None when one class is missing). No gradient."""
    was_training = net.training
    net.eval()
    loss_sum, scores, targets = 0.0, [], []
    for start in range(0, len(rows), batch_size):
        terms, picked, target, _ = _forward(net, rows[start : start + batch_size], labels[start : start + batch_size],
                                            tokenizer, device)
        loss_sum += terms["loss"].item() * target.numel()
        scores += probabilities(picked).tolist()
        targets += target.tolist()
    net.train(was_training)
    right = [t >= 0.5 for t in targets]
    return {"eval_loss": loss_sum / len(targets),
            "eval_step_accuracy": sum((p >= 0.5) == r for p, r in zip(scores, right)) / len(targets),
            "eval_auroc": binary_auroc(scores, right)}


def train_prm(cfg: PRMConfig, *, model=None, tokenizer=None, trajectories: Sequence[Trajectory] | None = None,
              accelerator: Accelerator | None = None) -> TrainResult:
    """Train a PRM (``cfg.model`` loaded as a token classifier, or a model object) on labelled trajectories,
    in ``cfg.output_dir``, which this run holds (:func:`~procsup.trainers.loop.claim_output_dir`) until it ends."""
    accelerator = accelerator or make_accelerator(cfg)
    # every path checked before the model loads: a missing file or rejects_file == train_file fails at once
    check_paths(inputs={"train_file": cfg.train_file if trajectories is None else None, "eval_file": cfg.eval_file},
                outputs={"rejects_file": cfg.rejects_file})
    with claim_output_dir(accelerator, cfg):
        return _train(cfg, model, tokenizer, trajectories, accelerator)


def _train(cfg: PRMConfig, model, tokenizer, trajectories, accelerator: Accelerator) -> TrainResult:
    base_model = None
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set PRMConfig.model to a local model directory or pass model=")
        model = build_prm(cfg.model, soft=cfg.soft, seed=cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model), local_files_only=True)
        base_model = cfg.model
    # the classes, named in the checkpoints' config.json (a model built elsewhere may not have them)
    model.config.id2label = dict(SOFT_LABELS if model.config.num_labels == 1 else HARD_LABELS)
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    train_file = None
    if trajectories is None:
        if cfg.train_file is None:
            raise ValueError("no data: set PRMConfig.train_file or pass trajectories=")
        train_file = cfg.train_file
        trajectories = read_jsonl(train_file, rejects=cfg.rejects_file)
    if not trajectories:
        raise ValueError("no training trajectories")
    check_labels(trajectories, cfg.soft)
    max_length = cfg.max_length or max_positions(model.config)
    trajectories, rows = within_length(trajectories, tokenize_many(trajectories, tokenizer, cfg.step_format, "steps"),
                                       [1] * len(trajectories), max_length, train_file=train_file,
                                       rejects_file=cfg.rejects_file)
    if not rows:
        raise ValueError("no training trajectories: every one is longer than max_length")
    labels = [t.labels for t in trajectories]
    evals = None
    if cfg.eval_file:
        held_out = read_jsonl(cfg.eval_file)
        check_labels(held_out, cfg.soft)
        eval_rows = tokenize_many(held_out, tokenizer, cfg.step_format, "steps")
        check_length(eval_rows, max_length, [f"{cfg.eval_file}, trajectory {i}" for i in range(len(eval_rows))])
        evals = (eval_rows, [t.labels for t in held_out])
    lengths = tuple(len(r.input_ids) for r in rows) if cfg.group_by_length else None
    model = prepare_model(model, cfg)
    run = Run(data_source(train_file))
    world, rank = accelerator.num_processes, accelerator.process_index
    per_proc, optimizer, scheduler, start = start_run(accelerator, model, cfg, run)
    # the reader, not the model, is what accelerate wraps: every parameter's gradient flows through its forward
    net, optimizer = accelerator.prepare(PositionReader(model, sparse=cfg.sparse_last_block), optimizer)
    net.train()

    saved = SavedFormat("prm", cfg.step_format, "steps", base_model=base_model, data=run.data,
                        label_source=label_source(trajectories))  # the checkpoints' procsup.json
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train-prm", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_local_main_process))
    t0, last, tokens_total = time.perf_counter(), {}, 0
    metrics = MetricsLog(cfg.output_dir, bar, main_process=accelerator.is_main_process,
                         accelerator=start_trackers(accelerator, cfg, "procsup-prm"))
    accumulation, eval_every, dev = cfg.gradient_accumulation_steps, cfg.eval_steps or cfg.log_steps, accelerator.device
    for step in range(start, cfg.max_steps):
        idx = global_batch(len(rows), cfg.batch_size, step, cfg.seed, lengths)[rank * per_proc : (rank + 1) * per_proc]
        if accumulation == 1:
            terms, _, _, mask = _forward(net, [rows[i] for i in idx], [labels[i] for i in idx], tokenizer, dev)
            accelerator.backward(terms["loss"])
            n_tok, n_pad = int(mask.sum()) * world, int((1 - mask).sum()) * world  # equal slices: estimates without a sync
        else:
            # the loss is a mean over labelled steps: each micro-batch's mean weighted by its share of them
            parts = micro_batches(idx, accumulation)
            n_steps = [sum(lab is not None for i in micro for lab in labels[i]) for micro in parts]
            terms, n_tok, n_pad = {"loss": 0.0, "step_accuracy": 0.0}, 0, 0
            for m, micro in enumerate(parts):
                sync = m == accumulation - 1 or world == 1
                with accelerator.no_sync(net) if not sync else contextlib.nullcontext():
                    part, _, _, mask = _forward(net, [rows[i] for i in micro], [labels[i] for i in micro], tokenizer, dev)
                    share = n_steps[m] / sum(n_steps)
                    accelerator.backward(part["loss"] * share)
                for k in terms:
                    terms[k] = terms[k] + part[k].detach() * share
                n_tok, n_pad = n_tok + int(mask.sum()) * world, n_pad + int((1 - mask).sum()) * world
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_total += n_tok
        metrics.add(samples=len(idx) * world, tokens=n_tok, pad=n_pad)
        done = step + 1
        if done % cfg.log_steps == 0 or done == cfg.max_steps:
            reduced = accelerator.reduce(torch.stack([terms["loss"].detach(), terms["step_accuracy"]]), reduction="mean")
            counts, span = metrics.window()
            last = {
                "step": done, "loss": reduced[0].item(), "step_accuracy": reduced[1].item(),
                "lr": scheduler.get_last_lr()[0], "samples_per_s": counts["samples"] / span,
                "padding": counts["pad"] / max(counts["pad"] + counts["tokens"], 1),
            }
            metrics.write(last, f"step {done}", loss=f"{last['loss']:.4f}", acc=f"{last['step_accuracy']:.3f}")
        if evals and (done % eval_every == 0 or done == cfg.max_steps):
            evaluated = evaluate_rows(net, *evals, tokenizer, cfg.batch_size, dev)
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
    model.eval()
    return TrainResult(model, tokenizer, cfg.max_steps - start, seconds, tokens_total, last)
