"""The kit every trainer shares: data order, optimizer, run start, checkpoints and a metrics log.

Small free functions, no base class: each trainer (:mod:`~procsup.trainers.pal`, :mod:`~procsup.trainers.prm`,
:mod:`~procsup.trainers.action_head`, :mod:`procsup.rl.reinforce`) writes its own loop top to bottom and
calls these. The data order is a pure function of (seed, step) (:func:`global_batch`), which makes resuming
exact and makes N processes with a global batch B equal to one process with batch B (each process takes a
contiguous slice of the same global batch; DDP averages the gradients).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from procsup.data.tokenize import Row, check_length
from procsup.data.trajectory import Trajectory
from procsup.models.saved import FORMAT_FILE, SavedFormat, write_format, write_model_card

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


SCHEDULES = ("cosine", "constant")
"""Learning-rate schedules after the linear warm-up: cosine decay to 0 at max_steps, or constant."""


def make_optimizer(model, cfg, schedule: str = "cosine") -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (weight decay on matrices only) and linear warm-up then ``schedule`` (:data:`SCHEDULES`: cosine
    decay to 0, or constant). ``cfg`` has learning_rate, weight_decay, warmup_steps and max_steps."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )
    if schedule == "constant":
        return optimizer, get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)


# --- the output folder: one run at a time, never someone else's files --------------------------------------
LOCK_FILE = ".procsup.lock"
"""In ``output_dir`` while a run writes there: ``{"pid", "host", "started"}``, created with O_EXCL."""
TMP_PREFIX = ".tmp-checkpoint-"
"""A checkpoint being written: ``.tmp-checkpoint-<step>-<pid>`` (two runs never share one), renamed when complete."""
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"

#: Fields a resumed run may change: where things go, what is shown, how often it logs or saves, and settings
#: of the same math (gradient checkpointing, the sparse last block). The data file is compared by its hash.
RESUMABLE_CHANGES = frozenset({
    "output_dir", "resume", "overwrite", "progress", "log_steps", "save_steps", "save_total_limit", "model",
    "train_file", "rejects_file", "eval_file", "eval_steps", "report_to", "gradient_checkpointing",
    "sparse_last_block",
})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_lock(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def acquire_lock(lock: Path, what: str) -> Path:
    """Create the lock file ``lock`` atomically (O_EXCL) or raise a one-line ValueError naming its holder;
    ``what`` names the locked thing in that message (``output_dir <path>``). A lock left by a dead process of
    this host is taken over with a warning."""
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is None:  # being written this instant, or a crash mid-write: stale once it is old
                try:
                    fresh = time.time() - lock.stat().st_mtime < 60
                except FileNotFoundError:
                    continue
                if fresh:
                    raise ValueError(f"{what} is in use (lock file {lock}); wait for that run, "
                                     "or use another output_dir") from None
                log.warning("removing the unreadable lock file %s (older than a minute)", lock)
            elif holder.get("host") == host and not _pid_alive(holder["pid"]):
                log.warning("taking over the stale lock %s of pid %d (no longer running)", lock, holder["pid"])
            else:
                raise ValueError(f"{what} is in use by pid {holder['pid']} on host {holder.get('host')} "
                                 f"(lock file {lock}); wait for that run to end, or use another output_dir") from None
            # two runs taking over the same stale lock: only one of them creates the next one (O_EXCL)
            if _read_lock(lock) == holder:
                lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        return lock
    raise ValueError(f"{what}: could not take the lock file {lock}; another run is starting there")


def release_lock(lock: Path) -> None:
    holder = _read_lock(lock)
    if holder is not None and holder["pid"] == os.getpid():
        lock.unlink(missing_ok=True)


def _checkpoint_state(path: Path) -> dict | None:
    """The ``trainer_state.json`` of a checkpoint folder written by procsup (it has ``step`` and ``config``),
    else None: a Hugging Face Trainer's ``checkpoint-1/`` has a trainer_state.json of another shape."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and isinstance(state.get("step"), int) and isinstance(state.get("config"), dict)
    return state if ok else None


def checkpoints(output_dir: Path, run_id: str | None = None) -> list[Path]:
    """procsup's checkpoints in ``output_dir``, oldest first; with ``run_id``, only those that run wrote."""
    found = []
    for p in output_dir.glob("checkpoint-*"):
        if not (p.is_dir() and p.name.split("-")[-1].isdigit()):
            continue
        state = _checkpoint_state(p)
        if state is not None and (run_id is None or state.get("run_id") == run_id):
            found.append(p)
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"output_dir {out}: cannot create it ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output_dir {out} is not writable")


