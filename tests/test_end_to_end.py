"""End to end: the CLI, and a tiny train-then-evaluate run of the addition benchmark (with resume)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from procsup.bench.addition import AdditionBenchConfig, main
from procsup.cli import app
from procsup.data.io import write_jsonl
from procsup.tasks.addition import AdditionTask

runner = CliRunner()


def test_bench_addition_trains_evaluates_and_resumes(tmp_path):
    cfg = AdditionBenchConfig(
        output_dir=str(tmp_path / "bench"), seeds=(0,), train_size=64, test_size=8, test_digits=(2, 4), steps=6,
        batch_size=8, hidden_size=32, num_layers=1, num_heads=2, progress=False,
    )
    result = main(cfg)
    assert set(result["table"]) == {"outcome", "history", "state"}
    for method in ("outcome", "history", "state"):
        for d in ("2", "4"):
            cell = result["table"][method][d]
            assert 0.0 <= cell["exact_match"]["mean"] <= 1.0
            if method != "outcome":
                assert cell["right_answer_wrong_steps"]["mean"] <= cell["exact_match"]["mean"] + 1e-9
    assert (tmp_path / "bench" / "results.json").is_file()
    assert (tmp_path / "bench" / "accuracy.png").stat().st_size > 1000
    evals = sorted((tmp_path / "bench").glob("*-seed0/eval.json"))
    assert len(evals) == 3
    stamps = [p.stat().st_mtime_ns for p in evals]
    again = main(cfg)  # every run is cached: nothing is retrained
    assert [p.stat().st_mtime_ns for p in evals] == stamps
    assert again["table"] == json.loads(json.dumps(result["table"]))


def test_cli_init_validate_train(tmp_path):
    model_dir = tmp_path / "tiny"
    out = runner.invoke(app, ["init-model", str(model_dir), "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2"])
    assert out.exit_code == 0, out.output
    assert (model_dir / "model.safetensors").is_file()

    task = AdditionTask()
    data = tmp_path / "train.jsonl"
    write_jsonl([task.expert(p) for p in task.sample_range(0, 2, 16)], data)
    out = runner.invoke(app, ["validate", str(data)])
    assert out.exit_code == 0 and "16 valid trajectories" in out.output

    out = runner.invoke(app, ["train", f"model={model_dir}", f"train_file={data}", f"output_dir={tmp_path / 'run'}",
                              "max_steps=3", "batch_size=4", "progress=false", "mode=history"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "run" / "checkpoint-3" / "model.safetensors").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_cli_bad_config_and_bad_data_are_clear(tmp_path):
    out = runner.invoke(app, ["train", "output_dir=x", "lam=-1"])
    assert out.exit_code == 2 and "lam" in out.output
    out = runner.invoke(app, ["train", "output_dir=x", "no_such_field=1"])
    assert out.exit_code == 2 and "no_such_field" in out.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "1+1", "target": "2", "steps": [{"action": "2,0"}]}\n{"input": "1+2", "target": "3"}\n')
    out = runner.invoke(app, ["validate", str(bad)])
    assert out.exit_code == 1
    assert f"{bad}:2" in out.output and "steps" in out.output


def test_cli_evaluate_a_checkpoint(tmp_path):
    model_dir = tmp_path / "tiny"
    runner.invoke(app, ["init-model", str(model_dir), "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2"])
    out = runner.invoke(app, ["evaluate", "addition", str(model_dir), "--mode", "state", "--size", "3", "--count", "4"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output[out.output.index('{"task"'):].splitlines()[0])  # after the loading bar
    assert metrics["n"] == 4 and 0.0 <= metrics["exact_match"] <= 1.0
    out = runner.invoke(app, ["evaluate", "addition", str(tmp_path / "missing")])
    assert out.exit_code == 1 and "missing" in out.output


def test_bench_addition_retrains_when_settings_change(tmp_path):
    """A run folder left by other settings is cleared, not resumed (the trainer resumes from checkpoints)."""
    from dataclasses import replace

    cfg = AdditionBenchConfig(
        output_dir=str(tmp_path / "bench"), methods=("state",), seeds=(0,), train_size=32, test_size=4,
        test_digits=(2,), steps=4, batch_size=8, hidden_size=32, num_layers=1, num_heads=2, progress=False,
    )
    main(cfg)
    changed = replace(cfg, learning_rate=1e-3)
    result = main(changed)
    (run,) = result["runs"]
    assert run["config"]["learning_rate"] == 1e-3
    assert run["final_train_metrics"].get("step") == 4  # trained again: a resumed stale run logs no step
    metrics = (tmp_path / "bench" / "state-seed0" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1  # one fresh run of 4 steps (log_steps 10 -> a line at the end), not two


@pytest.mark.parametrize("grid, runs", [([], 3), (["lr_grid=0.5,1", "val_digits=2", "val_size=4"], 9)])
def test_cli_bench_addition_fits_80_columns_and_says_cached(tmp_path, grid, runs):
    """With lr_grid the runs are the validation runs (methods x factors) plus the chosen runs' tests."""
    args = ["bench", "addition", f"output_dir={tmp_path / 'b'}", "seeds=0", "train_size=32", "test_size=4",
            "test_digits=2,3,4,5", "steps=2", "batch_size=8", "hidden_size=32", "num_layers=1", "num_heads=2",
            *grid, "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert max(len(line) for line in first.output.splitlines()) <= 80, first.output
    assert "cached" not in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and f"all {runs} runs cached" in again.output and "wall time" not in again.output


def test_fit_table_splits_wide_tables():
    from procsup.bench.report import fit_table

    rows = [["name", *[f"column {i} header" for i in range(8)]], ["row", *[f"{i}.0 ± 0.1" for i in range(8)]]]
    text = fit_table(rows)
    assert max(map(len, text.splitlines())) <= 80 and text.count("name") >= 2  # row names repeated per part
    assert all(f"column {i} header" in text for i in range(8))


def test_cache_records_the_code_version_and_checks_it(tmp_path):
    from procsup.bench import cache

    calls = []
    run = cache.cached_run(tmp_path / "r", {"a": 1}, lambda d: calls.append(1) or {"x": 1})
    assert run["code"] == cache.code_version() and "cached" not in run
    again = cache.cached_run(tmp_path / "r", {"a": 1}, lambda d: calls.append(1) or {"x": 1})
    assert again["cached"] is True and len(calls) == 1
    saved = json.loads((tmp_path / "r" / "eval.json").read_text())
    (tmp_path / "r" / "eval.json").write_text(json.dumps({**saved, "code": {"version": "0.0.0-old", "source": "x"}}))
    cache.cached_run(tmp_path / "r", {"a": 1}, lambda d: calls.append(1) or {"x": 1})
    assert len(calls) == 2  # another procsup version: re-run
    del saved["code"]  # recorded before versions were kept: reused
    (tmp_path / "r" / "eval.json").write_text(json.dumps(saved))
    assert cache.cached_run(tmp_path / "r", {"a": 1}, lambda d: calls.append(1) or {"x": 1})["cached"] is True


def test_cache_refuses_a_run_another_live_call_is_building(tmp_path):
    """A lane still training or evaluating a run holds its claim: a second bench call on the same output_dir
    stops with a one-line error naming the holder and leaves the folder as it is (it used to clear it)."""
    import os
    import socket

    from procsup.bench import cache

    run_dir = tmp_path / "grid" / "arm-seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint-100").mkdir()
    claim = tmp_path / "grid" / ".claim-arm-seed0.lock"
    claim.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    calls = []
    with pytest.raises(ValueError, match=f"bench run claim .* in use by pid {os.getppid()}"):
        cache.cached_run(run_dir, {"a": 1}, lambda d: calls.append(1) or {"x": 1})
    assert not calls and (run_dir / "checkpoint-100").is_dir()
    # the holder gone (a pid that is not running): the claim is taken over and the run is built
    claim.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "started": 0}))
    assert cache.cached_run(run_dir, {"a": 1}, lambda d: calls.append(1) or {"x": 1})["x"] == 1
    assert calls == [1] and not claim.exists()

