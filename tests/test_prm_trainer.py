"""PRM training end to end on a synthetic task with oracle step labels."""

from __future__ import annotations

import json
import random

import pytest
import torch

from procsup.data.io import write_jsonl
from procsup.data.trajectory import Step, Trajectory, TrajectoryError
from procsup.models.factory import save_model
from procsup.models.prm import score
from procsup.tasks.addition import AdditionTask
from procsup.trainers.loop import global_batch
from procsup.trainers.prm import PRMConfig, train_prm


def labelled_traces(count: int, seed: int = 0) -> list[Trajectory]:
    """State-mode addition steps (``3+6+0=9,0``) written as one trace; a third of the steps corrupted
    (the sum digit replaced by a letter, so that a tiny model can learn it in a few steps), labels from
    the corruption."""
    task, rng = AdditionTask(), random.Random(seed)
    out = []
    for p in task.sample_range(seed, 3, count):
        expert = task.state_trajectory(p)
        steps = []
        for s in expert.steps:
            action, ok = s.action, True
            if rng.random() < 0.33:
                action, ok = f"{rng.choice('xyz')}{action[1:]}", False
            steps.append(Step(f"{s.state}={action}", label=ok))
        out.append(Trajectory(expert.input, expert.target, tuple(steps)))
    return out


def test_prm_learns_oracle_labels_and_checkpoints(tmp_path, tiny_model):
    model, tok = tiny_model
    save_model(model, tok, tmp_path / "backbone")
    data = tmp_path / "train.jsonl"
    write_jsonl(labelled_traces(256), data)
    cfg = PRMConfig(output_dir=str(tmp_path / "prm"), model=str(tmp_path / "backbone"), train_file=str(data),
                    max_steps=120, batch_size=16, learning_rate=3e-3, warmup_steps=10, log_steps=20, progress=False)
    result = train_prm(cfg)
    lines = [json.loads(x) for x in (tmp_path / "prm" / "metrics.jsonl").read_text().splitlines()]
    assert all(set(m) >= {"loss", "step_accuracy", "samples_per_s", "padding"} for m in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert (tmp_path / "prm" / "checkpoint-120" / "model.safetensors").is_file()
    test = labelled_traces(64, seed=1)
    probs = score(result.model, tok, test)
    pairs = [(p, lab) for ps, t in zip(probs, test) for p, lab in zip(ps, t.labels)]
    accuracy = sum((p >= 0.5) == lab for p, lab in pairs) / len(pairs)
    majority = max(sum(lab for _, lab in pairs), sum(not lab for _, lab in pairs)) / len(pairs)
    assert accuracy > majority  # it learned something about the steps, beyond the label prior


def test_soft_labels_and_bad_labels(tmp_path, tiny_model):
    model, tok = tiny_model
    save_model(model, tok, tmp_path / "backbone")
    soft = [Trajectory("q", "", (Step("a", label=0.25), Step("b", label=0.75)))] * 4
    cfg = PRMConfig(output_dir=str(tmp_path / "soft"), model=str(tmp_path / "backbone"), soft=True, max_steps=3,
                    batch_size=2, progress=False)
    result = train_prm(cfg, trajectories=soft)
    assert result.model.config.num_labels == 1 and torch.isfinite(torch.tensor(result.final_metrics["loss"]))
    hard = PRMConfig(output_dir=str(tmp_path / "hard"), model=str(tmp_path / "backbone"), max_steps=1, batch_size=2,
                     progress=False)
    with pytest.raises(TrajectoryError, match=r"steps\[0\].label.*soft"):
        train_prm(hard, trajectories=soft)
    with pytest.raises(TrajectoryError, match="trajectory 1 has no step labels"):
        train_prm(hard, trajectories=[Trajectory("q", "", (Step("a", label=True),)), Trajectory("q", "", (Step("a"),))])


def test_length_grouped_batches_cover_every_row_and_pad_less():
    rng = random.Random(0)
    lengths = tuple(rng.randint(5, 200) for _ in range(400))
    batches = [global_batch(400, 8, step, seed=3, lengths=lengths) for step in range(50)]
    assert sorted(i for b in batches for i in b) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    plain = [global_batch(400, 8, step, seed=3) for step in range(50)]
    assert spread < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / 4


def test_cli_train_prm_then_score(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from procsup.cli import app

    model, tok = tiny_model
    save_model(model, tok, tmp_path / "backbone")
    data = tmp_path / "train.jsonl"
    write_jsonl(labelled_traces(16), data)
    runner = CliRunner()
    out = runner.invoke(app, ["train-prm", f"model={tmp_path / 'backbone'}", f"train_file={data}",
                              f"output_dir={tmp_path / 'prm'}", "max_steps=2", "batch_size=4", "progress=false"])
    assert out.exit_code == 0, out.output
    scored = tmp_path / "scored.jsonl"
    out = runner.invoke(app, ["score", str(tmp_path / "prm" / "checkpoint-2"), str(data), str(scored)])
    assert out.exit_code == 0, out.output
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    assert all(len(r["meta"]["step_scores"]) == len(r["steps"]) for r in rows)
    assert all(0.0 <= p <= 1.0 for r in rows for p in r["meta"]["step_scores"])
