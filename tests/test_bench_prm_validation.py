"""``bench prm`` with a validation split (``rm_val_problems``): both reward models are evaluated on their own
rows of fresh validation problems, and the checkpoint with the lowest validation loss is the one tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procsup.bench import prm as bench
from procsup.bench.prm import PRMBenchConfig


@pytest.mark.parametrize("layout,seed", [("trace", 0), ("step", 3)])
def test_early_stopping_selects_the_lowest_validation_loss(tmp_path, layout, seed):
    # step: both reward models on one-step rows. The untrained policy's failed samples can end in an empty action,
    # which the validation file cannot hold: its rows are left out and counted (seed 3's 8 problems have one)
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
