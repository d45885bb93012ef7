"""Benchmark summaries: mean ± std over seeds, tables as text (at most 80 columns) or Markdown, and the
line that says which runs were read back from the cache."""

from __future__ import annotations

import statistics
from pathlib import Path

WIDTH = 80


def stat(values: list[float | None]) -> dict | None:
    """Mean and **sample** std (n - 1; 0 for one value) over the seeds that have the value, and the per-seed
    values as given (None for a seed without it); None when no seed has it. The one spread statistic of
    every bench (before 2026-12-07 this returned the population std as ``std``; recorded JSONs of that time
    keep that key)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "sample_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "per_seed": list(values)}


def pct(s: dict | None) -> str:
    """A :func:`stat` of fractions as ``"mean ± sample std"`` in percent (``"n/a"`` for None)."""
    return "n/a" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['sample_std']:.1f}"


def render(rows: list[list[str]], markdown: bool = False) -> str:
    """A table whose first row is the header: aligned text, or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def fit_table(rows: list[list[str]], width: int = WIDTH, keys: int = 1) -> str:
    """:func:`render` as text, split into several tables of at most ``width`` columns when it is wider: each
    part repeats the first ``keys`` columns (the row names) and takes as many of the others as fit. A single
    column too wide to fit is cut with ``…``."""
    if len(render(rows)) and max(map(len, render(rows).splitlines())) <= width:
        return render(rows)
    key_rows = [r[:keys] for r in rows]
    key_width = max(map(len, render(key_rows).splitlines())) + 2
    parts, current, used = [], [], key_width
    for i in range(keys, len(rows[0])):
        col = max(len(r[i]) for r in rows) + 2
        if current and used + col > width:
            parts.append(current)
            current, used = [], key_width
        current.append(i)
        used += col
    if current:
        parts.append(current)
    tables = []
    for cols in parts:
        part = [r[:keys] + [r[i] for i in cols] for r in rows]
        tables.append("\n".join(line if len(line) <= width else line[: width - 1] + "…"
                                for line in render(part).splitlines()))
    return "\n\n".join(tables)


def cached_note(reused: list[str], total: int, wall_seconds: float) -> str:
    """``"all 3 runs cached (read back, not re-run): a, b, c"``, or the wall time and which runs were cached."""
    if total and len(reused) == total:
        return f"all {total} runs cached (read back, not re-run): {', '.join(reused)}"
    note = f"wall time {wall_seconds:.0f}s"
    if reused:
        note += f"; {len(reused)} of {total} runs cached (read back): {', '.join(reused)}"
    return note


def reused_runs(root, started: float) -> tuple[list[str], int]:
    """The runs under ``root`` whose ``eval.json`` (the cache of :mod:`procsup.bench.cache` and of the
    addition runs) was written before ``started`` (a ``time.time()``): the runs read back, not re-run; and
    the number of runs in all (those plus the ones written since)."""
    stamps = {str(p.parent.relative_to(root)): p.stat().st_mtime for p in Path(root).rglob("eval.json")}
    reused = sorted(name for name, t in stamps.items() if t < started)
    return reused, len(stamps)


def begin(threads: int, progress: bool, output_dir) -> Path:
    """Every benchmark's set-up before its first run: torch on ``threads`` threads, transformers quiet
    (:func:`quiet_transformers`), the output folder made. Returns the folder."""
    import torch

    torch.set_num_threads(threads)
    quiet_transformers(progress)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_facts() -> dict:
    """What every results JSON records beside its numbers, so a figure can be read with its conditions: the
    date (UTC), the machine, torch's thread count and ``OMP_WAIT_POLICY`` (spin-waiting made shared-machine
    training ~35x slower)."""
    import os
    import platform
    import time

    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}


def quiet_transformers(progress: bool) -> None:
    """A benchmark's output: transformers' warnings off (a reward model's new head is reported on every
    load), its bars ("Writing model shards" at every checkpoint) only with ``progress``."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if not progress:
        transformers.utils.logging.disable_progress_bar()