def _clear_for_overwrite(out: Path) -> None:
    """overwrite=true: remove what procsup runs write here (their checkpoints and ``metrics.jsonl``), keep
    everything else, and say what was kept."""
    for ckpt in checkpoints(out):
        shutil.rmtree(ckpt)
    (out / METRICS_FILE).unlink(missing_ok=True)
    kept = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if kept:
        log.warning("overwrite: kept %d file(s) in %s that procsup did not write: %s", len(kept), out, ", ".join(kept[:5]))


def _planned_steps(cfg) -> set[int]:
    every = range(cfg.save_steps, cfg.max_steps, cfg.save_steps) if cfg.save_steps else ()
    return {*every, cfg.max_steps}


def _claim(out: Path, cfg) -> Path:
    """The main process's checks, in order: a folder we may write, the lock, leftovers of dead runs, then
    what the folder holds (refused unless resume or overwrite)."""
    _check_folder(out)
    try:
        lock = acquire_lock(out / LOCK_FILE, f"output_dir {out}")
    except PermissionError:
        raise ValueError(f"output_dir {out} is not writable") from None
    try:
        # we hold the lock, so every temporary checkpoint here belongs to a run that died mid-save
        for tmp in out.glob(TMP_PREFIX + "*"):
            log.warning("removing %s, left by a run that stopped while saving", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        resume, overwrite = getattr(cfg, "resume", None), getattr(cfg, "overwrite", None)
        if resume is None:  # a trainer without checkpoints (action head): the lock and the checks above
            return lock
        entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
        if entries and not (resume or overwrite):
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ValueError(f"output_dir {out} is not empty ({shown}); set resume=true to continue the run in it, "
                             "overwrite=true to replace procsup's files in it, or choose another output_dir")
        if overwrite:
            _clear_for_overwrite(out)
        ours = {p.name for p in checkpoints(out)} if resume else set()
        clash = sorted(f"checkpoint-{s}" for s in _planned_steps(cfg) if (out / f"checkpoint-{s}").exists()
                       and f"checkpoint-{s}" not in ours)
        if clash:
            raise ValueError(f"output_dir {out} holds {clash[0]}, which procsup did not write and this run would "
                             "replace; move it, or choose another output_dir")
    except BaseException:
        release_lock(lock)
        raise
    return lock


@contextmanager
def claim_output_dir(accelerator, cfg) -> Iterator[None]:
    """Hold ``cfg.output_dir`` for one run: a folder (a file or an unwritable path is a one-line error),
    locked (a second run on it fails at once), with the temporary checkpoints of dead runs removed, and not
    holding another run's files unless ``cfg.resume`` or ``cfg.overwrite`` says what to do with them
    (trainers with checkpoints). The main process checks; under DDP every process raises its error."""
    out = Path(cfg.output_dir)
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = _claim(out, cfg)
        except ValueError as e:
            if accelerator.num_processes == 1:
                raise
            error = str(e)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
        if error is not None:
            raise ValueError(error)
    try:
        yield
    finally:
        if lock is not None:
            release_lock(lock)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_source(train_file: str | None) -> dict:
    """What a checkpoint records about its training data: the file and its sha256, or ``in-memory``."""
    if train_file is None:
        return {"source": "in-memory"}
    return {"train_file": str(train_file), "sha256": file_sha256(train_file)}


@dataclass
class Run:
    """One training run's identity: the checkpoints it writes carry ``run_id`` (a resumed run keeps the id
    of the run it continues), so that pruning never touches another run's checkpoints."""

    data: dict
    """:func:`data_source` of the training data."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


def start_run(accelerator, model, cfg, run: Run,
              schedule: str = "cosine") -> tuple[int, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int]:
    """What a checkpointed trainer (PAL, PRM) sets up before its loop, inside :func:`claim_output_dir`: the
    rows per process (the global batch split evenly), the optimizer and ``schedule`` (:func:`make_optimizer`),
    and the step to start from (with ``cfg.resume`` the newest checkpoint's, whose settings and data must be
    this run's; ``metrics.jsonl`` is cut back to it; else 0). ``cfg``: a
    :class:`~procsup.trainers.options.CheckpointOptions` with ``output_dir``."""
    world = accelerator.num_processes
    if cfg.batch_size % (world * cfg.gradient_accumulation_steps):
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes x "
                         f"gradient_accumulation_steps {cfg.gradient_accumulation_steps}")
    optimizer, scheduler = make_optimizer(model, cfg, schedule)
    start = load_checkpoint(model, optimizer, scheduler, cfg, run) if cfg.resume else 0
    if cfg.resume and accelerator.is_main_process:
        cut_metrics(Path(cfg.output_dir) / METRICS_FILE, start)
    accelerator.wait_for_everyone()
    return cfg.batch_size // world, optimizer, scheduler, start


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk: the rename that publishes a checkpoint
    must not land before its contents do (a power cut would leave a complete-looking, empty checkpoint)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _transformers_bars(show: bool) -> Iterator[None]:
    """transformers' own progress bars ("Writing model shards") only when the run shows progress; its global
    switch is restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not show:
            hf_logging.enable_progress_bar()


def save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, cfg, step: int, *, saved: SavedFormat,
                    run: Run, metrics: dict | None = None, extra_files: dict[str, Any] | None = None) -> None:
    """Write checkpoint-<step> atomically on the main process: into ``.tmp-checkpoint-<step>-<pid>``, every
    file and the folder fsynced, then renamed. ``cfg`` is a trainer config dataclass with output_dir,
    max_steps and save_total_limit; ``saved`` is what the model's ``procsup.json`` records (kind, step
    format, mode, base model, data), completed with ``metrics`` (the last logged line), and a model card
    ``README.md`` is written from it, so that the checkpoint loads and explains itself. Then the oldest
    checkpoints of this run beyond ``save_total_limit`` are removed (never another run's). ``extra_files``
    (file name -> JSON-able object) is a trainer's own state (RL's sample count and monitor history),
    written into the same temporary folder, so it is in the checkpoint exactly when the weights are."""
    for name in extra_files or {}:
        if Path(name).name != name or name in (STATE_FILE, FORMAT_FILE, "optimizer.pt"):
            raise ValueError(f"extra checkpoint file {name!r}: must be a plain file name, not one the checkpoint "
                             f"already writes")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(cfg.output_dir)
        final, tmp = out / f"checkpoint-{step}", out / f"{TMP_PREFIX}{step}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with _transformers_bars(cfg.progress):
            accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        saved = replace(saved, metrics=metrics or None)
        write_format(tmp, saved)
        write_model_card(tmp, saved, getattr(accelerator.unwrap_model(model), "config", None))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        _save_adapters(accelerator.unwrap_model(model), tmp)
        state = {"step": step, "max_steps": cfg.max_steps, "config": asdict(cfg), "run_id": run.run_id, "data": run.data}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=1))
        _fsync_tree(tmp)
        if final.exists():  # this run's own (a resumed run saving its last step again); others were refused at start
            if (_checkpoint_state(final) or {}).get("run_id") != run.run_id:
                shutil.rmtree(tmp)
                raise ValueError(f"{final} exists and was not written by this run; not replacing it")
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(out)
        for old in checkpoints(out, run.run_id)[: -cfg.save_total_limit or None]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_changes(recorded: dict, config: dict) -> list[str]:
    """The settings a resumed run would change, as ``field (old -> new)``: every recorded config field but
    :data:`RESUMABLE_CHANGES` (a field the checkpoint does not record, from an older procsup, is not
    compared)."""
    changed = []
    for name, value in config.items():
        if name in RESUMABLE_CHANGES or name not in recorded:
            continue
        old = recorded[name]
        if json.loads(json.dumps(value)) != old:  # tuples read back from JSON as lists
            changed.append(f"{name} ({old!r} -> {value!r})")
    return changed


