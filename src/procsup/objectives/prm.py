"""Process reward model losses: a step's label sits on its boundary token, nowhere else.

The boundary token of step t is the last token of ``action_t + step_sep`` (:func:`step_boundaries`),
the same position where :mod:`procsup.models.prm` reads the step's score. Hard labels (bool) train a
2-class token-classification head with cross-entropy; soft labels (floats in [0, 1], e.g. Monte Carlo
estimates as in Math-Shepherd, Wang et al. 2024) train a 1-logit head with binary cross-entropy. An
outcome reward model is the same with only the last step labelled.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from procsup.data.tokenize import Row, step_boundaries
from procsup.data.trajectory import Label


def place_step_labels(row: Row, labels: Sequence[Label | None]) -> list[tuple[int, float]]:
    """``(position, label)`` for each labelled step of ``row``: the one rule used by training and scoring.

    Labels are kept as numbers (True -> 1.0), never cast to bool: an unlabelled step (None) gets no
    position at all rather than a sentinel that a cast could turn into True.
    """
    bounds = step_boundaries(row)
    if len(bounds) != len(labels):
        raise ValueError(f"{len(labels)} labels for a row with {len(bounds)} steps")
    return [(pos, float(lab)) for pos, lab in zip(bounds, labels) if lab is not None]


def label_tensors(rows: Sequence[Row], labels: Sequence[Sequence[Label | None]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token targets for a right-padded batch: values (B, T) float and mask (B, T) bool (True at the
    boundary tokens of labelled steps)."""
    values = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, labs) in enumerate(zip(rows, labels)):
        for pos, lab in place_step_labels(row, labs):
            values[i, pos] = lab
            mask[i, pos] = True
    return values, mask


def prm_loss(logits: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`step_loss` on a full logits tensor: logits (B, T, C), values and mask (B, T) from
    :func:`label_tensors`."""
    return step_loss(logits[mask], values[mask])


def step_loss(picked: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean loss over labelled steps, and step accuracy (score >= 0.5 vs label >= 0.5).

    picked (N, 2) for hard labels (cross-entropy; targets must be 0 or 1) or (N, 1) for soft labels
    (binary cross-entropy with the value as target): the logits at the N labelled boundaries, in the order
    of ``mask.nonzero()`` (what :class:`procsup.models.positions.PositionReader` returns); target (N,).
    """
    picked = picked.float()
    if picked.size(-1) == 2:
        if not torch.all((target == 0) | (target == 1)):
            raise ValueError("a 2-class PRM head needs hard labels (0 or 1); use a 1-logit head for soft labels")
        loss = F.cross_entropy(picked, target.long())
        prob = picked.softmax(-1)[:, 1]
    elif picked.size(-1) == 1:
        loss = F.binary_cross_entropy_with_logits(picked[:, 0], target)
        prob = picked[:, 0].sigmoid()
    else:
        raise ValueError(f"a PRM head has 1 or 2 outputs, got {picked.size(-1)}")
    accuracy = ((prob >= 0.5) == (target >= 0.5)).float().mean()
    return {"loss": loss, "step_accuracy": accuracy.detach(), "n_steps": torch.tensor(float(target.numel()))}
