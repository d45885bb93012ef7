"""The PAL trainer end to end on a tiny llama: every mode trains, logs its loss terms and checkpoints;
resuming after a crash is exact; the data order is a pure function; 2 DDP processes equal 1 process."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import procsup.trainers.pal as pal_trainer
from procsup.data.trajectory import TrajectoryError
from procsup.models.factory import build_tiny_model, load_model, save_model
from procsup.trainers.loop import global_batch
from procsup.trainers.pal import PALConfig, train

import ddp_worker
from conftest import TINY


def config(tmp_path: Path, **overrides) -> PALConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), batch_size=8, max_steps=20, warmup_steps=2, learning_rate=1e-2,
        log_steps=5, progress=False,
    )
    return PALConfig(**{**values, **overrides})


def read_metrics(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["history", "state", "outcome"])
def test_train_each_mode(tmp_path, tiny_model, history_trajs, addition_trajs, mode):
    model, tok = tiny_model
    before = snapshot(model)
    trajs = addition_trajs if mode == "state" else history_trajs
    cfg = config(tmp_path, mode=mode, lam=0.5)
    result = train(cfg, model=model, tokenizer=tok, trajectories=trajs)

    assert result.steps == 20 and result.tokens > 0
    after = result.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"

    lines = read_metrics(cfg.output_dir)
    assert [m["step"] for m in lines] == [5, 10, 15, 20]
    for m in lines:
        assert all(math.isfinite(m[k]) for k in ("loss", "loss_out", "loss_steps", "step_nll", "lr"))
        assert m["loss"] == pytest.approx(m["loss_out"] + cfg.lam * m["loss_steps"], rel=1e-5)
        if mode == "outcome":
            assert m["loss_steps"] == 0 and m["loss_out"] > 0
        elif mode == "state":
            assert m["loss_out"] == 0 and m["loss_steps"] > 0  # state rows end at the step: no answer term
        else:
            assert m["loss_out"] > 0 and m["loss_steps"] > 0
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert lines[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine schedule ends at 0

    ckpt = Path(cfg.output_dir) / "checkpoint-20"
    assert (ckpt / "model.safetensors").is_file() and not list(ckpt.glob("*.bin"))
    reloaded, _, _ = load_model(ckpt)
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, after[k]), k


class Crash(Exception):
    pass


def test_resume_is_exact(tmp_path, char_tok, history_trajs, monkeypatch):
    """12 steps straight == 6 steps, a crash right after checkpoint-6, then train(resume=True) to 12."""
    common = dict(max_steps=12, save_steps=6, log_steps=1)
    straight_cfg = config(tmp_path / "straight", **common)
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    straight = train(straight_cfg, model=model, tokenizer=char_tok, trajectories=history_trajs).model

    save = pal_trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        if args[-1] == 6:
            raise Crash

    crashed_cfg = config(tmp_path / "crashed", **common)
    monkeypatch.setattr(pal_trainer, "save_checkpoint", save_then_crash)
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    with pytest.raises(Crash):
        train(crashed_cfg, model=model, tokenizer=char_tok, trajectories=history_trajs)
    monkeypatch.setattr(pal_trainer, "save_checkpoint", save)
    assert [p.name for p in Path(crashed_cfg.output_dir).glob("checkpoint-*")] == ["checkpoint-6"]

    # a differently initialised model: everything must come from the checkpoint
    model, _ = build_tiny_model(TINY, char_tok, seed=1)
    resumed_cfg = config(tmp_path / "crashed", resume=True, **common)
    result = train(resumed_cfg, model=model, tokenizer=char_tok, trajectories=history_trajs)
    assert result.steps == 6

    want = straight.state_dict()
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=1e-7, msg=k)
    # and the logged losses of steps 7..12 are the same as in the straight run
    losses = {m["step"]: m["loss"] for m in read_metrics(crashed_cfg.output_dir)}
    straight = [m["loss"] for m in read_metrics(straight_cfg.output_dir)]
    assert straight == pytest.approx([losses[s] for s in range(1, 13)], abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(num_rows=st.integers(1, 30), batch_size=st.integers(1, 40), seed=st.integers(0, 10**6), epochs=st.integers(1, 3))
def test_global_batch_covers_each_row_once_per_epoch(num_rows, batch_size, seed, epochs):
    steps = math.ceil(epochs * num_rows / batch_size)
    order = [i for step in range(steps) for i in global_batch(num_rows, batch_size, step, seed)]
    assert all(len(global_batch(num_rows, batch_size, s, seed)) == batch_size for s in range(steps))
    for e in range(epochs):
        assert sorted(order[e * num_rows : (e + 1) * num_rows]) == list(range(num_rows))
    # a pure function of (seed, step): recomputing any one batch, in any order, gives the same rows
    for step in reversed(range(steps)):
        assert global_batch(num_rows, batch_size, step, seed) == order[step * batch_size : (step + 1) * batch_size]


@pytest.mark.parametrize(
    "field, value",
    [("mode", "steps"), ("batch_size", 0), ("max_steps", 0), ("lam", -0.1), ("learning_rate", 0.0),
     ("warmup_steps", -1), ("step_sep", "")],
)
def test_config_validation(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        PALConfig(output_dir=str(tmp_path), **{field: value})


def _write_train_file(path: Path) -> Path:
    good = {"input": "1+1", "target": "2", "steps": [{"action": "1+1=2", "state": "1+1"}]}
    bad = {"input": "1+2", "target": "3", "steps": []}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    return path


def test_bad_train_file_names_file_and_line(tmp_path, tiny_model):
    model, tok = tiny_model
    path = _write_train_file(tmp_path / "train.jsonl")
    with pytest.raises(TrajectoryError) as e:
        train(config(tmp_path, train_file=str(path), max_steps=1), model=model, tokenizer=tok)
    assert e.value.where == f"{path}:2" and e.value.field == "steps"
    assert f"{path}:2" in str(e.value)


def test_rejects_file_skips_bad_records(tmp_path, tiny_model):
    model, tok = tiny_model
    path = _write_train_file(tmp_path / "train.jsonl")
    rejects = tmp_path / "rejects.jsonl"
    cfg = config(tmp_path, train_file=str(path), rejects_file=str(rejects), max_steps=2, batch_size=2)
    assert train(cfg, model=model, tokenizer=tok).steps == 2
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [2]


def test_train_needs_a_model(tmp_path, history_trajs):
    with pytest.raises(ValueError, match="model"):
        train(config(tmp_path), trajectories=history_trajs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one(tmp_path, char_tok):
    """accelerate launch --num_processes 2 (gloo, CPU) with a global batch of 8 gives the weights of one
    process with a batch of 8: each process takes half of the same global batch, DDP averages."""
    init = save_model(*build_tiny_model(TINY, char_tok, seed=7), tmp_path / "init")
    # Not "--cpu": with it accelerate 1.x takes its single-process launcher and starts ONE process. The
    # torchrun launcher ("--multi_gpu") plus ACCELERATE_USE_CPU=1 gives 2 processes, MULTI_CPU over gloo.
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(Path(ddp_worker.__file__)), str(init), str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(f"2-process run: {time.perf_counter() - t0:.1f}s")
    tokens = dict(re.findall(r"process (\d) of 2: (\d+) tokens", proc.stdout))
    assert tokens.keys() == {"0", "1"}, proc.stdout[-2000:]

    single = ddp_worker.run(str(init), str(tmp_path / "single"))  # the same run, 1 process, in this one
    # each process took its own half of the global batch (not all of it, not the same half)
    assert (int(tokens["0"]) + int(tokens["1"])) // 2 == single.tokens

    final = f"checkpoint-{ddp_worker.MAX_STEPS}/model.safetensors"
    two, one = load_file(tmp_path / "ddp" / final), load_file(tmp_path / "single" / final)
    start = load_file(init / "model.safetensors")
    assert two.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)
    assert any(not torch.equal(one[k], start[k]) for k in one)  # it did train
    ddp_losses = [m["loss"] for m in read_metrics(tmp_path / "ddp")]
    assert ddp_losses == pytest.approx([m["loss"] for m in read_metrics(tmp_path / "single")], abs=1e-5)