def load_checkpoint(model, optimizer, scheduler, cfg, run: Run | None = None) -> int:
    """Load the newest checkpoint of ``cfg.output_dir`` into model, optimizer and schedule; its step (0:
    none). A checkpoint whose settings (mode, optimizer, schedule, seed, ...) or data (its sha256) differ
    from this run's is refused, naming each change; ``run`` then continues the checkpoint's run id."""
    ckpts = checkpoints(Path(cfg.output_dir))
    if not ckpts:
        return 0
    ckpt = ckpts[-1]
    state = _checkpoint_state(ckpt)
    changed = resume_changes(state["config"], asdict(cfg))
    if "max_steps" not in state["config"] and state.get("max_steps", cfg.max_steps) != cfg.max_steps:
        changed.append(f"max_steps ({state['max_steps']} -> {cfg.max_steps})")
    old_hash, new_hash = (state.get("data") or {}).get("sha256"), (run.data if run else {}).get("sha256")
    if old_hash and new_hash and old_hash != new_hash:
        changed.append(f"train_file content (sha256 {old_hash[:12]}... -> {new_hash[:12]}...)")
    if changed:
        raise ValueError(f"cannot resume from {ckpt}: this run changes {', '.join(changed)}; use the checkpoint's "
                         "settings and data, or start a new run (another output_dir, or overwrite=true)")
    if run is not None and state.get("run_id"):
        run.run_id = state["run_id"]
    restore_training_state(ckpt, model, optimizer, scheduler)
    log.info("resumed from %s (step %d)", ckpt, state["step"])
    return int(state["step"])


