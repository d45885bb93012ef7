"""benchmarks/prm_train_vs_trl.py: both trainers see the same token rows, and the script runs end to end.

Skipped unless TRL is installed (the optional extra ``pip install -e '.[trl-bench]'``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import pytest
from datasets import Features, Sequence, Value

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytest.importorskip("trl")

from trl.experimental.prm import PRMTrainer  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prm_train_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prm_train_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trl_rows_equal_procsup_rows(bench, char_tok):
    """TRL's own tokenize_row on the stepwise records gives procsup's rows, labels on the same tokens."""
    train, _ = bench.make_data(12, 0, max_digits=4, rate=0.5, seed=0)
    assert any(lab is False for t in train for lab in t.labels)
    tok_trl = copy.deepcopy(char_tok)
    tok_trl.bos_token = None
    ds = bench.stepwise_dataset(train).map(  # the features as PRMTrainer gives them, else labels are cast to bool
        PRMTrainer.tokenize_row, remove_columns=["prompt", "completions", "labels"],
        features=Features({"labels": Sequence(Value("int64")), "input_ids": Sequence(Value("int64"))}),
        fn_kwargs={"tokenizer": tok_trl, "step_separator": bench.FMT.step_sep, "max_length": None,
                   "max_completion_length": None, "train_on_last_step_only": False, "is_eval": False},
    )
    bench.check_same_rows(ds, char_tok, train)
    with pytest.raises(AssertionError, match="differently"):  # with TRL's BOS the rows differ: the check bites
        bench.check_same_rows(ds.map(lambda r: {"input_ids": [char_tok.bos_token_id, *r["input_ids"][1:]]}), char_tok, train)


def test_benchmark_runs_end_to_end(bench, tmp_path):
    out = tmp_path / "result.json"
    result = bench.main(["--repeats", "1", "--train-size", "24", "--eval-size", "8", "--max-digits", "3", "--steps", "2",
                         "--warmup", "1", "--batch", "4", "--hidden", "16", "--layers", "1", "--heads", "2",
                         "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text())["speedup"] == pytest.approx(result["speedup"])
    assert result["dense_speedup"] > 0
    for name in ("procsup", "procsup-dense", "trl"):
        assert result[name]["samples_per_s"] > 0
        assert 0.0 <= result[name]["step_accuracy"] <= 1.0
    assert result["procsup"]["padding"] <= result["trl"]["padding"]
