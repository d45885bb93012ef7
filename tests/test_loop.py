"""The trainers' kit: the metrics log (lines, rates window, non-finite stop, progress bar) and checkpoints
that carry the model's step format (procsup.json)."""

from __future__ import annotations

import json

import pytest

from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import save_model
from procsup.models.saved import load_format
from procsup.trainers.loop import MetricsLog
from procsup.trainers.pal import PALConfig, train
from procsup.trainers.prm import PRMConfig, train_prm


class Bar:
    """Records what a trainer shows on its progress bar."""

    def __init__(self):
        self.postfix = None

    def set_postfix(self, **values):
        self.postfix = values


def test_metrics_log(tmp_path):
    bar = Bar()
    metrics = MetricsLog(tmp_path, bar)
    metrics.add(tokens=3, samples=1)
    metrics.add(tokens=4)
    counts, seconds = metrics.window()
    assert counts == {"tokens": 7, "samples": 1} and counts["pad"] == 0 and seconds > 0
    assert metrics.window()[0] == {}  # a new window
    metrics.write({"step": 1, "loss": 0.5}, "step 1", loss="0.5000")
    metrics.write({"step": 2, "loss": 0.25}, "step 2", loss="0.2500")
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    assert bar.postfix == {"loss": "0.2500"}
    with pytest.raises(FloatingPointError, match=r"loss is nan at update 3; lower learning_rate"):
        metrics.write({"loss": float("nan")}, "update 3")
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # the bad line is not written

    MetricsLog(tmp_path / "other", Bar(), main_process=False).write({"loss": 1.0}, "step 1")
    assert not (tmp_path / "other" / "metrics.jsonl").exists()  # only the main process writes


def test_checkpoints_carry_the_step_format(tmp_path, tiny_model, history_trajs):
    model, tok = tiny_model
    cfg = PALConfig(output_dir=str(tmp_path / "pal"), mode="history", step_sep=" ;\n", max_steps=2, batch_size=4,
                    save_steps=1, progress=False)
    train(cfg, model=model, tokenizer=tok, trajectories=history_trajs)
    for step in (1, 2):
        saved = load_format(tmp_path / "pal" / f"checkpoint-{step}")
        assert (saved.kind, saved.mode, saved.step_format) == ("policy", "history", cfg.step_format)
    assert not list((tmp_path / "pal").glob(".tmp-*"))

    save_model(model, tok, tmp_path / "backbone")
    prm_cfg = PRMConfig(output_dir=str(tmp_path / "prm"), model=str(tmp_path / "backbone"), input_sep=" |\n",
                        max_steps=1, batch_size=2, progress=False)
    train_prm(prm_cfg, trajectories=[Trajectory("q", "", (Step("a", label=True), Step("b", label=False)))] * 2)
    saved = load_format(tmp_path / "prm" / "checkpoint-1")
    assert (saved.kind, saved.mode, saved.step_format) == ("prm", "steps", prm_cfg.step_format)
