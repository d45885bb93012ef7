"""REINFORCE (outcome-only RL): the loss and its gradient equal the hand-computed values, the
leave-one-out baseline is the mean of the others, and a tiny run spends exactly its environment-step
budget, logs finite metrics and is reproducible from its seed."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from procsup.models.action_head import ActionHeadModel
from procsup.models.factory import build_tiny_model
from procsup.objectives.policy_gradient import reinforce_loss
from procsup.rl.advantages import leave_one_out_baseline
from procsup.rl.reinforce import ReinforceConfig, train_reinforce
from procsup.tasks.grid import GridTask

from conftest import TINY

ACTIONS = ("U", "D", "L", "R")


def test_loss_and_gradient_equal_the_hand_computed_values():
    # two episodes: episode 0 took 2 steps and succeeded (R=1), episode 1 took 1 step and failed (R=0)
    step_logps = torch.tensor([-0.5, -1.0, -2.0], requires_grad=True)  # (N,)
    step_episode = torch.tensor([0, 0, 1])  # (N,)
    returns, b = torch.tensor([1.0, 0.0]), 0.25
    loss = reinforce_loss(step_logps, step_episode, returns - b)
    # -(1/B) sum_i (R_i - b) sum_t logp_it = -((0.75 * -1.5) + (-0.25 * -2.0)) / 2
    assert loss.item() == pytest.approx(-((0.75 * -1.5) + (-0.25 * -2.0)) / 2)
    loss.backward()
    assert step_logps.grad.tolist() == pytest.approx([-0.75 / 2, -0.75 / 2, 0.25 / 2])


def test_gradient_through_a_policy_is_the_score_function():
    # d log softmax(z)_a / d bias = onehot(a) - p, so d loss / d bias = -(1/B) sum_i A_i sum_t (onehot(a_it) - p_it)
    backbone, tok = build_tiny_model(TINY, seed=0)
    policy = ActionHeadModel(backbone, tok, ACTIONS, seed=0).eval()
    states = ["U# D- L# R+", "U- D+ L# R#", "U# D# L- R+"]
    taken, episode = torch.tensor([3, 1, 0]), torch.tensor([0, 0, 1])  # (N,), (N,)
    advantages = torch.tensor([0.5, -1.0])
    logps = torch.log_softmax(policy.state_logits(states), -1)  # (N, A)
    reinforce_loss(logps.gather(-1, taken[:, None]).squeeze(-1), episode, advantages).backward()

    probs = logps.detach().exp()
    score = torch.nn.functional.one_hot(taken, len(ACTIONS)).float() - probs  # (N, A)
    expected = -(advantages[episode][:, None] * score).sum(0) / 2
    torch.testing.assert_close(policy.head.bias.grad, expected)


def test_leave_one_out_baseline():
    baseline = leave_one_out_baseline(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert baseline.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1 / 3])
    assert leave_one_out_baseline(torch.tensor([1.0])).tolist() == [0.0]


def run(tmp_path: Path, name: str, baseline: str):
    task = GridTask(num_waypoints=(1, 1))
    backbone, tok = build_tiny_model(dataclasses.replace(TINY, arch="gpt2"), seed=0)
    policy = ActionHeadModel(backbone, tok, ACTIONS, seed=0)
    cfg = ReinforceConfig(
        output_dir=str(tmp_path / name), env_steps=150, episodes_per_update=8, baseline=baseline, progress=False
    )
    return cfg, train_reinforce(cfg, policy=policy, task=task, problems=task.sample(seed=0, size=3, count=20))


@pytest.mark.parametrize("baseline", ["ema", "batch"])
def test_run_spends_its_budget_and_logs_finite_metrics(tmp_path, baseline):
    cfg, result = run(tmp_path, "a", baseline)
    assert result.env_steps == cfg.env_steps and result.updates >= 2
    lines = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == result.updates and lines[-1]["env_steps"] == cfg.env_steps
    assert all(math.isfinite(v) for m in lines for v in m.values())
    assert all(0 <= m["success"] == m["return"] <= 1 and m["episode_len"] >= 1 for m in lines)
    assert (Path(cfg.output_dir) / "model" / "action_head.safetensors").is_file()

    _, again = run(tmp_path, "b", baseline)
    assert again.final_metrics == result.final_metrics  # reproducible from the seed


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(env_steps=0), "env_steps"),
        (dict(baseline="mean"), "baseline"),
        (dict(baseline_decay=1.0), "baseline_decay"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(learning_rate=0.0), "learning_rate"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        ReinforceConfig(**{"output_dir": "x", "env_steps": 10, **overrides})
