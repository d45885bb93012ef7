"""The action-head model and its PAL trainer: the head reads the last real token of the state prompt
(whatever the padding, for every architecture), save/load is exact and pickle-free, training on grid
state trajectories lowers the step loss and changes the weights, bad data is named, and the rollout's
records agree with the task's checkers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from procsup.data.tokenize import StepFormat, prompt_ids
from procsup.evaluation.metrics import evaluate
from procsup.models.action_head import ActionHeadModel
from procsup.models.factory import build_tiny_model
from procsup.rollout import ActionHeadPolicy, complete, start
from procsup.tasks.grid import MOVES, GridTask, grid_metrics
from procsup.trainers.action_head import ActionHeadConfig, step_rows, train_action_head

from conftest import TINY

ACTIONS = ("U", "D", "L", "R")
STATES = ["U# D- L# R+", "###/#@./#.# +2,+0", "U+ D+ L- R#"]  # different lengths, so that there is padding


def policy(arch: str = "llama", fmt: StepFormat = StepFormat()) -> ActionHeadModel:
    backbone, tok = build_tiny_model(dataclasses.replace(TINY, arch=arch), seed=0)
    return ActionHeadModel(backbone, tok, ACTIONS, fmt, seed=0).eval()


@pytest.fixture(scope="module")
def grid_trajs():
    """50 expert state-mode trajectories on 3x3 and 4x4 grids (field view)."""
    task = GridTask()
    return [task.state_trajectory(p) for p in task.sample_range(seed=0, max_size=4, count=50)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "neox"])
def test_head_reads_the_last_real_token_whatever_the_padding(arch):
    model = policy(arch)
    ids, mask = model.encode(STATES)  # right padding
    logits = model(ids, mask)
    assert logits.shape == (len(STATES), len(ACTIONS)) and mask.sum(-1).tolist() != [ids.size(1)] * len(STATES)

    # the same prompts left-padded give the same logits
    lengths = mask.sum(-1)
    left_ids = torch.full_like(ids, model.tokenizer.pad_token_id)
    left_mask = torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        left_ids[i, ids.size(1) - n :] = ids[i, :n]
        left_mask[i, ids.size(1) - n :] = 1
    torch.testing.assert_close(model(left_ids, left_mask), logits, rtol=1e-5, atol=1e-5)

    # and both are the head applied to the unpadded prompt's last hidden state
    for i, state in enumerate(STATES):
        alone = torch.tensor([prompt_ids(model.tokenizer, state, model.fmt)])
        hidden = model.backbone.base_model(input_ids=alone).last_hidden_state[0, -1]  # (H,)
        torch.testing.assert_close(logits[i], model.head(hidden), rtol=1e-5, atol=1e-5)


def test_act_is_the_argmax():
    model = policy()
    best = model.state_logits(STATES).argmax(-1).tolist()
    assert model.act(STATES) == [ACTIONS[i] for i in best] and model.act([]) == []


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path):
    model = policy("gpt2", StepFormat(input_sep=" |"))
    torch.nn.init.normal_(model.head.bias)  # not the init: the head's weights must really be read back
    path = model.save(tmp_path / "m")
    loaded = ActionHeadModel.load(path).eval()

    assert loaded.actions == ACTIONS and loaded.fmt == model.fmt
    assert torch.equal(loaded.state_logits(STATES), model.state_logits(STATES))
    names = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "action_head.safetensors", "actions.json", "config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    with pytest.raises(FileNotFoundError, match="action_head"):
        ActionHeadModel.load(tmp_path)


def full_data_loss(model: ActionHeadModel, trajs) -> float:
    states, labels = step_rows(trajs, model.actions)
    with torch.no_grad():
        return F.cross_entropy(model.state_logits(states), torch.tensor(labels)).item()


def test_train_lowers_the_step_loss_and_changes_the_weights(tmp_path, grid_trajs):
    backbone, tok = build_tiny_model(TINY, seed=0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    start = full_data_loss(ActionHeadModel(backbone, tok, ACTIONS, seed=0).eval(), grid_trajs)  # the same head init
    cfg = ActionHeadConfig(
        output_dir=str(tmp_path / "run"), actions=ACTIONS, batch_size=16, max_steps=30, warmup_steps=3,
        learning_rate=1e-2, log_steps=10, progress=False,
    )
    result = train_action_head(cfg, model=backbone, tokenizer=tok, trajectories=grid_trajs)

    assert result.steps == 30 and result.tokens > 0
    assert full_data_loss(result.model, grid_trajs) < start - 0.1
    assert any(not torch.equal(before[k], v) for k, v in result.model.backbone.state_dict().items())
    lines = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20, 30]
    assert all(0.0 <= m["step_accuracy"] <= 1.0 and m["loss"] == pytest.approx(m["loss_steps"]) for m in lines)
    saved = ActionHeadModel.load(Path(cfg.output_dir) / "model").eval()
    assert torch.equal(saved.state_logits(STATES), result.model.state_logits(STATES))


def test_bad_steps_are_named(tmp_path, grid_trajs):
    trajs = list(grid_trajs[:5])
    steps = list(trajs[3].steps)
    cfg = ActionHeadConfig(output_dir=str(tmp_path), actions=ACTIONS, max_steps=1, progress=False)
    backbone, tok = build_tiny_model(TINY)

    steps[1] = dataclasses.replace(steps[1], action="X")
    trajs[3] = dataclasses.replace(trajs[3], steps=tuple(steps))
    with pytest.raises(ValueError, match=r"trajectory 3, step 1: action 'X'"):
        train_action_head(cfg, model=backbone, tokenizer=tok, trajectories=trajs)

    steps[1] = dataclasses.replace(steps[1], action="U", state=None)
    trajs[3] = dataclasses.replace(trajs[3], steps=tuple(steps))
    with pytest.raises(ValueError, match=r"trajectory 3, step 1: no state"):
        train_action_head(cfg, model=backbone, tokenizer=tok, trajectories=trajs)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(actions=()), "actions"),
        (dict(actions=("U", "U")), "actions"),
        (dict(actions="UDLR"), "actions"),
        (dict(lam=0.0), "lam"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(warmup_steps=-1), "warmup_steps"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        ActionHeadConfig(**{"output_dir": "x", "actions": ACTIONS, **overrides})


def test_rollouts_agree_with_the_task():
    task = GridTask(view="local")
    problems = task.sample(seed=3, size=4, count=30)
    model = policy()
    rollouts = [ts[0] for ts in complete(ActionHeadPolicy(model, task), start(task, problems))]
    for p, r in zip(problems, rollouts):
        answer = r.meta["answer"]
        assert r.meta["correct"] == bool(grid_metrics(p, answer)["success"])
        assert all(s.state and s.action in MOVES for s in r.steps)
        if answer is not None:
            assert answer == "".join(s.action for s in r.steps)
    assert evaluate(ActionHeadPolicy(model, task), problems)["n"] == 30

    def sampled(**kw):
        actor = ActionHeadPolicy(model, task, generator=torch.Generator().manual_seed(7))
        return [ts[0] for ts in complete(actor, start(task, problems), **kw)]

    assert [[s.action for s in e.steps] for e in sampled()] == [[s.action for s in e.steps] for e in sampled()]  # seeded
    assert sum(len(e.steps) for e in sampled(max_env_steps=11)) == 11
