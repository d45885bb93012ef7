"""Smoke test of the paper benchmark (``procsup.bench.paper``): absurdly small budgets, one seed; checks
the result structure, the files, and that a second call reads every run from the cache."""

from __future__ import annotations

import dataclasses
import json

import pytest

import procsup.bench.addition as addition_bench
import procsup.bench.paper as paper
from procsup.bench.paper import (
    TASKS,
    AdditionRowConfig,
    ConsistencyRowConfig,
    GridRowConfig,
    LogicRowConfig,
    PaperBenchConfig,
    WordProblemsRowConfig,
    choose,
    main,
    written_moves,
)
from procsup.config import build_config
from procsup.data.trajectory import Step
from procsup.tasks.grid import GridTask, grid_metrics, parse_grid


def tiny_config(out) -> PaperBenchConfig:
    return PaperBenchConfig(
        output_dir=str(out), seeds=(0,), quick=True, num_layers=1, num_heads=2, test_size=2,
        addition=AdditionRowConfig(train_size=8, test_digits=(3,), steps=2, batch_size=4, hidden_size=16),
        grid=GridRowConfig(train_size=6, test_sizes=(4,), steps=2, batch_size=4, hidden_size=16),
        logic=LogicRowConfig(train_size=6, steps=2, batch_size=4, hidden_size=16),
        word_problems=WordProblemsRowConfig(train_size=6, batch_size=2, steps=2, hidden_size=16),
        consistency=ConsistencyRowConfig(kinds=("hidden", "action")),
    )


def test_quick_fills_budgets_and_explicit_values_win():
    quick = PaperBenchConfig(quick=True, addition=AdditionRowConfig(steps=7))
    assert quick.addition.steps == 7 and quick.addition.hidden_size == paper.QUICK["addition"]["hidden_size"]
    assert PaperBenchConfig().grid.test_sizes == paper.FULL["grid"]["test_sizes"]
    assert PaperBenchConfig().grid.views == ("trail", "local", "field") and quick.grid.views == ("trail", "field")
    assert (quick.test_size, PaperBenchConfig().test_size) == (100, 300)
    with pytest.raises(ValueError):
        PaperBenchConfig(tasks=("nope",))
    with pytest.raises(ValueError, match="grid.views"):
        GridRowConfig(views=("satellite",))
    with pytest.raises(ValueError, match="consistency.kinds"):
        ConsistencyRowConfig(kinds=("logits",))
    with pytest.raises(ValueError, match="word_problems.steps"):
        WordProblemsRowConfig(steps=0)


def test_nested_fields_from_the_command_line_and_yaml(tmp_path):
    """``procsup bench paper quick=true grid.steps=100``: a row's field set on its own, the rest of the row
    filled by quick; the same from YAML; values typed as the row's fields."""
    cfg = build_config(PaperBenchConfig, None, ["quick=true", "grid.steps=100", "grid.views=trail",
                                                "word_problems.train_noise=0,2"])
    assert cfg.grid.steps == 100 and cfg.grid.views == ("trail",)
    assert cfg.grid.batch_size == paper.QUICK["grid"]["batch_size"] and cfg.logic.steps == paper.QUICK["logic"]["steps"]
    assert cfg.word_problems.train_noise == (0, 2)
    path = tmp_path / "paper.yaml"
    path.write_text("quick: true\ngrid:\n  steps: 100\n  views: [trail]\nword_problems: {train_noise: [0, 2]}\n")
    assert build_config(PaperBenchConfig, path) == cfg
    with pytest.raises(ValueError, match="grid.steps"):
        build_config(PaperBenchConfig, None, ["grid.steps=0"])


