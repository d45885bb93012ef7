"""Choosing a setting on validation scores: the one rule of every bench that selects (``lr_grid``)."""

from __future__ import annotations

import math
import statistics


def nearest_one(factor: float) -> tuple[float, float]:
    """Sort key of factors: nearest 1 (in ratio) first, then the smaller."""
    return abs(math.log(factor)), factor


def choose(scores: dict[float, list[float]], tie_order=nearest_one) -> float:
    """The setting with the best (highest) mean validation score over seeds; a tie (within 1e-9) goes to the
    first in ``tie_order``: by default the factor nearest 1 (in ratio), then the smaller."""
    best = max(statistics.fmean(v) for v in scores.values())
    tied = [f for f, v in scores.items() if statistics.fmean(v) >= best - 1e-9]
    return min(tied, key=tie_order)


def selection_record(scores: dict[float, list[float]], default_lr: float, metric: str) -> dict:
    """The learning rate chosen from per-seed validation ``scores`` by factor (:func:`choose`), with what it was
    chosen on, as results.json records it."""
    from procsup.bench.report import stat

    chosen = choose(scores)
    return {"metric": metric, "default_lr": default_lr, "factors": list(scores),
            "learning_rates": [default_lr * f for f in scores], "val": {f"{f:g}": stat(v) for f, v in scores.items()},
            "chosen_factor": chosen, "chosen_lr": default_lr * chosen}
