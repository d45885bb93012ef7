"""``procsup bench addition lr_grid=...``: the learning rate chosen on a validation split, then one test.

Validation runs evaluate no test problem; the choice follows the validation scores even when the test
scores would choose otherwise; only the chosen runs are tested, from the model the validation run trained;
a second call reads every run back. The paper bench's addition lane goes the same way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import procsup.bench.addition as addition
import procsup.bench.paper as paper
from procsup.bench.addition import AdditionBenchConfig, main, val_problems, validate_one
from procsup.bench.paper import AdditionRowConfig, PaperBenchConfig
from procsup.tasks.addition import AdditionTask


def tiny(out, **kw) -> AdditionBenchConfig:
    base = dict(output_dir=str(out), seeds=(0, 1), train_size=32, test_size=6, test_digits=(3, 4), steps=2,
                batch_size=8, hidden_size=16, num_layers=1, num_heads=2, progress=False, val_size=5)
    return AdditionBenchConfig(**{**base, **kw})


def pairs(problems) -> set:
    return {(p.a, p.b) for p in problems}


def test_lr_grid_config():
    cfg = AdditionBenchConfig(lr_grid=(0.5, 1, 2))
    assert cfg.selecting and cfg.val_digits == (3,) and cfg.lr_grid == (0.5, 1.0, 2.0)
    assert not AdditionBenchConfig().selecting and AdditionBenchConfig().val_digits == ()
    with pytest.raises(ValueError, match="training distribution"):
        AdditionBenchConfig(lr_grid=(0.5, 1), val_digits=(5,))
    with pytest.raises(ValueError, match="lr_grid"):
        AdditionBenchConfig(lr_grid=(1, 1))
    with pytest.raises(ValueError, match="lr_grid"):
        AdditionBenchConfig(lr_grid=(0, 1))


def test_validation_run_evaluates_no_test_problem(tmp_path, monkeypatch):
    """A validation run scores validation problems (training length, disjoint from training and test) and
    nothing else: no test problem reaches the evaluator and its record has no test numbers."""
    cfg = tiny(tmp_path, lr_grid=(0.5, 1.0))
    seen_by_eval, real = [], addition.evaluate
    monkeypatch.setattr(addition, "evaluate", lambda policy, probs: seen_by_eval.append(list(probs)) or real(policy, probs))
    run = validate_one(cfg, "history", 0, 0.5)

    task = addition._task(cfg)  # the benchmark's problem distribution (carry_heavy=0.3)
    train = pairs(task.sample_range(0, 3, cfg.train_size))
    test = set().union(*(pairs(addition._test_problems(cfg, task, 0, d, train)) for d in cfg.test_digits))
    evaluated = set().union(*(pairs(p) for p in seen_by_eval))
    assert len(seen_by_eval) == 1 and len(evaluated) == cfg.val_size
    assert not evaluated & test and not evaluated & train
    assert evaluated == pairs(val_problems(cfg, task, 0, 3, train))
    assert all(len(str(a)) == 3 for a, _ in evaluated)  # the training length
    assert "eval" not in run and set(run["val"]) == {"3"}
    assert run["learning_rate"] == pytest.approx(0.5 * cfg.learning_rate)
    saved = json.loads((tmp_path / "history-lr0.5-seed0" / "eval.json").read_text())
    assert "eval" not in saved and not (tmp_path / "history-lr0.5-seed0" / "test").exists()
    assert list((tmp_path / "history-lr0.5-seed0").glob("checkpoint-*"))  # the model is kept for its test


def test_val_problems_drop_test_problems_they_would_share():
    """At 2 digits the validation and test streams share problems; the validation split drops them."""
    task = AdditionTask()
    cfg = AdditionBenchConfig(lr_grid=(0.5, 1.0), train_max_digits=3, test_digits=(2, 5), val_digits=(2,),
                              test_size=500, val_size=200)
    train = pairs(task.sample_range(0, 3, 2000))
    test = pairs(addition._test_problems(cfg, task, 0, 2, train))
    raw = [(p.a, p.b) for p in task.sample(20_000, 2, 400) if (p.a, p.b) not in train][:200]
    val = val_problems(cfg, task, 0, 2, train)
    assert set(raw) & test  # the streams do collide here, so the check below means something
    assert len(val) == 200 and not pairs(val) & test and not pairs(val) & train


def stubbed(monkeypatch):
    """No training: ``_train`` leaves a checkpoint folder holding the run's learning rate; the loaded policy
    carries it; ``evaluate`` scores validation problems best at the smallest rate and test problems best at
    the largest (a choice read from test numbers picks the largest). Returns the list of evaluate calls."""
    calls = []

    def fake_train(cfg, method, seed, run_dir):
        (run_dir / "checkpoint-2").mkdir()
        (run_dir / "checkpoint-2" / "lr.txt").write_text(repr(cfg.learning_rate))
        (run_dir / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"step": 2, "config": {}}))  # procsup's
        task = addition._task(cfg)
        result = SimpleNamespace(seconds=0.0, tokens=0, final_metrics={}, model=torch.nn.Linear(1, 1))
        seen = pairs(task.sample_range(seed, cfg.train_max_digits, cfg.train_size))
        return SimpleNamespace(lr=cfg.learning_rate, task=task), result, seen

    def fake_load(path, task, mode, positions):
        return SimpleNamespace(lr=float((Path(path) / "lr.txt").read_text()), task=task)

    val_pairs, real_val = set(), addition.val_problems

    def tagged_val(*args):  # remembers every validation problem, so that the fake evaluator knows the split
        probs = real_val(*args)
        val_pairs.update(pairs(probs))
        return probs

    def fake_evaluate(policy, probs):
        if not hasattr(policy, "lr"):  # an untrained model of the trivial rows
            calls.append(("trivial", None))
            return {"exact_match": 0.0, "trace_valid": None, "right_answer_wrong_steps": None, "n": len(probs)}
        split = "val" if pairs(probs) <= val_pairs else "test"
        calls.append((split, policy.lr))
        score = 1e-3 / policy.lr if split == "val" else policy.lr * 100
        return {"exact_match": min(score, 1.0), "trace_valid": None, "right_answer_wrong_steps": None, "n": len(probs)}

    monkeypatch.setattr(addition, "val_problems", tagged_val)
    monkeypatch.setattr(addition, "_train", fake_train)
    monkeypatch.setattr(addition, "load_policy", fake_load)
    monkeypatch.setattr(addition, "evaluate", fake_evaluate)
    monkeypatch.setattr(addition, "plot", lambda *a: None)
    return calls


def test_selection_follows_validation_not_test(tmp_path, monkeypatch):
    """Validation prefers the smallest factor, test the largest: the smallest is chosen, every validation
    run comes before any test, and only the chosen factor's runs are tested (from their own checkpoints)."""
    calls = stubbed(monkeypatch)
    cfg = tiny(tmp_path, methods=("outcome", "state"), lr_grid=(0.5, 1.0, 2.0))
    result = main(cfg)

    n_val = len(cfg.methods) * len(cfg.lr_grid) * len(cfg.seeds)
    assert [c[0] for c in calls] == ["val"] * n_val + ["test"] * (len(cfg.methods) * len(cfg.seeds) * len(cfg.test_digits))
    assert {lr for split, lr in calls if split == "test"} == {0.5 * cfg.learning_rate}
    for method in cfg.methods:
        sel = result["selection"][method]
        assert sel["chosen_factor"] == 0.5 and sel["chosen_lr"] == pytest.approx(0.5 * cfg.learning_rate)
        assert sel["val"]["0.5"]["per_seed"] == [pytest.approx(1e-3 / (0.5 * cfg.learning_rate))] * 2
        assert set(sel["val"]) == {"0.5", "1", "2"} and sel["factors"] == [0.5, 1.0, 2.0]
        tested = sorted(p.parent.parent.name for p in tmp_path.glob(f"{method}-lr*-seed*/test/eval.json"))
        assert tested == [f"{method}-lr0.5-seed{s}" for s in cfg.seeds]
        cell = result["table"][method]["3"]["exact_match"]
        assert cell["mean"] == pytest.approx(0.5 * cfg.learning_rate * 100)  # the chosen run's test score
    assert {r["lr_factor"] for r in result["runs"]} == {0.5} and all("val" in r and "eval" in r for r in result["runs"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["selection"]["state"]["chosen_factor"] == 0.5 and "val_table" in saved


def test_selection_is_read_back_not_rerun(tmp_path, monkeypatch):
    """Tiny real training: the tested model is the validated one (its last checkpoint); other test lengths
    retest the validated runs without training; a repeated call trains and evaluates nothing."""
    cfg = tiny(tmp_path, methods=("history", "state"), lr_grid=(0.5, 1.0), seeds=(0,))
    first = main(cfg)
    assert all(r["checkpoint"] == f"checkpoint-{cfg.steps}" for r in first["runs"])
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("eval.json")}
    assert len(stamps) == 2 * 2 + 2  # every (method, factor) validated, the two chosen tested

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached run was trained or evaluated again")

    monkeypatch.setattr(addition, "train", forbidden)
    shorter = main(replace(cfg, test_digits=(3,)))  # other test lengths: the validated runs tested again
    assert shorter["selection"] == first["selection"] and set(shorter["table"]["state"]) == {"3"}
    assert shorter["table"]["state"]["3"] == first["table"]["state"]["3"]
    for name in ("evaluate", "load_policy"):
        monkeypatch.setattr(addition, name, forbidden)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("eval.json")}
    again = main(replace(cfg, test_digits=(3,)))
    assert json.dumps(again["table"]) == json.dumps(shorter["table"])
    assert again["selection"] == json.loads(json.dumps(first["selection"]))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("eval.json")} == stamps