def test_cache_keys_keep_the_flat_names(monkeypatch):
    """Runs cached before the per-row groups are read back: a run's key spells its fields as the flat config
    did (``grid_steps``), with the values it gave them (the then shared steps, batch and width: addition's)."""
    cfg = PaperBenchConfig(quick=True)
    keys = {}
    monkeypatch.setattr(paper, "cached_run", lambda run_dir, key, fn: keys.setdefault(run_dir.parent.name, key))
    paper.grid_run(cfg, "pal-lm", "trail", 0)
    paper.logic_run(cfg, "state", 0)
    paper.word_run(cfg, "state", 0)
    shared = {"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "steps": 300, "batch_size": 32,
              "learning_rate": 2e-3, "lam": 1.0, "test_size": 100}
    assert keys["grid"] == {"method": "pal-lm-trail", "seed": 0, **shared, "grid_train_size": 500,
                            "grid_test_sizes": (4, 6), "grid_steps": 300, "grid_batch_size": 32,
                            "grid_hidden_size": 64, "reinforce_learning_rate": 1e-4}
    assert keys["logic"] == {"method": "state", "seed": 0, **shared, "logic_train_size": 2000, "logic_steps": 300}
    assert keys["word_problems"] == {"method": "state", "seed": 0, **shared, "word_train_size": 2000,
                                     "word_batch_size": 8, "word_steps": 300, "word_max_value": 100,
                                     "word_train_noise": (0, 1), "word_test_noise": 2}


