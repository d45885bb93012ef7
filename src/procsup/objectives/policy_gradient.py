"""Policy-gradient losses, as pure functions of log-probabilities and advantages (advantages are constants).

:func:`policy_gradient_loss` is the token-level loss of PPO/GRPO-style trainers (Schulman et al. 2017,
"Proximal Policy Optimization Algorithms"; Shao et al. 2024, DeepSeekMath, section 4.1): a clipped
importance ratio against the sampling policy and an optional KL penalty to a reference model. Its
normalisation is "token-level" (DAPO, Yu et al. 2025; TRL's ``loss_type="dapo"``): the per-token terms are
summed over every unmasked token of the batch and divided by their number, so a long sequence weighs as
many tokens as it has (GRPO's original per-sequence mean lets a long wrong answer be penalised less per
token).

:func:`reinforce_loss` is the episode-level REINFORCE estimate (Williams 1992) that
:mod:`procsup.rl.reinforce` minimises: one advantage per episode, all episodes' steps flattened, the sum
over steps divided by the number of episodes.
"""

from __future__ import annotations

import torch


def policy_gradient_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    ref_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Token-level clipped policy-gradient loss with an optional KL penalty; the mean over unmasked tokens.

    logps (B, T): log-probabilities of the taken tokens under the policy being trained (with gradient);
    advantages (B, T): one per token, constants (no gradient flows into them); mask (B, T) bool or 0/1:
    the tokens that count (the model's own tokens, not the prompt or padding).
    old_logps (B, T): the sampling policy's log-probabilities. The per-token objective is PPO's
    ``min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A)`` with ``ratio = exp(logps - old_logps)``;
    without old_logps the sample is on-policy, ``old_logps = logps.detach()`` (ratio 1, nothing clipped,
    gradient ``A * grad logps``; the value of ``pg_loss`` is then ``-mean(A)``, as in TRL's GRPO).
    ref_logps (B, T): a reference model's log-probabilities; the penalty per token is the k3 estimator of
    KL(policy || ref), ``exp(ref - logps) - (ref - logps) - 1`` (Schulman 2020; GRPO's eq. 4), weighted by
    ``kl_coef``.

    Returns ``loss`` (what is minimised: ``pg_loss + kl_coef * kl``), and detached for logging ``pg_loss``
    (the mean of ``-objective``), ``kl`` (mean k3; 0 without ref_logps) and ``clip_fraction`` (share of
    tokens whose clipped term was the smaller one, so that they give no gradient).
    """
    if kl_coef != 0.0 and ref_logps is None:
        raise ValueError("kl_coef is set but no ref_logps were given")
    mask = mask.bool()
    advantages = advantages.detach()
    old_logps = logps.detach() if old_logps is None else old_logps.detach()
    ratio = torch.exp(logps - old_logps)  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages  # (B, T)
    pg = -torch.min(unclipped, clipped)  # (B, T)
    if ref_logps is None:
        kl = torch.zeros_like(pg)  # (B, T)
    else:
        delta = ref_logps.detach() - logps  # (B, T)
        kl = torch.exp(delta) - delta - 1  # (B, T), >= 0
    n_tokens = mask.sum().clamp(min=1)

    def token_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, torch.zeros_like(x)).sum() / n_tokens  # where, not *: a masked inf stays out

    pg_loss, kl_mean = token_mean(pg), token_mean(kl)
    return {
        "loss": pg_loss + kl_coef * kl_mean,
        "pg_loss": pg_loss.detach(),
        "kl": kl_mean.detach(),
        "clip_fraction": token_mean((clipped < unclipped).float()).detach(),
    }


def reinforce_loss(step_logps: torch.Tensor, step_episode: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``-(1/B) sum_i A_i sum_t log pi(a_it | s_it)``, whose gradient is the REINFORCE estimate.

    step_logps (N,) log-probabilities of the taken actions, all episodes' steps concatenated;
    step_episode (N,) long, the episode of each step; advantages (B,) = R - b, constants (no gradient).
    """
    return -(advantages.detach()[step_episode] * step_logps).sum() / advantages.numel()
