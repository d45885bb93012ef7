"""Behavior consistency (Kartik & Shah, 2025, section 3), as pure functions.

"If the same intermediate state can occur in multiple tasks, the model should behave consistently on
it": for steps whose states share a ``key`` within a batch, penalize the distance between the model's
representations at those steps (``hidden``: squared L2 between hidden states) or between its action
distributions (``action``: symmetric KL between next-token distributions). The loss is the mean over
all unordered pairs of steps with equal keys; a batch without such pairs contributes 0.
"""

from __future__ import annotations

import torch


def same_key_pairs(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j), i < j, of all pairs with ``keys[i] == keys[j]``; keys (N,) int, -1 = no key."""
    eq = (keys[:, None] == keys[None, :]) & (keys[:, None] >= 0)
    i, j = torch.triu_indices(len(keys), len(keys), offset=1, device=keys.device)
    keep = eq[i, j]
    return i[keep], j[keep]


def hidden_consistency(reps: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean ``||h_i - h_j||^2`` over same-key pairs. reps (N, D), keys (N,) -> scalar."""
    i, j = same_key_pairs(keys)
    if i.numel() == 0:
        return reps.sum() * 0.0
    return (reps[i] - reps[j]).pow(2).sum(-1).mean()


def action_consistency(logits: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean symmetric KL ``KL(p_i||p_j) + KL(p_j||p_i)`` over same-key pairs. logits (N, V) -> scalar."""
    i, j = same_key_pairs(keys)
    if i.numel() == 0:
        return logits.sum() * 0.0
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp_i, lp_j = logp[i], logp[j]
    return ((lp_i.exp() - lp_j.exp()) * (lp_i - lp_j)).sum(-1).mean()
