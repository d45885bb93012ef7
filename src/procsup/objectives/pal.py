"""The process-aligned learning loss (Kartik & Shah, 2025, section 3), as small pure functions.

For one example ``L_i = L_out + lambda * sum_t l(step_t)`` where ``L_out`` is the mean cross-entropy of
the answer tokens and ``l(step_t)`` the mean cross-entropy of step t's tokens (teacher-forced). Each
step counts once whatever its length; the batch loss is the mean of ``L_i`` over examples.
:func:`action_head_loss` is the same loss for a model with a separate action head (state mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from procsup.data.tokenize import ANSWER, PROMPT, STEP0


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each next token.

    logits (B, T, V), input_ids (B, T) -> nll (B, T-1), where nll[:, j] is the loss of token j+1.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view_as(targets)


def segment_means(nll: torch.Tensor, segments: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean nll per segment of each row.

    nll (B, T'), segments (B, T') int with PROMPT/ANSWER/STEP0+t (padding is PROMPT)
    -> means (B, S), present (B, S) bool; S = num_segments. Column 0 (PROMPT) is never a target.
    """
    sums = torch.zeros(nll.size(0), num_segments, dtype=nll.dtype, device=nll.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, segments, nll)
    counts.scatter_add_(1, segments, torch.ones_like(nll))
    present = counts > 0
    present[:, PROMPT] = False
    return sums / counts.clamp(min=1), present


def pal_loss(nll: torch.Tensor, segments: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """``L = mean_i [L_out_i + lam * sum_t l_i(step_t)]``, with each term for logging.

    nll (B, T') from :func:`token_nll`; segments (B, T') = segment_ids[:, 1:] (the target tokens' terms).
    Returns ``loss`` (what is minimised), ``loss_out`` and ``loss_steps`` (batch means of the two terms,
    ``loss_steps`` before the lambda weight) and ``step_nll`` (mean nll per supervised step, a diagnostic).
    """
    num_segments = int(segments.max().item()) + 1 if segments.numel() else STEP0
    means, present = segment_means(nll, segments, max(num_segments, STEP0))
    out = torch.where(present[:, ANSWER], means[:, ANSWER], torch.zeros_like(means[:, ANSWER]))  # (B,)
    step_terms = torch.where(present[:, STEP0:], means[:, STEP0:], torch.zeros_like(means[:, STEP0:]))  # (B, S-2)
    steps = step_terms.sum(dim=1)  # (B,)
    n_steps = present[:, STEP0:].sum()
    return {
        "loss": (out + lam * steps).mean(),
        "loss_out": out.mean().detach(),
        "loss_steps": steps.mean().detach(),
        "step_nll": (step_terms.sum() / n_steps.clamp(min=1)).detach(),
    }


def action_head_loss(logits: torch.Tensor, actions: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """State-mode PAL with a separate action head (section 3: "a classification loss there"):
    ``L = lam * mean_rows CE(head(s_t), a_t)``; every row is one step, so there is no outcome term.

    logits (B, A) of the head at the B steps' states, actions (B,) long, the taken action's index. Returns
    ``loss`` (what is minimised, lam included), ``loss_steps`` (mean step cross-entropy) and ``step_accuracy``
    (share of steps whose argmax is a_t).
    """
    logits = logits.float()
    loss_steps = F.cross_entropy(logits, actions)
    return {
        "loss": lam * loss_steps,
        "loss_steps": loss_steps.detach(),
        "step_accuracy": (logits.argmax(-1) == actions).float().mean(),
    }
