"""Advantages and returns equal hand-computed numbers; step -> token puts each step's value on exactly the
tokens of that step (the invariant, checked on real tokenized rows)."""

from __future__ import annotations

import math

import pytest
import torch

from procsup.data.batch import collate
from procsup.data.tokenize import ANSWER, STEP0, StepFormat, tokenize_many
from procsup.rl.advantages import (
    group_normalized_advantages,
    leave_one_out_baseline,
    min_returns,
    pad_steps,
    returns_to_go,
    rloo_advantages,
    step_to_token,
)


def test_leave_one_out_per_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # (N=2 groups, G=3)
    # baseline = mean of the other two: row 0 (0+0)/2, (1+0)/2, (1+0)/2; row 1 (1+0)/2, (1+0)/2, (1+1)/2
    assert leave_one_out_baseline(rewards).tolist() == [[0.0, 0.5, 0.5], [0.5, 0.5, 1.0]]
    assert rloo_advantages(rewards).tolist() == [[1.0, -0.5, -0.5], [0.5, 0.5, -1.0]]
    # the same as G / (G - 1) * (r - mean): row 0, 3/2 * (1 - 1/3) = 1
    torch.testing.assert_close(rloo_advantages(rewards), 1.5 * (rewards - rewards.mean(-1, keepdim=True)))
    assert leave_one_out_baseline(torch.tensor([1.0])).tolist() == [0.0]  # G = 1: no other sample
    assert rloo_advantages(torch.tensor([[0.7]])).tolist() == [[pytest.approx(0.7)]]


def test_group_normalized_uses_the_sample_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # row 0: mean 1/2, sample std sqrt(4 * (1/2)^2 / 3) = sqrt(1/3); (r - mean) / std = +-(1/2) * sqrt(3)
    h = 0.5 * math.sqrt(3)
    torch.testing.assert_close(group_normalized_advantages(rewards, eps=0.0)[0], torch.tensor([h, -h, -h, h]))
    torch.testing.assert_close(
        group_normalized_advantages(rewards)[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (1 / math.sqrt(3) + 1e-4)
    )
    assert group_normalized_advantages(rewards)[1].tolist() == [0.0] * 4  # equal rewards: no signal
    with pytest.raises(ValueError, match="at least 2"):
        group_normalized_advantages(torch.tensor([[1.0]]))


def test_pad_steps():
    values, mask = pad_steps([[1.0, 2.0], [3.0], []])
    assert values.tolist() == [[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]


def test_returns_to_go_and_min_form():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 99.0]])  # row 1 has 2 steps; 99 is padding
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # row 0: 1+0+2, 0+2, 2; row 1: 3+4, 4, (padding) 0
    assert returns_to_go(rewards, mask).tolist() == [[3.0, 2.0, 2.0], [7.0, 4.0, 0.0]]
    # gamma 0.5, row 0: R2 = 2, R1 = 0 + 0.5 * 2 = 1, R0 = 1 + 0.5 * 1 = 1.5; row 1: R1 = 4, R0 = 3 + 2 = 5
    assert returns_to_go(rewards, mask, gamma=0.5).tolist() == [[1.5, 1.0, 2.0], [5.0, 4.0, 0.0]]

    prm = torch.tensor([[0.9, 0.2, 0.7], [0.5, 0.8, -5.0]])
    # min of the rewards from step t on: row 0 min(.9,.2,.7), min(.2,.7), .7; row 1 min(.5,.8), .8, padding 0
    torch.testing.assert_close(min_returns(prm, mask), torch.tensor([[0.2, 0.2, 0.7], [0.5, 0.8, 0.0]]))


def test_step_to_token_by_hand():
    P, A, S0, S1 = 0, ANSWER, STEP0, STEP0 + 1
    segments = torch.tensor([[P, P, S0, S0, S1, S1, A, A], [P, S0, S0, A, P, P, P, P]])  # (B, T); row 1 padded
    step_values = torch.tensor([[0.5, -1.0], [2.0, 0.0]])  # (B, S)
    values, mask = step_to_token(step_values, segments, answer_values=torch.tensor([9.0, 7.0]))
    assert values.tolist() == [[0, 0, 0.5, 0.5, -1, -1, 9, 9], [0, 2, 2, 7, 0, 0, 0, 0]]
    assert mask.int().tolist() == [[0, 0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0, 0]]
    values, mask = step_to_token(step_values, segments)  # no answer value: answer tokens are left out
    assert values.tolist() == [[0, 0, 0.5, 0.5, -1, -1, 0, 0], [0, 2, 2, 0, 0, 0, 0, 0]]
    assert mask.int().tolist() == [[0, 0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="step 1"):
        step_to_token(step_values[:, :1], segments)


def test_step_to_token_on_tokenized_rows(char_tok, history_trajs):
    rows = tokenize_many(history_trajs[:4], char_tok, StepFormat(), "history")
    segments = collate(rows, char_tok.pad_token_id)["segment_ids"][:, 1:]  # the predicted tokens' segments
    step_values, _ = pad_steps([[10.0 * i + t for t in range(r.num_steps)] for i, r in enumerate(rows)])
    outcome = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    values, mask = step_to_token(step_values, segments, outcome)
    for i in range(len(rows)):
        for j, seg in enumerate(segments[i].tolist()):
            if seg >= STEP0:
                assert mask[i, j] and values[i, j] == 10.0 * i + (seg - STEP0)
            elif seg == ANSWER:
                assert mask[i, j] and values[i, j] == outcome[i]
            else:
                assert not mask[i, j] and values[i, j] == 0.0
    assert mask.sum() == (segments > 0).sum()
