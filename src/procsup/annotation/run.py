"""``procsup annotate``: label trajectories with Monte Carlo rollouts, first-error search or consensus,
append-only, resumable, sharded across processes.

What is labelled: the trajectories of ``input_file``, or (without one) the policy's own samples, one per
problem, on ``problems`` fresh problems of ``size`` of ``task``. The policy is a local causal LM saved with
its step format and mode (``procsup.json``, :func:`procsup.rollout.load_policy`); without a ``task`` the
file's targets are the answers (:class:`~procsup.annotation.answer_task.AnswerTask`, history mode).

Crash safety: each process writes its records to ``<output_file>.part<rank>of<world>``, one JSON line per
trajectory, flushed and fsynced before the next one. Trajectories are annotated in chunks of ``chunk_size``
(the unit of batching and of seeding: the seed of a chunk is derived from ``seed`` and its first index, so a
chunk gives the same records whenever it runs). On restart a part file's records are read back (a torn last
line, from a kill in mid-write, is cut off), and a chunk whose trajectories are all written is skipped; a
chunk that was cut is annotated again and only its missing records are written. A run killed with SIGKILL
at any moment and restarted thus writes exactly the records of an uninterrupted run. At the end the main
process merges the parts, in input order (``meta['annotation']['index']``), into ``output_file`` (written
atomically) and removes them.

Sharding (``accelerate launch``): process ``rank`` of ``world`` takes trajectories ``rank, rank + world, ...``
(:func:`shard`). Samples depend on the chunks, hence on the number of processes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from procsup.annotation.answer_task import AnswerTask
from procsup.annotation.consensus import consensus
from procsup.annotation.first_error import first_error_labels
from procsup.annotation.mc import mc_labels
from procsup.data.io import read_jsonl, write_records
from procsup.data.trajectory import Trajectory

METHODS = ("mc", "first-error", "consensus")
TASKS = ("addition", "grid", "logic", "word_problems")
"""Task names ``procsup annotate`` builds (the CLI maps each to its class)."""


@dataclass
class AnnotateConfig:
    """One annotation run (``procsup annotate key=value ...``): which policy labels which trajectories, how."""

    output_file: str
    """JSONL of labelled trajectories (and, while running, its ``.part<rank>of<world>`` files)."""
    method: str = "mc"
    """``mc`` (N completions per step), ``first-error`` (binary search, k completions per probe) or
    ``consensus`` (keep the labels two labelled files agree on: ``input_file`` and ``other_file``)."""
    policy: str | None = None
    """Local directory of the policy (a causal LM saved with ``procsup.json``). Needed by mc and first-error."""
    task: str | None = None
    """addition, grid, logic or word_problems: its checker judges answers (state mode also runs its executor).
    The caller builds the task object from this name and passes it to :func:`main` (the annotation floor does
    not import ``tasks/``; ``procsup annotate`` does it). None: the targets of ``input_file`` are the answers
    (:class:`~procsup.annotation.answer_task.AnswerTask`, history mode only)."""
    index_hints: bool = True
    """Addition only: the task's column letters, as the policy was trained (read by whoever builds the task)."""
    input_file: str | None = None
    """Trajectories to label (JSONL; their ``meta['answer']``, if present, is the trajectory's own answer).
    None: label the policy's own samples on fresh problems (``problems``, ``size``)."""
    other_file: str | None = None
    """consensus: the second labelled file (the same trajectories in the same order)."""
    problems: int = 100
    """Without input_file: how many problems to sample (one policy sample each)."""
    size: int = 3
    """Without input_file: problem size (digits, chain length, ...)."""
    n: int = 8
    """mc: completions per step (Math-Shepherd used 8)."""
    k: int = 8
    """first-error: completions per probed prefix (reused ones included)."""
    soft: bool = False
    """mc: write soft labels (the fraction of completions that succeed) instead of hard ones (any succeeds)."""
    agree: str = "step"
    """consensus: ``step`` (keep a step's label where both agree) or ``trajectory`` (keep a trajectory's
    labels where both put the first error at the same step)."""
    threshold: float = 0.5
    """consensus: a soft label or score counts as right above this."""
    temperature: float = 1.0
    """Sampling temperature of the completions (> 0: annotation needs samples)."""
    batch_size: int | None = None
    """Rows per generate call (None: the policy's default). Samples depend on it."""
    chunk_size: int = 16
    """Trajectories annotated together: one batch of rollouts, one seed, the unit of resuming."""
    seed: int = 0
    """Seeds problem sampling and every chunk's rollouts."""
    threads: int | None = None
    """Torch threads per process (None: torch's default)."""
    progress: bool = True
    """Progress bar (one per process)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None, got {self.task!r}")
        for name in ("problems", "size", "n", "k", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.agree not in ("step", "trajectory"):
            raise ValueError(f"agree must be step or trajectory, got {self.agree!r}")
        if self.method == "consensus":
            if self.input_file is None or self.other_file is None:
                raise ValueError("consensus needs input_file and other_file (two labelled files)")
        else:
            if self.policy is None:
                raise ValueError(f"{self.method} needs a policy (a local model directory)")
            if self.task is None and self.input_file is None:
                raise ValueError("without a task, input_file must give the trajectories and their target answers")


# --- sharding and the append-only record files ------------------------------------------------------------
def shard(count: int, rank: int, world: int) -> list[int]:
    """Indices of the trajectories process ``rank`` of ``world`` annotates: every ``world``-th from ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return list(range(rank, count, world))


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def part_path(output_file: str | Path, rank: int, world: int) -> Path:
    return Path(f"{output_file}.part{rank}of{world}")


