"""The fields every trainer's config shares (optimizer, logging, checkpoints), with their checks.

``PALConfig``, ``PRMConfig`` and ``ActionHeadConfig`` inherit these and add their own fields; a trainer
changes a default by declaring the field again. Every config is keyword-only (``kw_only=True``), so a
subclass's required fields (``output_dir``) can follow these defaults. :func:`procsup.config.field_docs`
reads the docstrings of inherited fields too, so ``procsup <command> --help`` lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from procsup.models.lora import LoRAConfig

#: report_to values: "none", or one of accelerate's trackers (its LoggerType values).
TRACKERS = ("none", "all", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "aim", "swanlab")


@dataclass(kw_only=True)
class OptimizerOptions:
    """AdamW, its schedule, the data order's seed and logging: what every trainer here has."""

    learning_rate: float = 3e-4
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 0)."""
    batch_size: int = 32
    """Global batch size in rows (split evenly across processes); the trainer says what a row is."""
    max_steps: int = 1000
    """Optimizer steps."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay (matrices only)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    seed: int = 0
    """Seed of the data order, and of a new head's initialisation where the trainer builds one."""
    log_steps: int = 10
    """Write a metrics line every this many steps."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")


@dataclass(kw_only=True)
class CheckpointOptions(OptimizerOptions):
    """:class:`OptimizerOptions` and periodic, resumable checkpoints (PAL and PRM training)."""

    save_steps: int = 0
    """Checkpoint every this many steps (0: only at the end)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (oldest removed first)."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir if there is one. Its settings and data must be this
    run's (a changed mode, optimizer setting, seed or train_file content is an error naming each change);
    ``metrics.jsonl`` is cut back to its step."""
    overwrite: bool = False
    """Start afresh in a non-empty output_dir: procsup's own files there (checkpoints it wrote,
    ``metrics.jsonl``) are deleted first; any other file is kept, with a warning. Without resume or
    overwrite a non-empty output_dir is refused."""
    gradient_accumulation_steps: int = 1
    """Split each process's share of the batch into this many micro-batches, one backward pass each, and
    step once: the same update as the whole batch at once (batch_size stays the global batch), with less
    memory. batch_size must be divisible by processes x this."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """The model's weights and activations: float32, or bfloat16 (half the memory, coarser updates)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (Hugging Face's
    ``activation_checkpointing_enable``, formerly ``gradient_checkpointing_enable``): less memory, more
    compute, the same gradients."""
    eval_file: str | None = None
    """JSONL of held-out trajectories, evaluated every eval_steps (no gradient); logged in metrics.jsonl
    with an ``eval_`` prefix."""
    eval_steps: int = 0
    """Evaluate eval_file every this many steps (0: every log_steps); always at the last step."""
    report_to: str = "none"
    """Also send every metrics line to a tracker through accelerate: none, tensorboard, wandb, mlflow,
    trackio, comet_ml, clearml, dvclive, aim, swanlab, or all (that tracker's package must be installed;
    logs under output_dir/logs)."""
    max_length: int | None = None
    """Longest row in tokens; a longer one is an error naming its record (or, with rejects_file, a reject
    with its reason), never cut. Default: the model's max_position_embeddings, else no limit."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters (``lora.r=8 lora.alpha=16 lora.dropout=0 lora.target_modules=q_proj,v_proj``; r = 0, the
    default: off, the whole model trains). Only the adapters and ``lora.modules_to_save`` (a PRM's head
    ``score``) train; every checkpoint holds the merged weights under the plain keys, so it loads as any model
    (``load_model``, ``load_prm``, ``procsup score``); the adapters alone are not saved. Needs
    ``pip install 'procsup[real]'`` (peft). A LoRA run does not resume: its checkpoints have no adapters to
    resume from."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0, got {self.save_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in output_dir, or replace it")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps "
                             f"{self.gradient_accumulation_steps}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0, got {self.eval_steps}")
        if self.report_to not in TRACKERS:
            raise ValueError(f"report_to must be one of {', '.join(TRACKERS)}, got {self.report_to!r}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
