"""Smoke test of the paper benchmark (``procsup.bench.paper``): absurdly small budgets, one seed; checks
the result structure, the files, and that a second call reads every run from the cache."""

from __future__ import annotations

import json

import pytest

import procsup.bench.addition as addition_bench
import procsup.bench.paper as paper
from procsup.bench.paper import TASKS, PaperBenchConfig, main


def tiny_config(out) -> PaperBenchConfig:
    return PaperBenchConfig(
        output_dir=str(out), seeds=(0,), quick=True, hidden_size=16, num_layers=1, num_heads=2, steps=2, batch_size=4,
        test_size=2, addition_train_size=8, addition_test_digits=(3,), grid_train_size=6, grid_test_sizes=(4,), grid_steps=2,
        grid_batch_size=4, grid_hidden_size=16,
        logic_train_size=6, logic_steps=2, logic_hidden_size=16, word_train_size=6, word_batch_size=2, word_steps=2,
        word_hidden_size=16,
        consistency_kinds=("hidden", "action"),
    )


def test_quick_fills_budgets_and_explicit_values_win():
    quick = PaperBenchConfig(quick=True, steps=7)
    assert quick.steps == 7 and quick.hidden_size == paper.QUICK["hidden_size"]
    assert PaperBenchConfig().grid_test_sizes == paper.FULL["grid_test_sizes"]
    assert PaperBenchConfig().grid_views == ("trail", "local", "field") and quick.grid_views == ("trail", "field")
    with pytest.raises(ValueError):
        PaperBenchConfig(tasks=("nope",))
    with pytest.raises(ValueError):
        PaperBenchConfig(grid_views=("satellite",))
    with pytest.raises(ValueError):
        PaperBenchConfig(consistency_kinds=("logits",))
    with pytest.raises(ValueError):
        PaperBenchConfig(word_steps=0)


def test_main_smoke_and_resume(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    result = main(cfg)

    assert set(result["tables"]) == {*TASKS, "word_gaps"}
    assert set(result["tables"]["addition"]) == {"outcome", "history", "state"}
    grid = result["tables"]["grid"]
    assert set(grid) == {"pal-lm-field", "pal-lm-trail", "pal-head-field", "pal-head-trail", "text-history",
                         "text-outcome", "reinforce-field", "reinforce-trail"}  # quick: no local view
    for cell in grid["pal-head-trail"]["4"].values():
        assert 0.0 <= cell["mean"] <= 1.0 and len(cell["per_seed"]) == 1
    assert set(result["tables"]["logic"]["state"]) == {"5", "10"}
    assert set(result["tables"]["word_problems"]["history"]) == {"clean", "noisy"}
    mu = f"{cfg.consistency_mu:g}"
    assert set(result["tables"]["consistency"]) == {"state mu=0", f"state mu={mu} hidden", f"state mu={mu} action"}
    words = {r["method"]: r for r in result["runs"]["word_problems"]}
    # the same stories per optimizer step: a state-mode row is one step of a story
    assert words["history"]["batch_size"] == 2 and words["state"]["batch_size"] > 2
    arm = next(r for r in result["runs"]["consistency"] if r["method"] == f"state mu={mu} hidden")
    assert arm["key"]["mu"] == cfg.consistency_mu and arm["key"]["word_steps"] == 2
    reinforce = next(r for r in result["runs"]["grid"] if r["method"] == "reinforce-trail")
    assert reinforce["env_steps"] == reinforce["demonstration_steps"]  # RL gets PAL's number of env steps
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
    assert (full.grid_steps, full.grid_batch_size, full.grid_hidden_size) == (1500, 32, 64)
    assert PaperBenchConfig(quick=True).grid_steps == paper.QUICK["grid_steps"]
    with pytest.raises(ValueError, match="grid_steps"):
        PaperBenchConfig(grid_steps=0)
