"""The output folder is protected: one run at a time (a lock), never someone else's files (a non-empty
folder needs resume or overwrite; pruning removes only this run's checkpoints), resume only what this run
would have written (settings and data compared, metrics.jsonl cut back), crash leftovers cleaned."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import procsup.trainers.loop as loop
import procsup.trainers.pal as pal_trainer
from procsup.data.io import write_jsonl
from procsup.models.factory import build_tiny_model
from procsup.trainers.pal import PALConfig, train

from conftest import TINY


def config(out: Path, **overrides) -> PALConfig:
    values = dict(output_dir=str(out), batch_size=4, max_steps=4, warmup_steps=1, learning_rate=1e-2, log_steps=1,
                  progress=False)
    return PALConfig(**{**values, **overrides})


def run(cfg, char_tok, trajs, **kw):
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    return train(cfg, model=model, tokenizer=char_tok, trajectories=trajs, **kw)


def steps_logged(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_locked_folder_is_refused_at_once(tmp_path, char_tok, history_trajs):
    out = tmp_path / "run"
    out.mkdir()
    (out / loop.LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(ValueError, match=rf"output_dir {out} is in use by pid {os.getppid()} on host") as e:
        run(config(out, resume=True), char_tok, history_trajs)
    assert "\n" not in str(e.value)


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, char_tok, history_trajs, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / loop.LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING):
        run(config(out, resume=True), char_tok, history_trajs)
    assert "taking over the stale lock" in caplog.text
    assert not (out / loop.LOCK_FILE).exists()  # released at the end


def test_the_lock_is_released_when_a_run_fails(tmp_path, char_tok, history_trajs, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("crash")

    monkeypatch.setattr(pal_trainer, "save_checkpoint", boom)
    with pytest.raises(RuntimeError):
        run(config(tmp_path / "run"), char_tok, history_trajs)
    assert not (tmp_path / "run" / loop.LOCK_FILE).exists()


def test_a_non_empty_folder_is_refused_without_resume_or_overwrite(tmp_path, char_tok, history_trajs):
    """Before: a rerun without resume=true silently trained from step 0, appending to metrics.jsonl."""
    out = tmp_path / "run"
    run(config(out), char_tok, history_trajs)
    with pytest.raises(ValueError, match=r"is not empty \(checkpoint-4, metrics.jsonl\); set resume=true"):
        run(config(out), char_tok, history_trajs)
    assert steps_logged(out) == [1, 2, 3, 4]


def test_overwrite_replaces_procsup_files_and_keeps_foreign_ones(tmp_path, char_tok, history_trajs):
    """Before: pruning deleted a foreign checkpoint-1/ (Hugging Face Trainer layout) and an older run's."""
    out = tmp_path / "run"
    run(config(out, max_steps=6, save_steps=3), char_tok, history_trajs)  # checkpoint-3, checkpoint-6
    hf = out / "checkpoint-1"
    hf.mkdir()
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    (out / "notes.txt").write_text("mine")
    run(config(out, overwrite=True, save_steps=2, save_total_limit=1), char_tok, history_trajs)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "checkpoint-4", "metrics.jsonl", "notes.txt"]
    assert json.loads((hf / "trainer_state.json").read_text())["global_step"] == 1
    assert steps_logged(out) == [1, 2, 3, 4]  # the old run's lines are gone, not interleaved


def test_a_foreign_checkpoint_this_run_would_replace_is_refused(tmp_path, char_tok, history_trajs):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds checkpoint-4, which procsup did not write"):
        run(config(out, overwrite=True), char_tok, history_trajs)
    assert (out / "checkpoint-4" / "pytorch_model.bin").read_bytes() == b"x"


def test_pruning_keeps_checkpoints_of_other_runs(tmp_path, char_tok):
    """Before: a run next to an older run's checkpoint-20/30 pruned them (save_total_limit counted every run's)."""
    from accelerate import Accelerator

    out = tmp_path / "run"
    for name in ("checkpoint-20", "checkpoint-30"):  # another run's, as procsup writes them
        (out / name).mkdir(parents=True)
        state = {"step": int(name.split("-")[1]), "max_steps": 30, "config": {}, "run_id": "other"}
        (out / name / "trainer_state.json").write_text(json.dumps(state))
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    cfg = config(out, save_total_limit=1)
    optimizer, scheduler = loop.make_optimizer(model, cfg)
    me = loop.Run({"source": "in-memory"})
    saved = loop.SavedFormat("policy", cfg.step_format, "history")
    for step in (1, 2):
        loop.save_checkpoint(Accelerator(), model, char_tok, optimizer, scheduler, cfg, step, saved=saved, run=me)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-20", "checkpoint-30"]