def test_main_smoke_and_resume(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    result = main(cfg)

    assert set(result["tables"]) == {*TASKS, "word_gaps"}
    assert set(result["tables"]["addition"]) == {"outcome", "history", "state", "majority"}
    grid = result["tables"]["grid"]
    assert set(grid) == {"pal-lm-field", "pal-lm-trail", "pal-head-field", "pal-head-trail", "text-history",
                         "text-outcome", "reinforce-field", "reinforce-trail", "random moves"}  # quick: no local view
    # trivial rows: through the same test problems, no training
    assert set(result["tables"]["logic"]) == set(result["tables"]["word_problems"]) == {"outcome", "history", "state",
                                                                                          "majority"}
    assert "majority" in result["tables"]["word_gaps"] and "majority" not in result["tables"]["consistency"]
    for cell in grid["pal-head-trail"]["4"].values():
        assert 0.0 <= cell["mean"] <= 1.0 and len(cell["per_seed"]) == 1
    assert set(result["tables"]["logic"]["state"]) == {"5", "10"}
    assert set(result["tables"]["word_problems"]["history"]) == {"clean", "noisy"}
    mu = f"{cfg.consistency.mu:g}"
    assert set(result["tables"]["consistency"]) == {"state mu=0", f"state mu={mu} hidden", f"state mu={mu} action"}
    words = {r["method"]: r for r in result["runs"]["word_problems"]}
    # the same stories per optimizer step: a state-mode row is one step of a story
    assert words["history"]["batch_size"] == 2 and words["state"]["batch_size"] > 2
    arm = next(r for r in result["runs"]["consistency"] if r["method"] == f"state mu={mu} hidden")
    assert arm["key"]["mu"] == cfg.consistency.mu and arm["key"]["word_steps"] == 2
    reinforce = next(r for r in result["runs"]["grid"] if r["method"] == "reinforce-trail")
    assert reinforce["updates"] == cfg.grid.steps  # RL gets PAL's number of optimizer updates
    assert reinforce["env_steps"] >= reinforce["episodes"] >= cfg.grid.steps * cfg.grid.batch_size
    assert "answer_line_success" in grid["text-history"]["4"] and "answer_line_success" not in grid["text-outcome"]["4"]
    assert "selection" not in result  # lr_grid (1,): every arm at its default, nothing chosen
    header, *rows = result["rows"]
    assert header[-1] == "paper" and len(rows) > 20 and all(len(r) == len(header) for r in rows)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tables"]["logic"] == json.loads(json.dumps(result["tables"]["logic"]))
    for task in TASKS:
        assert (tmp_path / f"{task}.png").stat().st_size > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    for module, name in ((paper, "train"), (paper, "train_action_head"), (paper, "train_reinforce"),
                         (addition_bench, "train")):
        monkeypatch.setattr(module, name, no_training)
    again = main(cfg)
    assert json.dumps(again["tables"]) == json.dumps(result["tables"])


def test_grid_row_has_its_own_budget():
    full = PaperBenchConfig()
    assert (full.grid.steps, full.grid.batch_size, full.grid.hidden_size) == (1500, 32, 64)
    assert (full.addition.steps, full.logic.steps, full.word_problems.steps) == (500, 1000, 3000)
    assert PaperBenchConfig(quick=True).grid.steps == paper.QUICK["grid"]["steps"]
    with pytest.raises(ValueError, match="grid.steps"):
        PaperBenchConfig(grid=GridRowConfig(steps=0))


def test_reinforce_budget_env_steps_keeps_the_old_budget(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.grid = dataclasses.replace(cfg.grid, methods=("reinforce",), views=("field",), reinforce_budget="env_steps")
    run = paper.grid_run(cfg, "reinforce", "field", 0)
    assert run["env_steps"] == run["demonstration_steps"] and "reinforce_budget" not in run["key"]
    with pytest.raises(ValueError, match="reinforce_budget"):
        GridRowConfig(reinforce_budget="episodes")


def test_text_history_is_scored_on_the_moves_it_writes():
    """The environment runs the written moves: it stops at the goal (later moves are not run) or at an
    illegal move; the answer line plays no part."""
    task = GridTask(view="field")
    p = parse_grid("S.1\n.#.\n..2")  # shortest: R R D D
    steps = lambda moves: [Step(m) for m in moves]  # noqa: E731
    assert written_moves(task, p, steps("RRDD")) == "RRDD"
    assert written_moves(task, p, steps("RRDDUL")) == "RRDD"  # moves after the goal are not executed
    assert written_moves(task, p, steps("RRDU")) is None  # stopped short of the goal
    assert written_moves(task, p, steps("RLRRDD")) == "RLRRDD"  # a detour still reaches it
    assert written_moves(task, p, steps("DRR")) is None  # D from S is free, then R hits the wall
    assert written_moves(task, p, steps("UR")) is None  # illegal first move
    assert grid_metrics(p, written_moves(task, p, steps("RLRRDD")))["spl"] == pytest.approx(4 / 6)


def test_choose_takes_the_best_mean_and_breaks_ties_toward_the_default():
    assert choose({0.3: [0.1, 0.3], 1.0: [0.2, 0.1], 3.0: [0.0, 0.0]}) == 0.3
    assert choose({0.3: [0.0, 0.0], 1.0: [0.0, 0.0], 3.0: [0.0, 0.0]}) == 1.0
    assert choose({0.5: [0.4], 2.0: [0.4], 4.0: [0.1]}) == 0.5


def test_lr_grid_chooses_on_validation_then_tests_once(tmp_path, monkeypatch):
    """Every (arm, factor, seed) is scored on validation problems disjoint from training and test ones; the
    test split is evaluated only after every choice, once per seed, for the chosen factor only; the choice
    is the best validation mean; a second call trains and tests nothing."""
    cfg = tiny_config(tmp_path)
    cfg = dataclasses.replace(cfg, tasks=("grid",), lr_grid=(0.5, 1.0), val_size=3, seeds=(0, 1),
                              grid=dataclasses.replace(cfg.grid, methods=("pal-head", "reinforce"), views=("field",)))
    calls, real_eval, real_load = [], paper.grid_eval, paper._saved_policy
    monkeypatch.setattr(paper, "grid_eval", lambda task, m, pol, probs: calls.append(("eval", tuple(probs)))
                        or real_eval(task, m, pol, probs))
    monkeypatch.setattr(paper, "_saved_policy", lambda *a: calls.append(("load",)) or real_load(*a))
    result = main(cfg)

    first_load = calls.index(("load",))
    assert first_load == 2 * 2 * 2  # arms x factors x seeds validation evaluations, then the tests
    assert calls.count(("load",)) == 2 * 2  # one test per (arm, seed)
    val_probs = {p for c in calls[:first_load] for p in c[1]}
    test_probs = {p for c in calls[first_load:] if c[0] == "eval" for p in c[1]}
    train = set(GridTask().sample_range(0, 4, 6, min_size=3)) | set(GridTask().sample_range(1, 4, 6, min_size=3))
    assert val_probs and not val_probs & test_probs and not val_probs & train
    for arm, sel in result["selection"]["grid"].items():
        means = {float(f): v["mean"] for f, v in sel["val"].items()}
        assert sel["chosen_factor"] == choose({f: [m] for f, m in means.items()})
        assert sel["chosen_lr"] == pytest.approx(sel["default_lr"] * sel["chosen_factor"])
        tested = sorted(p.parent.parent.name for p in (tmp_path / "grid").glob(f"{arm}-lr*-seed*/test/eval.json"))
        assert tested == [f"{arm}-lr{sel['chosen_factor']:g}-seed{s}" for s in (0, 1)]
    assert result["selection"]["grid"]["reinforce-field"]["default_lr"] == cfg.grid.reinforce_learning_rate
    runs = {(r["method"], r["seed"]): r for r in result["runs"]["grid"]}
    assert set(runs["pal-head-field", 0]) >= {"val", "eval", "lr_factor", "learning_rate"}

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained or tested again")

    for name in ("train_action_head", "train_reinforce", "_saved_policy"):
        monkeypatch.setattr(paper, name, no_training)
    assert json.dumps(main(cfg)["tables"]) == json.dumps(result["tables"])


def test_train_only_lanes_validate_without_testing_then_one_call_chooses_and_tests(tmp_path, monkeypatch):
    """Lanes (one per seed here) train and validate every (arm, factor) and read no test problem; the call
    without train_only then trains nothing more, chooses on the cached validation scores and tests once per seed."""
    cfg = tiny_config(tmp_path)
    cfg = dataclasses.replace(cfg, tasks=("grid",), lr_grid=(0.5, 1.0), val_size=3, seeds=(0, 1),
                              grid=dataclasses.replace(cfg.grid, methods=("pal-head",), views=("field",)))
    loads, real_load = [], paper._saved_policy
    monkeypatch.setattr(paper, "_saved_policy", lambda *a: loads.append(a) or real_load(*a))
    for seed in (0, 1):
        assert main(dataclasses.replace(cfg, seeds=(seed,), train_only=True)) == {"train_only": True}
    assert not loads and not list(tmp_path.glob("grid/*/test")) and not (tmp_path / "results.json").exists()
    assert len(list(tmp_path.glob("grid/pal-head-field-lr*-seed*/eval.json"))) == 2 * 2

    def no_training(*args, **kwargs):
        raise AssertionError("a lane's run was trained again")

    monkeypatch.setattr(paper, "train_action_head", no_training)
    result = main(cfg)
    assert len(loads) == 2 and result["selection"]["grid"]["pal-head-field"]["chosen_factor"] in (0.5, 1.0)
    with pytest.raises(ValueError, match="train_only needs an lr_grid"):
        PaperBenchConfig(train_only=True)


def test_random_moves_row_is_low_but_not_zero_on_small_grids():
    """The grid's trivial row: uniformly random moves through the environment (an illegal move ends the
    episode) reach the goal of some 3x3 one-waypoint grids and of few 6x6 ones."""
    task = GridTask(num_waypoints=(1, 1), view="field", wall_density=0.0)
    small, large = task.sample(0, 3, 200), GridTask(view="field").sample(0, 6, 200)
    easy = paper.grid_eval(task, "random", paper.RandomMoves(task, 0), small)["success"]
    hard = paper.grid_eval(task, "random", paper.RandomMoves(task, 0), large)["success"]
    assert 0.02 < easy < 0.6 and hard < easy, (easy, hard)
