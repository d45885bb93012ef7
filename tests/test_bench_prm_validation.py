"""``bench prm`` with a validation split (``rm_val_problems``): both reward models are evaluated on their own
rows of fresh validation problems, and the checkpoint with the lowest validation loss is the one tested."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from procsup.bench import prm as bench
from procsup.bench.prm import PRMBenchConfig


@pytest.mark.parametrize("layout,seed", [("trace", 0), ("step", 3)])
def test_early_stopping_selects_the_lowest_validation_loss(tmp_path, layout, seed):
    # step: both reward models on one-step rows. The untrained policy's failed samples can end in an empty action;
    # such rows are left out of the validation file (the recorded runs' rule) and counted (seed 3's 8 problems
    # have one)
    cfg = PRMBenchConfig(output_dir=str(tmp_path), seeds=(seed,), hidden_size=16, num_layers=1, num_heads=2,
                         prm_layout=layout, orm_layout=layout, policy_train_size=16, policy_steps=2, label_problems=3,
                         label_samples=2, rm_steps=4, rm_batch_size=4, rm_val_problems=8, rm_eval_steps=2,
                         test_digits=2, test_size=3, n=4, beams=((2, 2),))
    result = bench.main(cfg)
    train_dir = Path(tmp_path) / f"seed{seed}" / "train"
    for name in ("prm", "orm"):
        chosen = json.loads((train_dir / name / bench.SELECTED).read_text())
        curve = dict((step, loss) for step, loss in chosen["val_curve"])
        assert set(curve) == {2, 4} and chosen["val_loss"] == min(curve.values())
        assert bench._rm_dir(train_dir, name, cfg) == train_dir / name / f"checkpoint-{chosen['step']}"
        assert (train_dir / f"{name}_validation.jsonl").is_file()
        assert result["runs"][0]["rm_train"][name]["selected"]["step"] == chosen["step"]
    left_out = result["runs"][0]["policy"]["validation_rows_left_out_empty_action"]
    assert left_out["prm"] == left_out["orm"] and (left_out["prm"] > 0) == (layout == "step")
    stored = [json.loads(x) for x in (train_dir / "prm_validation.jsonl").read_text().splitlines()]
    assert all(st["action"] for row in stored for st in row["steps"])


def test_validation_fields_off_by_default_keep_old_cache_keys():
    assert "rm_val_problems" not in bench._train_key(PRMBenchConfig(), 0)
    assert bench._train_key(PRMBenchConfig(rm_val_problems=5), 0)["rm_val_problems"] == 5
    assert "orm_layout" not in bench._train_key(PRMBenchConfig(), 0) and "orm_layout" not in bench._key(PRMBenchConfig(), 0)
    assert bench._train_key(PRMBenchConfig(orm_layout="step"), 0)["orm_layout"] == "step"
    assert bench._key(PRMBenchConfig(orm_layout="step"), 0)["orm_layout"] == "step"
    with pytest.raises(ValueError, match="rm_eval_steps"):
        PRMBenchConfig(rm_steps=10, rm_eval_steps=20)
    with pytest.raises(ValueError, match="rm_val_problems"):
        PRMBenchConfig(rm_val_problems=-1)


def _trained(losses: dict[int, list[tuple[float, float]]]) -> dict:
    """train_models-like records: ``losses[count]`` holds per seed the (PRM, ORM) validation loss."""
    seeds = range(len(next(iter(losses.values()))))
    return {s: {n: {"rm_train": {name: {"selected": {"val_loss": v[s][i], "step": 10 * n + s}}
                                 for i, name in enumerate(("prm", "orm"))}} for n, v in losses.items()} for s in seeds}


def test_label_selection_takes_the_lowest_mean_validation_loss_per_reward_model():
    # PRM: count 8 has the lower mean (seed 1 alone would pick 4); ORM: a tie goes to the smaller count
    sel = bench.label_selection(_trained({4: [(0.30, 0.5), (0.10, 0.5)], 8: [(0.15, 0.5), (0.20, 0.5)]}))
    assert sel["prm"]["chosen_label_problems"] == 8 and sel["prm"]["chosen_step"] == {"0": 80, "1": 81}
    assert sel["orm"]["chosen_label_problems"] == 4 and sel["orm"]["chosen_step"] == {"0": 40, "1": 41}
    assert sel["prm"]["val_loss"]["4"]["mean"] == pytest.approx(0.20)


def test_label_grid_trains_every_count_and_evaluates_only_the_chosen(tmp_path):
    cfg = PRMBenchConfig(output_dir=str(tmp_path), seeds=(0, 1), hidden_size=16, num_layers=1, num_heads=2,
                         prm_layout="step", orm_layout="step", policy_train_size=16, policy_steps=2, label_grid=(2, 4),
                         label_samples=2, rm_steps=4, rm_batch_size=4, rm_val_problems=6, rm_eval_steps=2,
                         test_digits=2, test_size=3, n=4, beams=((2, 2),))
    bench.main(replace(cfg, train_only=True, lane_labels=(2,)))  # a lane: one count, nothing evaluated
    assert sorted(p.name for p in tmp_path.glob("seed*/*")) == ["train-labels2", "train-labels2"]
    result = bench.main(cfg)
    for seed in (0, 1):
        d = tmp_path / f"seed{seed}"
        assert sorted(p.name for p in d.iterdir()) == ["eval", "train-labels2", "train-labels4"]
        # one validation split for every count; the same policy (trained before any label)
        for f in ("prm_validation.jsonl", "orm_validation.jsonl", "policy/model.safetensors"):
            assert (d / "train-labels2" / f).read_bytes() == (d / "train-labels4" / f).read_bytes()
        runs = {n: json.loads((d / f"train-labels{n}" / "eval.json").read_text()) for n in (2, 4)}
        assert [runs[n]["labels"]["label_traces"] for n in (2, 4)] == [4, 8]
        key = json.loads((d / "eval" / "eval.json").read_text())["key"]
        assert key["chosen_label_problems"] == {k: v["chosen_label_problems"] for k, v in result["label_selection"].items()}
    # the choice is label_selection's on the recorded validation losses, and each model's reported training is its count's
    trained = {s: {n: json.loads((tmp_path / f"seed{s}" / f"train-labels{n}" / "eval.json").read_text()) for n in (2, 4)}
               for s in (0, 1)}
    assert result["label_selection"] == json.loads(json.dumps(bench.label_selection(trained)))
    for run in result["runs"]:
        for name in ("prm", "orm"):
            chosen = result["label_selection"][name]["chosen_label_problems"]
            assert run["rm_train"][name] == trained[run["seed"]][chosen]["rm_train"][name]
            assert run["timings"][name] == trained[run["seed"]][chosen]["timings"][name]
            assert run["policy"]["label_problems"][name] == chosen


def test_label_grid_settings_are_checked():
    with pytest.raises(ValueError, match="label_grid needs rm_val_problems"):
        PRMBenchConfig(label_grid=(2, 4))
    with pytest.raises(ValueError, match="lane_labels"):
        PRMBenchConfig(label_grid=(2, 4), rm_val_problems=5, lane_labels=(2,))
    with pytest.raises(ValueError, match="lane_labels"):
        PRMBenchConfig(label_grid=(2, 4), rm_val_problems=5, lane_labels=(3,), train_only=True)
    assert "label_grid" not in bench._train_key(PRMBenchConfig(), 0)
    lane = PRMBenchConfig(label_grid=(2, 4), rm_val_problems=5, lane_labels=(2,), train_only=True)
    assert bench._train_key(lane, 0) == bench._train_key(replace(lane, lane_labels=(), train_only=False), 0)
