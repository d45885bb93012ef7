"""Benchmark summaries: mean ± std over seeds, and tables as text or Markdown."""

from __future__ import annotations

import statistics


def stat(values: list[float | None]) -> dict | None:
    """Mean, population std and per-seed values over the seeds that have the value (None when none has)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "per_seed": vals}


def pct(s: dict | None) -> str:
    """A :func:`stat` of fractions as ``"mean ± std"`` in percent (``"n/a"`` for None)."""
    return "n/a" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def render(rows: list[list[str]], markdown: bool = False) -> str:
    """A table whose first row is the header: aligned text, or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