ADAPTERS_FILE = "adapters.safetensors"
"""In a LoRA run's checkpoint, beside the merged ``model.safetensors``: the adapters (and ``modules_to_save``)
under their names in the adapted model, which a resumed run loads onto its starting model."""


def _save_adapters(model, folder: Path) -> None:
    from procsup.models.lora import has_lora, trainable_state

    if has_lora(model):
        save_file(trainable_state(model), folder / ADAPTERS_FILE)


def restore_training_state(ckpt: Path, model, optimizer, scheduler) -> None:
    """Weights (safetensors; tied weights may be absent), optimizer and schedule of a checkpoint folder,
    loaded in place; a checkpoint that does not fit the model is an error naming the keys. A model with LoRA
    adapters (the run's starting model, adapted again by ``prepare_model``) gets the checkpoint's adapters:
    its base weights are frozen, so they are the starting model's."""
    from procsup.models.lora import has_lora, load_trainable_state

    if has_lora(model):
        if not (ckpt / ADAPTERS_FILE).is_file():
            raise ValueError(f"{ckpt}: no {ADAPTERS_FILE} (written by a procsup before LoRA runs could resume, "
                             f"or by a run without lora); start a new run")
        load_trainable_state(model, load_file(ckpt / ADAPTERS_FILE), str(ckpt))
    else:
        missing, unexpected = model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or {})
        if unexpected or set(missing) - tied:
            raise ValueError(f"{ckpt}: checkpoint does not fit the model (missing {sorted(set(missing) - tied)}, "
                             f"unexpected {sorted(unexpected)})")
    opt_state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(opt_state["optimizer"])
    scheduler.load_state_dict(opt_state["scheduler"])


class MetricsLog:
    """``output_dir/metrics.jsonl``, one JSON line per logged step, and the counts behind its rates.

    Between two lines a trainer adds what it processed (:meth:`add`, e.g. ``tokens=``, ``samples=``);
    :meth:`window` hands back those counts and the seconds they took, and starts a new window. :meth:`write`
    stops a run whose loss is not finite, appends the line (main process only: under DDP every process
    computes the same reduced line) and shows a few values on the progress bar.
    """

    def __init__(self, output_dir: str | Path, bar, *, main_process: bool = True, accelerator=None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.bar = bar
        self.main_process = main_process
        self.accelerator = accelerator
        """If set, every line also goes to its trackers (``report_to``): ``accelerator.log(line, step=)``."""
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
        """Append ``metrics``; a training line has a ``loss`` (an evaluation line ``eval_*`` values); ``at``
        names the step in the error (``"step 12"``)."""
        if "loss" in metrics and not math.isfinite(metrics["loss"]):  # reduced: the same on every process, all stop
            raise FloatingPointError(f"loss is {metrics['loss']} at {at}; lower learning_rate")
        if self.main_process:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        if self.accelerator is not None:
            self.accelerator.log({k: v for k, v in metrics.items() if k != "step"}, step=metrics.get("step"))
        if postfix:
            self.bar.set_postfix(**postfix)
        return metrics


def cut_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again), atomically."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            logged = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):  # a line cut by a crash mid-write
            continue
        if isinstance(logged, int) and logged <= step:
            kept.append(line)
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f"{TMP_PREFIX}metrics-{os.getpid()}")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
    log.info("resume: cut %s back to step %d (%d line(s) dropped)", path, step, len(lines) - len(kept))


