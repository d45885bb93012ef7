"""The kit every trainer shares: data order, optimizer, run start, checkpoints and a metrics log.

Small free functions, no base class: each trainer (:mod:`~procsup.trainers.pal`, :mod:`~procsup.trainers.prm`,
:mod:`~procsup.trainers.action_head`, :mod:`procsup.rl.reinforce`) writes its own loop top to bottom and
calls these. The data order is a pure function of (seed, step) (:func:`global_batch`), which makes resuming
exact and makes N processes with a global batch B equal to one process with batch B (each process takes a
contiguous slice of the same global batch; DDP averages the gradients).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import get_cosine_schedule_with_warmup

from procsup.models.saved import SavedFormat, save_format

log = logging.getLogger(__name__)


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


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, step: int, *, saved: SavedFormat) -> None:
    """Write checkpoint-<step> atomically (to a temporary folder, then renamed) on the main process.
    ``cfg`` is a trainer config dataclass with output_dir, max_steps and save_total_limit; ``saved`` is what
    the model's ``procsup.json`` records (kind, step format, mode), so that the checkpoint loads on its own."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(cfg.output_dir)
        final, tmp = out / f"checkpoint-{step}", out / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_format(tmp, saved.kind, saved.step_format, saved.mode)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        state = {"step": step, "max_steps": cfg.max_steps, "config": asdict(cfg)}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in _checkpoints(out)[: -cfg.save_total_limit or None]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(model, optimizer, scheduler, cfg) -> int:
    """Load the newest checkpoint of ``cfg.output_dir`` into model, optimizer and schedule; its step (0: none)."""
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


class MetricsLog:
    """``output_dir/metrics.jsonl``, one JSON line per logged step, and the counts behind its rates.

    Between two lines a trainer adds what it processed (:meth:`add`, e.g. ``tokens=``, ``samples=``);
    :meth:`window` hands back those counts and the seconds they took, and starts a new window. :meth:`write`
    stops a run whose loss is not finite, appends the line (main process only: under DDP every process
    computes the same reduced line) and shows a few values on the progress bar.
    """

    def __init__(self, output_dir: str | Path, bar, *, main_process: bool = True) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.bar = bar
        self.main_process = main_process
        self.counts: Counter[str] = Counter()
        self.since = time.perf_counter()

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def window(self) -> tuple[Counter[str], float]:
        """The counts added since the last call (a missing one reads 0) and the seconds since then."""
        now = time.perf_counter()
        counts, seconds = self.counts, max(now - self.since, 1e-9)
        self.counts, self.since = Counter(), now
        return counts, seconds

    def write(self, metrics: dict, at: str, **postfix: str) -> dict:
        """Append ``metrics`` (which has a ``loss``); ``at`` names the step in the error (``"step 12"``)."""
        if not math.isfinite(metrics["loss"]):  # a reduced value is the same on every process: all stop
            raise FloatingPointError(f"loss is {metrics['loss']} at {at}; lower learning_rate")
        if self.main_process:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        self.bar.set_postfix(**postfix)
        return metrics