def read_done(path: Path) -> dict[int, dict]:
    """The complete records of an append-only file by index; a torn last line (no newline) is cut off the file."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    records = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return {r["meta"]["annotation"]["index"]: r for r in records}


def append_record(f, record: dict) -> None:
    """One JSON line, flushed and fsynced: on disk whole before the next trajectory is written."""
    f.write((json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())


def merge_parts(output_file: str | Path, world: int, count: int) -> list[dict]:
    """Records of every part (and of an earlier merge in ``output_file``) in index order, written atomically to
    ``output_file``; the parts are then removed. Raises if an index is missing."""
    records = read_done(Path(output_file))
    for rank in range(world):
        records.update(read_done(part_path(output_file, rank, world)))
    missing = sorted(set(range(count)) - set(records))
    if missing:
        raise RuntimeError(f"{len(missing)} trajectories have no record (first: {missing[:5]})")
    ordered = [records[i] for i in range(count)]
    write_records(ordered, output_file)
    for rank in range(world):
        part_path(output_file, rank, world).unlink(missing_ok=True)
    return ordered


# --- the run ------------------------------------------------------------------------------------------------
def to_label(cfg: AnnotateConfig, policy) -> list[Trajectory]:
    """The trajectories this run labels, in order (the same in every process)."""
    from procsup.rollout import complete, start

    if cfg.input_file is not None:
        return read_jsonl(cfg.input_file)
    problems = policy.task.sample(cfg.seed, cfg.size, cfg.problems)
    return [ts[0] for ts in complete(policy, start(policy.task, problems), 1, seed=cfg.seed)]


def annotate(cfg: AnnotateConfig, policy, trajectories: Sequence[Trajectory], rank: int = 0, world: int = 1) -> dict:
    """Annotate this process's shard of ``trajectories`` into its part file, skipping what is already written.
    Returns counts and wall time of this call."""
    from tqdm import tqdm

    mine = shard(len(trajectories), rank, world)
    path = part_path(cfg.output_file, rank, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(path)
    done.update({i: r for i, r in read_done(Path(cfg.output_file)).items() if i in set(mine)})
    t0, written, rollouts = time.perf_counter(), 0, 0
    bar = tqdm(total=len(mine), initial=sum(i in done for i in mine), disable=not cfg.progress,
               desc=f"annotate {cfg.method} [{rank}/{world}]")
    with path.open("ab") as f:
        for chunk in chunks(mine, cfg.chunk_size):
            todo = [i for i in chunk if i not in done]
            if not todo:
                continue
            batch = [trajectories[i] for i in chunk]
            seed = cfg.seed * 1_000_003 + chunk[0]
            if cfg.method == "mc":
                out = mc_labels(policy, batch, cfg.n, seed, soft=cfg.soft)
            else:
                out = first_error_labels(policy, batch, cfg.k, seed)
            for i, traj in zip(chunk, out):
                if i in done:
                    continue
                record = Trajectory(traj.input, traj.target, traj.steps,
                                    {**traj.meta, "annotation": {**traj.meta["annotation"], "index": i}}).to_dict()
                append_record(f, record)
                done[i] = record
                written += 1
                rollouts += traj.meta["annotation"]["rollouts"]
                bar.update(1)
    bar.close()
    return {"rank": rank, "world": world, "written": written, "rollouts": rollouts, "seconds": time.perf_counter() - t0}


def _consensus(cfg: AnnotateConfig) -> dict:
    labelled, report = consensus(read_jsonl(cfg.input_file), read_jsonl(cfg.other_file), cfg.agree, cfg.threshold)
    write_records((t.to_dict() for t in labelled), cfg.output_file)
    return {"method": "consensus", **report.as_dict()}


def main(cfg: AnnotateConfig, task=None) -> dict:
    """Run the annotation (this process's shard under ``accelerate launch``), merge the parts on the main
    process, and return (and print) a one-line summary. ``task``: the task object named by ``cfg.task``
    (None with ``cfg.task=None``: the file's targets are the answers)."""
    if cfg.method == "consensus":
        summary = _consensus(cfg)
        print(json.dumps(summary))
        return summary
    import torch
    from accelerate import PartialState

    from procsup.rollout import load_policy

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    state = PartialState()
    given = read_jsonl(cfg.input_file) if cfg.input_file is not None else None
    if (task is None) != (cfg.task is None):
        raise ValueError(f"cfg.task is {cfg.task!r} but task={task!r}: pass the task object that cfg.task names")
    task = task if task is not None else AnswerTask(given or [])
    policy = load_policy(cfg.policy, task, temperature=cfg.temperature, batch_size=cfg.batch_size)
    policy.model.to(state.device)
    trajectories = given if given is not None else to_label(cfg, policy)
    summary = annotate(cfg, policy, trajectories, state.process_index, state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        merged = merge_parts(cfg.output_file, state.num_processes, len(trajectories))
        summary["records"] = len(merged)
        summary["rollouts_total"] = sum(r["meta"]["annotation"]["rollouts"] for r in merged)
    print(json.dumps({"method": cfg.method, **summary}))
    return summary