# --- the expected features of a trainer: accumulation, dtype, checkpointing, trackers, evaluation ------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def micro_batches(idx: Sequence[int], accumulation: int) -> list[list[int]]:
    """This process's rows of a step split into ``accumulation`` contiguous micro-batches (equal sizes:
    :func:`start_run` checks that they divide)."""
    size = len(idx) // accumulation
    return [list(idx[i * size : (i + 1) * size]) for i in range(accumulation)]


def prepare_model(model, cfg) -> torch.nn.Module:
    """``cfg.dtype`` (float32 leaves the model as it is), ``cfg.lora`` (LoRA adapters injected in place with A
    drawn from ``cfg.seed``, everything else frozen, the state dict merged:
    :func:`procsup.models.lora.apply_lora`) and ``cfg.gradient_checkpointing`` (Hugging Face's
    ``activation_checkpointing_enable``, the transformers 5 name of ``gradient_checkpointing_enable``:
    activations recomputed in the backward pass, same gradients)."""
    if cfg.dtype != "float32":
        model = model.to(DTYPES[cfg.dtype])
    if cfg.lora.enabled:
        from procsup.models.lora import apply_lora

        apply_lora(model, cfg.lora, seed=cfg.seed)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def make_accelerator(cfg):
    """The trainer's own Accelerator: with ``report_to`` its trackers (logs under ``output_dir/logs``)."""
    from accelerate import Accelerator

    if cfg.report_to == "none":
        return Accelerator()
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "logs"))
    return Accelerator(log_with=cfg.report_to, project_config=project)


def start_trackers(accelerator, cfg, name: str):
    """``accelerator.init_trackers(name, config)`` when ``cfg.report_to`` asks for trackers; the accelerator
    for :class:`MetricsLog` (None: no trackers)."""
    if cfg.report_to == "none":
        return None
    if not accelerator.log_with:
        raise ValueError(f"report_to {cfg.report_to!r}: the Accelerator passed to the trainer has no trackers; "
                         "build it with log_with=, or let the trainer build its own")
    config = {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))}
    accelerator.init_trackers(name, config=config)
    return accelerator


def _record_lines(path: str | Path) -> list[int]:
    """The line number of each record of a JSONL file (its non-blank lines), as a strict read keeps them."""
    with open(path, "rb") as f:
        return [n for n, raw in enumerate(f, start=1) if raw.strip()]


def within_length(trajectories: Sequence[Trajectory], rows: list[Row], counts: Sequence[int], max_length: int | None,
                  *, train_file: str | None = None, rejects_file: str | None = None) -> tuple[list[Trajectory], list[Row]]:
    """The trajectories and rows to train on, given ``max_length`` (None: no limit); ``counts[i]`` is how many
    of ``rows`` trajectory i gave (in order). A trajectory with a longer row is an error naming it
    (``train_file:line``, or ``trajectory i`` for data passed in Python) or, with ``rejects_file``, appended
    there with its reason (``{"record": i, "error", "raw"}``) and left out whole: no step of it trains, rather
    than a row silently cut and its last labels dropped."""
    if max_length is None:
        return list(trajectories), rows
    owner = [i for i, count in enumerate(counts) for _ in range(count)]
    too_long = sorted({owner[r] for r, row in enumerate(rows) if len(row.input_ids) > max_length})
    if not too_long:
        return list(trajectories), rows
    if rejects_file is None:
        lines = _record_lines(train_file) if train_file is not None else None
        names = [f"{train_file}:{lines[i]}" if lines and len(lines) == len(counts) else f"trajectory {i}" for i in owner]
        check_length(rows, max_length, names)
    with Path(rejects_file).open("a", encoding="utf-8") as f:
        for i in too_long:
            longest = max(len(rows[r].input_ids) for r in range(len(rows)) if owner[r] == i)
            error = f"{train_file or 'data'}, trajectory {i}: {longest} tokens, longer than max_length {max_length}"
            f.write(json.dumps({"record": i, "error": error, "raw": json.dumps(trajectories[i].to_dict(), ensure_ascii=False)},
                               ensure_ascii=False) + "\n")
    log.warning("rejected %d trajectory(ies) longer than max_length %d (written to %s)", len(too_long), max_length,
                rejects_file)
    dropped = set(too_long)
    return ([t for i, t in enumerate(trajectories) if i not in dropped],
            [row for r, row in enumerate(rows) if owner[r] not in dropped])


def binary_auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve (ties count half; Mann-Whitney U), None when one class is missing."""
    pos = sum(positive)
    neg = len(positive) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(positive[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
