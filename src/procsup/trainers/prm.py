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

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from procsup.data.batch import collate
from procsup.data.io import read_jsonl
from procsup.data.tokenize import StepFormat, tokenize_many
from procsup.data.trajectory import Trajectory, TrajectoryError
from procsup.models.positions import PositionReader
from procsup.models.prm import build_prm
from procsup.models.saved import SavedFormat
from procsup.objectives.prm import label_tensors, step_loss
from procsup.trainers.loop import MetricsLog, TrainResult, global_batch, save_checkpoint, start_run
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


def train_prm(cfg: PRMConfig, *, model=None, tokenizer=None, trajectories: Sequence[Trajectory] | None = None,
              accelerator: Accelerator | None = None) -> TrainResult:
    """Train a PRM (``cfg.model`` loaded as a token classifier, or a model object) on labelled trajectories."""
    accelerator = accelerator or Accelerator()
    if model is None:
        if cfg.model is None:
            raise ValueError("no model: set PRMConfig.model to a local model directory or pass model=")
        model = build_prm(cfg.model, soft=cfg.soft, seed=cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
    if trajectories is None:
        if cfg.train_file is None:
            raise ValueError("no data: set PRMConfig.train_file or pass trajectories=")
        trajectories = read_jsonl(cfg.train_file, rejects=cfg.rejects_file)
    if not trajectories:
        raise ValueError("no training trajectories")
    check_labels(trajectories, cfg.soft)
    rows = tokenize_many(trajectories, tokenizer, cfg.step_format, "steps")
    labels = [t.labels for t in trajectories]
    lengths = tuple(len(r.input_ids) for r in rows) if cfg.group_by_length else None
    world, rank = accelerator.num_processes, accelerator.process_index
    per_proc, optimizer, scheduler, start = start_run(accelerator, model, cfg)
    # the reader, not the model, is what accelerate wraps: every parameter's gradient flows through its forward
    net, optimizer = accelerator.prepare(PositionReader(model, sparse=cfg.sparse_last_block), optimizer)
    net.train()

    saved = SavedFormat("prm", cfg.step_format, "steps")  # the checkpoints' procsup.json
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train-prm", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_local_main_process))
    t0, last, tokens_total = time.perf_counter(), {}, 0
    metrics = MetricsLog(cfg.output_dir, bar, main_process=accelerator.is_main_process)
    for step in range(start, cfg.max_steps):
        idx = global_batch(len(rows), cfg.batch_size, step, cfg.seed, lengths)[rank * per_proc : (rank + 1) * per_proc]
        chunk = [rows[i] for i in idx]
        batch = collate(chunk, tokenizer.pad_token_id)
        values, mask = label_tensors(chunk, [labels[i] for i in idx], batch["input_ids"].size(1))
        dev = accelerator.device
        rows_at, cols_at = mask.nonzero(as_tuple=True)
        picked = net(batch["input_ids"].to(dev), batch["attention_mask"].to(dev), rows_at.to(dev), cols_at.to(dev))
        terms = step_loss(picked, values[mask].to(dev))  # picked (N, C): the labelled boundaries
        accelerator.backward(terms["loss"])
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n_tok = int(batch["attention_mask"].sum()) * world  # equal slices: an estimate without a sync
        tokens_total += n_tok
        metrics.add(samples=len(chunk) * world, tokens=n_tok, pad=int((1 - batch["attention_mask"]).sum()) * world)
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
        bar.update(1)
        if cfg.save_steps and done % cfg.save_steps == 0 and done != cfg.max_steps:
            save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, done, saved=saved)
    bar.close()
    seconds = time.perf_counter() - t0
    save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, cfg.max_steps, saved=saved)
    model.eval()
    return TrainResult(model, tokenizer, cfg.max_steps - start, seconds, tokens_total, last)
