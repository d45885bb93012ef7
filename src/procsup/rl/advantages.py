"""Advantages and returns, as pure functions of rewards: what a policy-gradient loss multiplies.

Group baselines (several samples of the same problem, G per group, rewards (N, G)):

* :func:`leave_one_out_baseline` / :func:`rloo_advantages`: each sample's baseline is the mean reward of
  the *other* G - 1 samples (RLOO, Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!";
  Ahmadian et al. 2024). Unbiased: a sample's baseline does not depend on its own reward.
* :func:`group_normalized_advantages`: GRPO's ``(r - mean) / (std + eps)`` over the group (Shao et al. 2024,
  DeepSeekMath, section 4.1.2).

Per-step rewards of a trajectory (rewards (B, S), a mask for rows with fewer than S steps):

* :func:`returns_to_go`: ``sum_{k >= t} gamma^(k-t) r_k``, the usual return from step t on;
* :func:`min_returns`: ``min_{k >= t} r_k``, the min-form credit assignment of PURE (Cheng et al. 2025,
  "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model Needs for Reasoning",
  arXiv 2504.15275): a step is worth the worst step still to come, which a PRM cannot be farmed through;
* :func:`softmin_rewards`: PURE's differentiable-in-form approximation (its section 3.2): each reward weighted by
  ``softmax(-r / T)`` over the trajectory's steps, then summed as usual (:func:`returns_to_go`); as
  ``T -> 0`` the first step's return tends to the trajectory's minimum.

A group's per-step returns become advantages with :func:`group_step_advantages` (the group's step returns
normalized together, or a leave-one-out baseline of the other samples' steps).

:func:`step_to_token` spreads per-step values over the tokens of each step, by the ``segment_ids`` of
:mod:`procsup.data.tokenize`, for :func:`procsup.objectives.policy_gradient.policy_gradient_loss`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from procsup.data.tokenize import ANSWER, STEP0


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (..., G) -> b (..., G): for each sample the mean reward of the others in its group (the last
    dimension); 0 when G == 1 (no other sample)."""
    g = rewards.size(-1)
    if g == 1:
        return torch.zeros_like(rewards)
    return (rewards.sum(-1, keepdim=True) - rewards) / (g - 1)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (..., G) -> ``r - leave_one_out_baseline(r)`` (..., G); equal to ``G / (G - 1) * (r - mean)``."""
    return rewards - leave_one_out_baseline(rewards)


def group_normalized_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """rewards (..., G) -> ``(r - mean) / (std + eps)`` (..., G) over each group (the last dimension).

    ``std`` is the sample standard deviation (Bessel-corrected, divided by G - 1: ``torch.std``'s default,
    as TRL's GRPOTrainer, whose eps is also 1e-4). A group whose rewards are all equal gets 0. G >= 2.
    """
    if rewards.size(-1) < 2:
        raise ValueError(f"a group needs at least 2 samples to be normalized, got {rewards.size(-1)}")
    mean = rewards.mean(-1, keepdim=True)  # (..., 1)
    std = rewards.std(-1, keepdim=True)  # (..., 1), correction=1
    return (rewards - mean) / (std + eps)


def pad_steps(values: Sequence[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One list of per-step values per row -> values (B, S) float, zero-padded, and mask (B, S) bool;
    S = the longest list (at least 1)."""
    width = max((len(v) for v in values), default=0) or 1
    padded = torch.zeros(len(values), width)
    mask = torch.zeros(len(values), width, dtype=torch.bool)
    for i, v in enumerate(values):
        padded[i, : len(v)] = torch.tensor(list(v), dtype=torch.float)
        mask[i, : len(v)] = True
    return padded, mask


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """rewards (B, S), mask (B, S) bool (True on a row's steps, a prefix) -> returns (B, S):
    ``R_t = sum_{k >= t, mask} gamma^(k-t) r_k``; 0 where the mask is False."""
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.size(1))):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return torch.where(mask, returns, torch.zeros_like(returns))


