"""Behavior consistency loss: values against hand-computed numbers, and the trainer path."""

from __future__ import annotations

import json
import math

import pytest
import torch

from procsup.data.tokenize import StepFormat, step_starts, tokenize
from procsup.data.trajectory import Step, Trajectory
from procsup.objectives.consistency import action_consistency, hidden_consistency, same_key_pairs
from procsup.trainers.pal import PALConfig, decision_points, train


def test_same_key_pairs_ignores_unkeyed_and_singletons():
    i, j = same_key_pairs(torch.tensor([0, 1, 0, -1, -1, 2, 0]))
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (0, 6), (2, 6)]


def test_hidden_consistency_hand_computed():
    reps = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [1.0, 1.0], [2.0, 1.0]])
    keys = torch.tensor([0, 0, 0, -1, 1, 1])
    # pairs: (0,1) 1, (0,2) 4, (1,2) 1+4=5, (4,5) 1  -> mean 11/4
    assert hidden_consistency(reps, keys).item() == pytest.approx(11 / 4)


def test_hidden_consistency_zero_without_pairs_keeps_graph():
    reps = torch.randn(3, 4, requires_grad=True)
    loss = hidden_consistency(reps, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(reps.grad, torch.zeros_like(reps))


def test_action_consistency_hand_computed():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    keys = torch.tensor([7, 7, -1])
    p, q = (0.5, 0.5), (0.9, 0.1)
    sym_kl = sum(a * math.log(a / b) + b * math.log(b / a) for a, b in zip(p, q))
    assert action_consistency(logits, keys).item() == pytest.approx(sym_kl, rel=1e-5)
    same = torch.log(torch.tensor([[0.3, 0.7], [0.3, 0.7]]))
    assert action_consistency(same, torch.tensor([1, 1])).item() == pytest.approx(0.0, abs=1e-7)


def test_decision_points_sit_before_each_keyed_step(char_tok):
    fmt = StepFormat()
    traj = Trajectory("12+9", "21", (Step("2+9+0", key="k1"), Step("1+0+1", key=None), Step("x", key="k1")))
    (row,) = tokenize(traj, char_tok, fmt, "history")
    d = decision_points([row, row])
    starts = step_starts(row)
    assert d["pos"].tolist() == [starts[0] - 1, starts[2] - 1] * 2
    assert d["row"].tolist() == [0, 0, 1, 1]
    assert d["key"].tolist() == [0, 0, 0, 0]  # one key in the batch, numbered 0


@pytest.mark.parametrize("kind", ["hidden", "action"])
def test_trainer_logs_the_consistency_term(tmp_path, tiny_model, history_trajs, kind):
    model, tok = tiny_model
    cfg = PALConfig(output_dir=str(tmp_path / kind), mode="history", mu=0.5, consistency=kind, max_steps=4,
                    batch_size=8, log_steps=1, progress=False, learning_rate=1e-3)
    train(cfg, model=model, tokenizer=tok, trajectories=history_trajs)
    lines = [json.loads(line) for line in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(m["loss_consistency"]) for m in lines)
    assert lines[0]["loss_consistency"] > 0  # addition keys repeat across a batch of 8 problems
    for m in lines:
        assert m["loss"] == pytest.approx(m["loss_out"] + m["loss_steps"] + 0.5 * m["loss_consistency"], rel=1e-5)


def test_mu_validation():
    with pytest.raises(ValueError, match="mu"):
        PALConfig(output_dir="x", mu=-1.0)
    with pytest.raises(ValueError, match="consistency"):
        PALConfig(output_dir="x", consistency="cosine")


@pytest.mark.parametrize("kind", ["hidden", "action"])
def test_mu_zero_is_the_run_without_consistency_and_mu_positive_is_not(tmp_path, char_tok, history_trajs, kind):
    """mu = 0 with a consistency kind set trains exactly as the plain PAL run (same weights), and mu > 0
    changes them, so the consistency term is on only when mu asks for it."""
    from procsup.models.factory import build_tiny_model

    from tests.conftest import TINY

    def weights(name: str, **extra) -> dict:
        model, tok = build_tiny_model(TINY, char_tok, seed=0)
        cfg = PALConfig(output_dir=str(tmp_path / name), mode="history", max_steps=4, batch_size=8, log_steps=1,
                        progress=False, learning_rate=1e-3, **extra)
        trained = train(cfg, model=model, tokenizer=tok, trajectories=history_trajs).model
        return {k: v.detach().clone() for k, v in trained.state_dict().items()}

    plain, zero, positive = weights("plain"), weights("zero", mu=0.0, consistency=kind), weights("pos", mu=0.5,
                                                                                               consistency=kind)
    assert all(torch.equal(plain[k], zero[k]) for k in plain)
    assert any(not torch.equal(plain[k], positive[k]) for k in plain)
