"""The PRM benchmark (``procsup.bench.prm``): the ORM's labels, the answer step, and a smoke run with
absurdly small budgets that checks the result structure, the files and the cache."""

from __future__ import annotations

import dataclasses
import json

import pytest

import procsup.bench.prm as bench
from procsup.annotation.oracle import oracle_label
from procsup.bench.prm import PRMBenchConfig, orm_labels
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory
from procsup.data.views import in_layout, with_answer_step
from procsup.tasks.addition import AdditionTask

TASK = AdditionTask()
FMT = StepFormat()


def test_answer_step_and_orm_labels_on_a_labelled_trace():
    p = TASK.sample(seed=0, size=2, count=1)[0]
    expert = TASK.expert(p)
    wrong = Trajectory(expert.input, "", expert.steps, {**expert.meta, "answer": str(p.a + p.b + 1)})
    lab = oracle_label(TASK, p, wrong)
    assert [s.label for s in lab.steps] == [True, True] and lab.meta["correct"] is False
    full = with_answer_step(lab, FMT, label=lab.meta["correct"])
    assert full.steps[-1] == Step(f"A:{p.a + p.b + 1}", label=False) and full.steps[:-1] == lab.steps
    orm = orm_labels(full)
    assert orm.labels == [None, None, False] and [s.action for s in orm.steps] == [s.action for s in full.steps]
    no_answer = Trajectory(expert.input, "", expert.steps[:1], {**expert.meta, "answer": None})
    assert with_answer_step(no_answer, FMT).steps[-1].action == "A:"


@pytest.mark.parametrize("correct", [True, False])
def test_step_layout_orm_rows_are_the_prm_rows_with_the_outcome_on_every_step(correct):
    p = TASK.sample(seed=1, size=3, count=1)[0]
    demo = TASK.state_trajectory(p)
    step_labels = [True, False] + [True] * (len(demo.steps) - 2)
    traj = Trajectory(demo.input, demo.target, tuple(dataclasses.replace(s, label=y) for s, y in
                                                      zip(demo.steps, step_labels)), {**demo.meta, "correct": correct})
    prm, orm = bench.reward_rows([traj], "prm", "step"), bench.reward_rows([traj], "orm", "step")
    assert len(orm) == len(prm) == len(traj.steps) == len(in_layout([traj], "step"))
    for prm_row, orm_row, step in zip(prm, orm, traj.steps):  # the same row, the outcome as its label
        assert orm_row.input == prm_row.input == step.state
        assert [s.action for s in orm_row.steps] == [s.action for s in prm_row.steps] == [step.action]
        assert prm_row.labels == [step.label] and orm_row.labels == [correct]
    # the whole-trace ORM keeps the outcome on the last step only
    assert bench.reward_rows([traj], "orm", "trace")[0].labels == [None] * (len(traj.steps) - 1) + [correct]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        PRMBenchConfig(temperature=0)
    with pytest.raises(ValueError, match="beams"):
        PRMBenchConfig(beams=((0, 2),))
    with pytest.raises(ValueError, match="policy_mode"):
        PRMBenchConfig(policy_mode="states")
    with pytest.raises(ValueError, match="prm_layout"):
        PRMBenchConfig(prm_layout="rows")
    with pytest.raises(ValueError, match="orm_layout"):
        PRMBenchConfig(orm_layout="rows")
    with pytest.raises(ValueError, match="orm_layout=step needs policy_mode=state"):
        PRMBenchConfig(policy_mode="history", orm_layout="step")
    with pytest.raises(ValueError, match="label_corrupt_rate"):
        PRMBenchConfig(label_corrupt_rate=1.5)
    with pytest.raises(ValueError, match="policy_mode=state"):
        PRMBenchConfig(policy_mode="history", label_corrupt_rate=0.1)
    assert PRMBenchConfig(n=16).ns == (1, 2, 4, 8, 16) and PRMBenchConfig(n=6).ns == (1, 2, 4, 6)


@pytest.mark.parametrize("mode,layout,orm_layout,corrupt", [
    ("history", "step", "trace", 0.0), ("state", "step", "trace", 0.0), ("state", "trace", "trace", 0.0),
    ("state", "step", "step", 0.5)])
def test_main_smoke_and_cache(tmp_path, monkeypatch, mode, layout, orm_layout, corrupt):
    cfg = PRMBenchConfig(output_dir=str(tmp_path), seeds=(0,), hidden_size=16, num_layers=1, num_heads=2,
                         policy_mode=mode, prm_layout=layout, orm_layout=orm_layout, label_corrupt_rate=corrupt,
                         policy_train_size=16,
                         policy_steps=2, label_problems=3,
                         label_samples=2, rm_steps=2, rm_batch_size=4, test_digits=2, test_size=3, n=4, beams=((2, 2),))
    result = bench.main(cfg)
    table = result["table"]
    assert set(table["best_of_n"]) == {"1", "2", "4"}
    row = table["best_of_n"]["4"]
    assert {"prm-min", "prm-min-finished", "prm-last", "orm", "orm-finished", "majority", "pass",
            "prm-weighted-majority"} <= set(row)
    for n, r in table["best_of_n"].items():  # no reranker beats pass@N
        assert all(r[m]["mean"] <= r["pass"]["mean"] + 1e-9 for m in r if m not in ("samples", "pass"))
    assert set(table["beam_search"]) == {"2x2"} and table["beam_search"]["2x2"]["samples"]["mean"] > 0
    assert set(table["step_eval"]) == {"prm", "orm"} and "within_problem_auroc" in table["step_eval"]["prm"]
    per_step_orm = orm_layout == "step"  # its min over steps is reported beside its last step
    assert ({"orm-min", "orm-min-finished"} <= set(row)) == per_step_orm
    assert ("within_problem_auroc_min" in table["step_eval"]["orm"]) == per_step_orm
    assert (tmp_path / "bon.png").stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tables"]["search"][0] == ["search", "policy samples / problem", "accuracy (%)"]
    assert ("orm-min" in saved["tables"]["best_of_n"][0]) == per_step_orm
    policy = result["runs"][0]["policy"]
    assert (policy["label_traces_corrupted"] > 0) == (corrupt > 0) and policy["label_traces"] == 6

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(bench, "train", no_training)
    monkeypatch.setattr(bench, "train_prm", no_training)
    assert bench.main(cfg)["table"] == json.loads(json.dumps(table))
    # an evaluation setting, or a new evaluation version, re-evaluates the saved models without training them
    evaluations = []
    real_evaluate = bench.evaluate_models
    monkeypatch.setattr(bench, "evaluate_models", lambda *a: evaluations.append(1) or real_evaluate(*a))
    assert bench.main(dataclasses.replace(cfg, test_size=2))["runs"][0]["policy"]["label_traces"] == 6
    monkeypatch.setattr(bench, "EVAL_VERSION", bench.EVAL_VERSION + 1)
    assert bench.main(cfg)["table"] == json.loads(json.dumps(table))  # the same models give the same numbers
    assert len(evaluations) == 2


def test_cli_bench_prm_rejects_a_bad_field_and_lists_the_fields():
    from typer.testing import CliRunner

    from procsup.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["bench", "prm", "temperature=0"])
    assert out.exit_code == 2 and "temperature" in out.output
    assert "label_samples" in runner.invoke(app, ["bench", "prm", "--help"]).output