def min_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rewards (B, S), mask (B, S) bool -> ``min_{k >= t, mask} r_k`` (B, S) (PURE's min-form return);
    0 where the mask is False."""
    big = torch.full_like(rewards, float("inf"))
    kept = torch.where(mask, rewards, big)  # a padded step never is the minimum
    suffix_min = kept.flip(1).cummin(1).values.flip(1)  # (B, S)
    return torch.where(mask, suffix_min, torch.zeros_like(suffix_min))


def softmin_rewards(rewards: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """rewards (B, S), mask (B, S) bool -> ``r_t * softmax(-r / T)_t`` over each row's steps (B, S); 0 where the
    mask is False. PURE's reward transform (Cheng et al. 2025, section 3.2): summed from step t on
    (:func:`returns_to_go`), step 0's return is the softmin-weighted mean of the rewards, which tends to their
    minimum as ``T -> 0`` and to their mean as ``T -> inf``; a later step's return is the part of that sum
    still to come (about 0 once the worst step is behind it, for small T)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = torch.where(mask, -rewards / temperature, torch.full_like(rewards, float("-inf")))  # (B, S)
    weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row with no step: all -inf -> nan -> 0
    return torch.where(mask, weights * rewards, torch.zeros_like(rewards))


def group_step_advantages(
    returns: torch.Tensor, mask: torch.Tensor, group_size: int, how: str = "grpo", eps: float = 1e-4
) -> torch.Tensor:
    """Per-step returns of G samples per problem -> per-step advantages (B, S), 0 where the mask is False.

    returns (B, S), mask (B, S) bool, B = N * G with a problem's G samples adjacent (as
    :func:`procsup.rollout.complete` returns them, flattened). Every valid step of every sample of a group
    enters one pool:

    * ``grpo``: ``(R - mean) / (std + eps)``, mean and sample std over the pool (the process-supervision
      variant of GRPO normalizes all the group's step rewards together: Shao et al. 2024, section 4.1.3);
      a pool of fewer than 2 steps, or of equal returns, gives 0;
    * ``rloo``: ``R - mean`` of the *other* samples' steps in the pool (a sample's own returns never enter
      its baseline; 0 baseline if the others have no step).
    """
    if how not in ("grpo", "rloo"):
        raise ValueError(f"how must be grpo or rloo, got {how!r}")
    b, s = returns.shape
    if group_size < 1 or b % group_size:
        raise ValueError(f"{b} rows are not groups of {group_size}")
    m = mask.to(returns.dtype)
    r = torch.where(mask, returns, torch.zeros_like(returns)).view(-1, group_size, s)  # (N, G, S)
    m = m.view(-1, group_size, s)
    own_sum, own_n = r.sum(-1), m.sum(-1)  # (N, G)
    pool_sum, pool_n = own_sum.sum(-1, keepdim=True), own_n.sum(-1, keepdim=True)  # (N, 1)
    if how == "grpo":
        mean = pool_sum / pool_n.clamp(min=1)  # (N, 1)
        sq = (((r - mean[..., None]) ** 2) * m).sum((-1, -2))[:, None]  # (N, 1)
        std = (sq / (pool_n - 1).clamp(min=1)).sqrt()
        adv = (r - mean[..., None]) / (std[..., None] + eps)  # (N, G, S)
        adv = torch.where((pool_n >= 2)[..., None], adv, torch.zeros_like(adv))
    else:
        others_n = pool_n - own_n  # (N, G)
        baseline = torch.where(others_n > 0, (pool_sum - own_sum) / others_n.clamp(min=1), torch.zeros_like(own_sum))
        adv = r - baseline[..., None]
    adv = adv.reshape(b, s)
    return torch.where(mask, adv, torch.zeros_like(adv))


def step_to_token(
    step_values: torch.Tensor, segment_ids: torch.Tensor, answer_values: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step values (e.g. advantages) spread over the tokens of each step: values (B, T), mask (B, T) bool.

    step_values (B, S): the value of step t of row b at [b, t] (:func:`pad_steps` pads lists);
    segment_ids (B, T) from :mod:`procsup.data.tokenize` (PROMPT 0, ANSWER 1, STEP0 + t for step t's tokens,
    its separator included; padding is PROMPT). For next-token log-probs (B, T - 1), pass
    ``segment_ids[:, 1:]``, the segments of the predicted tokens, as :func:`procsup.objectives.pal.pal_loss`
    does. Step t's tokens get ``step_values[b, t]``. ANSWER tokens get ``answer_values[b]`` (B,), e.g. the
    outcome advantage or the last step's value; with ``answer_values=None`` they are left out of the mask,
    as are PROMPT tokens (value 0). A row whose segment ids name a step t >= S is an error.
    """
    step = segment_ids - STEP0  # (B, T): step index, negative for PROMPT and ANSWER
    is_step = step >= 0  # (B, T)
    if is_step.any() and int(step.max()) >= step_values.size(1):
        raise ValueError(f"segment_ids name step {int(step.max())}, but step_values has {step_values.size(1)} steps")
    if step_values.size(1) == 0:
        values = torch.zeros(segment_ids.shape, dtype=step_values.dtype, device=step_values.device)
    else:
        values = step_values.gather(1, step.clamp(min=0))  # (B, T); PROMPT/ANSWER read step 0, overwritten below
    values = torch.where(is_step, values, torch.zeros_like(values))
    mask = is_step
    if answer_values is not None:
        is_answer = segment_ids == ANSWER  # (B, T)
        values = torch.where(is_answer, answer_values.to(values.dtype)[:, None], values)
        mask = mask | is_answer
    return values, mask