def test_extra_files_are_inside_the_atomic_checkpoint(tmp_path, char_tok):
    """A trainer's own state (RL's rl_state.json) is written before the rename, so a checkpoint never exists
    without it; a name that would overwrite the checkpoint's own files or leave the folder is refused first."""
    from accelerate import Accelerator

    out = tmp_path / "run"
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    cfg = config(out)
    optimizer, scheduler = loop.make_optimizer(model, cfg)
    me, saved = loop.Run({"source": "in-memory"}), loop.SavedFormat("policy", cfg.step_format, "history")
    loop.save_checkpoint(Accelerator(), model, char_tok, optimizer, scheduler, cfg, 1, saved=saved, run=me,
                         extra_files={"rl_state.json": {"samples": 64}})
    assert json.loads((out / "checkpoint-1" / "rl_state.json").read_text()) == {"samples": 64}
    for bad in ("trainer_state.json", "procsup.json", "../x.json", "sub/x.json"):
        with pytest.raises(ValueError, match="must be a plain file name"):
            loop.save_checkpoint(Accelerator(), model, char_tok, optimizer, scheduler, cfg, 2, saved=saved, run=me,
                                 extra_files={bad: {}})
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".procsup")) == ["checkpoint-1"]


def test_resume_refuses_changed_settings_and_data_naming_each(tmp_path, char_tok, history_trajs, addition_trajs):
    """Before: a changed learning rate was ignored but recorded in the checkpoint; a changed file was taken."""
    data = tmp_path / "train.jsonl"
    write_jsonl(history_trajs, data)
    out = tmp_path / "run"
    model, _ = build_tiny_model(TINY, char_tok, seed=0)
    train(config(out, train_file=str(data), max_steps=4, save_steps=2), model=model, tokenizer=char_tok)
    (out / "checkpoint-4").rename(out / "checkpoint-3")  # pretend it crashed at step 3
    with pytest.raises(ValueError, match=r"changes learning_rate \(0.01 -> 0.001\), mode \('history' -> 'outcome'\)"):
        train(config(out, train_file=str(data), resume=True, learning_rate=1e-3, mode="outcome"), model=model,
              tokenizer=char_tok)
    write_jsonl(history_trajs[:-1], data)
    with pytest.raises(ValueError, match=r"train_file content \(sha256 [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\.\)"):
        train(config(out, train_file=str(data), resume=True), model=model, tokenizer=char_tok)


def test_resume_cuts_metrics_back_to_the_checkpoint(tmp_path, char_tok, history_trajs, monkeypatch):
    """Before: the lines logged after the last checkpoint stayed, and were logged again (duplicated steps)."""
    out = tmp_path / "run"
    save = pal_trainer.save_checkpoint

    def crash_after_5(*args, **kwargs):
        save(*args, **kwargs)

    monkeypatch.setattr(pal_trainer, "save_checkpoint", crash_after_5)
    real_write = loop.MetricsLog.write

    def write_then_crash(self, metrics, at, **postfix):
        real_write(self, metrics, at, **postfix)
        if metrics.get("step") == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop.MetricsLog, "write", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(config(out, max_steps=8, save_steps=4), char_tok, history_trajs)
    monkeypatch.setattr(loop.MetricsLog, "write", real_write)
    assert steps_logged(out) == [1, 2, 3, 4, 5]
    run(config(out, max_steps=8, save_steps=4, resume=True), char_tok, history_trajs)
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_leftover_temp_folders_are_cleaned_and_temp_names_carry_the_pid(tmp_path, char_tok, history_trajs, monkeypatch):
    """Before: two runs on one folder shared .tmp-checkpoint-<step>; a dead run's temp folder stayed forever."""
    out = tmp_path / "run"
    (out / ".tmp-checkpoint-2-999999").mkdir(parents=True)
    (out / ".tmp-checkpoint-2-999999" / "model.safetensors").write_bytes(b"half")
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr(loop.os, "replace", spy)
    run(config(out, resume=True), char_tok, history_trajs)
    assert not list(out.glob(".tmp-*"))
    assert f".tmp-checkpoint-4-{os.getpid()}" in renamed


def test_output_dir_that_is_a_file_is_one_line(tmp_path, char_tok, history_trajs):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match=rf"^output_dir {path} is a file, not a folder$"):
        run(config(path), char_tok, history_trajs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_dir_is_one_line(tmp_path, char_tok, history_trajs):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="is not writable|cannot create it"):
            run(config(locked / "run"), char_tok, history_trajs)
    finally:
        locked.chmod(0o700)


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="resume and overwrite"):
        config(tmp_path, resume=True, overwrite=True)


def test_trainers_check_their_paths_before_loading_anything(tmp_path):
    """rejects_file == train_file would have the reader append to its own input; a missing train_file is named.
    Both fail before a model is looked for (model= points nowhere)."""
    from procsup.data.io import PathError
    from procsup.trainers.pal import PALConfig, train
    from procsup.trainers.prm import PRMConfig, train_prm

    data = tmp_path / "data.jsonl"
    data.write_text("", encoding="utf-8")
    for cfg_cls, run in ((PALConfig, train), (PRMConfig, train_prm)):
        same = cfg_cls(output_dir=str(tmp_path / "out"), model=str(tmp_path / "nowhere"), train_file=str(data),
                       rejects_file=str(data))
        with pytest.raises(PathError, match="same file"):
            run(same)
        missing = cfg_cls(output_dir=str(tmp_path / "out"), model=str(tmp_path / "nowhere"),
                          train_file=str(tmp_path / "missing.jsonl"))
        with pytest.raises(PathError, match="train_file .*no such file"):
            run(missing)
    assert not (tmp_path / "out").exists()  # nothing was created
