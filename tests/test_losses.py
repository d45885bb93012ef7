"""The token-level policy-gradient loss and the action-head step loss equal hand-computed numbers
(values and gradients), as torchtune's PPO loss tests do."""

from __future__ import annotations

import math

import pytest
import torch

from procsup.objectives.pal import action_head_loss
from procsup.objectives.policy_gradient import policy_gradient_loss


def test_on_policy_loss_is_minus_the_token_mean_of_the_advantages():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)  # (B, T)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])  # (B, T)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the last token of row 1 is padding
    terms = policy_gradient_loss(logps, advantages, mask)
    # ratio = exp(logp - logp.detach()) = 1: pg per token = -A = -1, -1, -1, 2, 2; 5 tokens: (-3 + 4) / 5 = 0.2
    assert terms["loss"].item() == pytest.approx(0.2)
    assert terms["pg_loss"].item() == pytest.approx(0.2)
    assert terms["kl"].item() == 0.0 and terms["clip_fraction"].item() == 0.0
    terms["loss"].backward()
    # d/dlogp of -ratio * A / 5 = -A / 5 on the mask, 0 on padding
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.2, -0.2, -0.2], [0.4, 0.4, 0.0]]))


def test_clipped_ratio_against_the_sampling_policy():
    # eps = 0.2; ratios 1.5, 1.5, 0.5, 0.5 (old logps 0)
    logps = torch.tensor([[math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)]], requires_grad=True)
    old = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    terms = policy_gradient_loss(logps, advantages, torch.ones(1, 4), old_logps=old, clip_eps=0.2)
    # token 0: min(1.5 * 1, 1.2 * 1) = 1.2, clipped     -> pg -1.2, no gradient
    # token 1: min(1.5 * -1, 1.2 * -1) = -1.5, unclipped -> pg 1.5, d/dlogp = -A * ratio = 1.5
    # token 2: min(0.5 * -1, 0.8 * -1) = -0.8, clipped  -> pg 0.8, no gradient
    # token 3: min(0.5 * 2, 0.8 * 2) = 1.0, unclipped   -> pg -1.0, d/dlogp = -2 * 0.5 = -1.0
    # mean over 4 tokens: (-1.2 + 1.5 + 0.8 - 1.0) / 4 = 0.025; clipped 2 of 4
    assert terms["loss"].item() == pytest.approx(0.025, abs=1e-6)
    assert terms["clip_fraction"].item() == 0.5
    terms["loss"].backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, 1.5 / 4, 0.0, -1.0 / 4]]))


def test_k3_kl_penalty_to_a_reference():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0]])
    terms = policy_gradient_loss(logps, torch.zeros(1, 2), torch.ones(1, 2), ref_logps=ref, kl_coef=0.1)
    # delta = ref - logp = 0, 1; k3 = exp(delta) - delta - 1 = 0, e - 2; mean (e - 2) / 2
    assert terms["kl"].item() == pytest.approx((math.e - 2) / 2)
    assert terms["pg_loss"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(0.1 * (math.e - 2) / 2)
    terms["loss"].backward()
    # d k3 / d logp = 1 - exp(delta) = 0, 1 - e; times kl_coef / 2 tokens
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, 0.1 * (1 - math.e) / 2]]))


def test_padding_values_do_not_enter_the_loss():
    logps, advantages = torch.tensor([[-1.0, -50.0]]), torch.tensor([[3.0, 1e9]])
    ref = torch.tensor([[-0.5, 40.0]])
    terms = policy_gradient_loss(logps, advantages, torch.tensor([[True, False]]), ref_logps=ref, kl_coef=0.5)
    # one token: pg = -3; k3 = exp(0.5) - 0.5 - 1
    assert terms["pg_loss"].item() == pytest.approx(-3.0)
    assert terms["kl"].item() == pytest.approx(math.exp(0.5) - 1.5)
    empty = policy_gradient_loss(logps, advantages, torch.zeros(1, 2, dtype=torch.bool))
    assert empty["loss"].item() == 0.0  # no token: 0, not nan


def test_kl_coef_needs_a_reference():
    with pytest.raises(ValueError, match="ref_logps"):
        policy_gradient_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), kl_coef=0.1)


def test_action_head_loss():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]], requires_grad=True)  # (B, A)
    actions = torch.tensor([1, 1])
    terms = action_head_loss(logits, actions, lam=0.5)
    # softmax rows: (1/4, 3/4) and (3/4, 1/4); CE = -log(3/4), -log(1/4); mean (log(4/3) + log 4) / 2
    ce = (math.log(4 / 3) + math.log(4)) / 2
    assert terms["loss_steps"].item() == pytest.approx(ce)
    assert terms["loss"].item() == pytest.approx(0.5 * ce)
    assert terms["step_accuracy"].item() == 0.5  # argmax 1 and 0, both targets 1
    terms["loss"].backward()
    # d CE / d logits = p - onehot, times lam / B
    expected = 0.5 / 2 * torch.tensor([[0.25, 0.75 - 1], [0.75, 0.25 - 1]])
    torch.testing.assert_close(logits.grad, expected)
