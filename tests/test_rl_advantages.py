"""The per-step credit forms of RL (sum, PURE's min and softmin), the group baselines over step returns, the
advantages put on tokens, and the clipped loss with per-step advantages: each against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from procsup.data.tokenize import ANSWER, PROMPT, STEP0
from procsup.objectives.policy_gradient import policy_gradient_loss
from procsup.rl.advantages import group_step_advantages, returns_to_go, softmin_rewards
from procsup.rl.grpo import RLConfig, sample_rewards, step_returns, token_advantages


def test_softmin_rewards_by_hand():
    rewards = torch.tensor([[1.0, 0.0], [0.5, 9.0]])
    mask = torch.tensor([[True, True], [True, False]])
    # row 0, T = 1: weights softmax(-[1, 0]) = [e^-1, 1] / (1 + e^-1); transformed [e^-1 / (1 + e^-1), 0]
    w = math.exp(-1) / (1 + math.exp(-1))
    out = softmin_rewards(rewards, mask, 1.0)
    torch.testing.assert_close(out, torch.tensor([[w, 0.0], [0.5, 0.0]]))  # row 1: one step, weight 1
    # T -> 0: step 0's return (the sum) tends to the minimum; T -> inf: to the mean
    r = torch.tensor([[0.9, 0.2, 0.7]])
    m = torch.ones_like(r, dtype=torch.bool)
    assert returns_to_go(softmin_rewards(r, m, 1e-3), m)[0, 0].item() == pytest.approx(0.2, abs=1e-4)
    assert returns_to_go(softmin_rewards(r, m, 1e4), m)[0, 0].item() == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        softmin_rewards(r, m, 0.0)


def test_step_returns_each_credit_form():
    rewards = [[1.0, 0.0, 1.0, 1.0], [1.0, 1.0]]  # [r_1..r_n, o]: sample 0 wrote 3 steps, sample 1 one step
    ret, mask = step_returns(rewards, "sum")
    assert ret.tolist() == [[3.0, 2.0, 2.0, 1.0], [2.0, 1.0, 0.0, 0.0]]
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    ret, _ = step_returns(rewards, "sum", gamma=0.0)  # a step's own reward
    assert ret.tolist() == [[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    ret, _ = step_returns(rewards, "min")  # the worst reward still to come
    assert ret.tolist() == [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    ret, _ = step_returns([[0.5, 0.5]], "softmin", temperature=0.1)  # equal rewards: weights 1/2, 1/2
    assert ret.tolist() == [[0.5, 0.25]]


def test_group_step_advantages_grpo_by_hand():
    # one group of G = 2: returns [1, 0] (2 steps) and [1] (1 step); pool {1, 0, 1}: mean 2/3,
    # sample std sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3)
    returns = torch.tensor([[1.0, 0.0], [1.0, 7.0]])
    mask = torch.tensor([[True, True], [True, False]])
    std = math.sqrt(1 / 3)
    adv = group_step_advantages(returns, mask, 2, "grpo", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([[(1 / 3) / std, -(2 / 3) / std], [(1 / 3) / std, 0.0]]))
    # equal returns in the pool: no signal
    assert group_step_advantages(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), 2).tolist() == [[0.0, 0.0]] * 2


def test_group_step_advantages_rloo_by_hand():
    # two groups of G = 2. Group 0: sample 0 returns [1, 0], sample 1 [1]: sample 0's baseline is the mean of
    # sample 1's steps (1), sample 1's the mean of sample 0's ((1 + 0) / 2)
    returns = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    mask = torch.tensor([[True, True], [True, False], [True, False], [True, True]])
    adv = group_step_advantages(returns, mask, 2, "rloo")
    assert adv.tolist() == [[0.0, -1.0], [0.5, 0.0], [-2.0, 0.0], [2.0, 2.0]]
    with pytest.raises(ValueError, match="groups of 3"):
        group_step_advantages(returns, mask, 3)


def test_sample_rewards_append_the_outcome_as_the_answer_step():
    class T:  # the two fields sample_rewards reads
        def __init__(self, steps, correct):
            self.steps, self.meta = steps, {"correct": correct}

    trajs = [T(("a", "b"), True), T(("a",), False)]
    assert sample_rewards(trajs, None) == [[1.0], [0.0]]
    assert sample_rewards(trajs, [[0.5, 1.0], [0.25]]) == [[0.5, 1.0, 1.0], [0.25, 0.0]]
    with pytest.raises(ValueError, match="one score per step"):
        sample_rewards(trajs, [[0.5], [0.25]])


def test_token_advantages_mix_outcome_and_steps_by_hand():
    s0, s1 = STEP0, STEP0 + 1
    # G = 2 samples of one problem: sample 0 = prompt, step 0 (2 tokens), step 1 (1), answer (2);
    # sample 1 = prompt, step 0 (1), no answer line (padding after)
    segments = torch.tensor([[PROMPT, s0, s0, s1, ANSWER, ANSWER], [PROMPT, s0, PROMPT, PROMPT, PROMPT, PROMPT]])
    rewards = [[1.0, 0.0, 1.0], [1.0, 0.0]]  # sample 0: steps right, wrong; answer right. sample 1: no answer
    cfg = RLConfig(output_dir="x", step_reward="exact", credit="min", baseline="rloo", outcome_coef=0.5, step_coef=1.0)
    adv, parts = token_advantages(segments, rewards, 2, cfg)
    # outcome: o = [1, 0], RLOO [1, -1]; min returns: sample 0 [0, 0, 1], sample 1 [0, 0]
    assert parts["outcome"].tolist() == [1.0, -1.0]
    assert parts["returns"].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    # step RLOO: sample 0's baseline = mean of [0, 0] = 0; sample 1's = mean of [0, 0, 1] = 1/3
    third = 1 / 3
    torch.testing.assert_close(parts["step"], torch.tensor([[0.0, 0.0, 1.0], [-third, -third, 0.0]]))
    # tokens: 0.5 * outcome + the step's advantage (answer tokens: the answer step's); prompt/padding 0
    torch.testing.assert_close(adv, torch.tensor([
        [0.0, 0.5, 0.5, 0.5, 1.5, 1.5],
        [0.0, -0.5 - third, 0.0, 0.0, 0.0, 0.0],
    ]))
    outcome_only = RLConfig(output_dir="x", baseline="grpo")
    adv, _ = token_advantages(segments, rewards, 2, outcome_only)
    # GRPO on [1, 0]: mean 1/2, sample std sqrt(1/2): +-(1/2) / (sqrt(1/2) + 1e-4) on every generated token
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([[0.0, a, a, a, a, a], [0.0, -a, 0.0, 0.0, 0.0, 0.0]]))


def test_clipped_loss_with_step_advantages_by_hand():
    # two tokens with advantages +1 (a right step) and -1 (a wrong step); the new policy raised both tokens'
    # probability: ratio 1.5 on each. clip 0.2: token 0 objective min(1.5, 1.2) * 1 = 1.2 (clipped, no
    # gradient); token 1 min(-1.5, -1.2) = -1.5 (unclipped: the wrong step is pushed down fully)
    old = torch.log(torch.tensor([[0.2, 0.2]]))
    logps = torch.log(torch.tensor([[0.3, 0.3]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0]])
    out = policy_gradient_loss(logps, adv, torch.ones(1, 2), old_logps=old, clip_eps=0.2)
    assert out["pg_loss"].item() == pytest.approx(-(1.2 - 1.5) / 2)
    assert out["clip_fraction"].item() == pytest.approx(0.5)
    out["loss"].backward()
    # d/dlogp of -(ratio * A)/2 at token 1: -(1.5 * -1) / 2 = 0.75; token 0 clipped: 0
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, 0.75]]))
    # k3 KL to a reference with p_ref = 0.1 at both tokens: exp(d) - d - 1, d = log(0.1 / 0.3)
    d = math.log(1 / 3)
    ref = torch.log(torch.tensor([[0.1, 0.1]]))
    out = policy_gradient_loss(logps.detach(), adv, torch.ones(1, 2), old_logps=old, ref_logps=ref, kl_coef=0.5)
    assert out["kl"].item() == pytest.approx(math.exp(d) - d - 1)
    assert out["loss"].item() == pytest.approx((-(1.2 - 1.5) / 2) + 0.5 * (math.exp(d) - d - 1))


@pytest.mark.parametrize("bad, match", [
    ({"step_reward": "orm"}, "step_reward"), ({"credit": "max"}, "credit"), ({"baseline": "ema"}, "baseline"),
    ({"group_size": 1}, "group_size"), ({"outcome_coef": 0.0}, "no reward"), ({"gamma": 1.5}, "gamma"),
    ({"kl_coef": -1.0}, "kl_coef"), ({"temperature": 0.0}, "temperature"), ({"minibatches": 99}, "minibatches"),
    ({"save_total_limit": 0}, "save_total_limit"),
])
def test_config_is_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        RLConfig(output_dir="x", **bad)
