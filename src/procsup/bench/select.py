"""Choosing a setting on validation scores: the one rule of every bench that selects (``lr_grid``)."""

from __future__ import annotations

import math
import statistics


def choose(scores: dict[float, list[float]]) -> float:
    """The factor with the best mean validation score over seeds; a tie (within 1e-9) goes to the factor
    nearest 1 (in ratio), then to the smaller."""
    best = max(statistics.fmean(v) for v in scores.values())
    tied = [f for f, v in scores.items() if statistics.fmean(v) >= best - 1e-9]
    return min(tied, key=lambda f: (abs(math.log(f)), f))