def test_paper_addition_lane_tests_only_the_chosen_factor(tmp_path, monkeypatch):
    """``procsup bench paper tasks=addition lr_grid=...``: validation runs only for every factor, the test
    of the chosen factor's runs only, the choice recorded."""
    calls = stubbed(monkeypatch)
    cfg = PaperBenchConfig(output_dir=str(tmp_path), seeds=(0, 1), quick=True, tasks=("addition",), num_layers=1,
                           num_heads=2, test_size=4, val_size=3, lr_grid=(0.5, 1.0, 2.0),
                           addition=AdditionRowConfig(train_size=8, test_digits=(3, 5), steps=2, batch_size=4,
                                                      hidden_size=16))
    result = paper.main(cfg)
    assert {lr for split, lr in calls if split == "test"} == {0.5 * cfg.learning_rate}
    for method, sel in result["selection"]["addition"].items():
        assert sel["chosen_factor"] == 0.5, method
        assert sel["val"]["2"]["per_seed"] == [pytest.approx(1e-3 / (2 * cfg.learning_rate))] * 2
    tested = {p.parent.parent.name for p in (tmp_path / "addition").glob("*/test/eval.json")}
    assert tested == {f"{m}-lr0.5-seed{s}" for m in ("outcome", "history", "state") for s in (0, 1)}
    validated = {p.parent.name for p in (tmp_path / "addition").glob("*/eval.json")}
    assert len(validated) == 3 * 3 * 2
    assert all("eval" not in json.loads(p.read_text()) for p in (tmp_path / "addition").glob("*/eval.json"))
