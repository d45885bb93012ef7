"""The fields every trainer's config shares (optimizer, logging, checkpoints), with their checks.

``PALConfig``, ``PRMConfig`` and ``ActionHeadConfig`` inherit these and add their own fields; a trainer
changes a default by declaring the field again. Every config is keyword-only (``kw_only=True``), so a
subclass's required fields (``output_dir``) can follow these defaults. :func:`procsup.config.field_docs`
reads the docstrings of inherited fields too, so ``procsup <command> --help`` lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
    """Continue from the newest checkpoint in output_dir if there is one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0, got {self.save_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
