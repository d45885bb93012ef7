"""benchmarks/prm_train_vs_trl.py: both trainers see the same token rows, and the script runs end to end.

The row check runs in CI without TRL against ``tests/fixtures/trl_prm_rows.json``: the rows TRL 1.13.0's
own ``PRMTrainer.tokenize_row`` gave for the 12 trajectories below (written by ``python
tests/test_prm_vs_trl.py --write-fixture`` with the optional extra ``pip install -e '.[trl-bench]'``).
With TRL installed, the tests below also recompute TRL's rows and check that the fixture still equals
them, and run the benchmark end to end.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from datasets import Dataset, Features, Sequence, Value

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prm_train_vs_trl.py"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "trl_prm_rows.json"


def load_bench():
    spec = importlib.util.spec_from_file_location("prm_train_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def rows_data(bench):
    """The 12 trajectories the row check uses (half of their step results corrupted)."""
    train, _ = bench.make_data(12, 0, max_digits=4, rate=0.5, seed=0)
    return train


def trl_rows(bench, tok, train) -> Dataset:
    """TRL's own tokenize_row on the stepwise records (needs trl)."""
    from trl.experimental.prm import PRMTrainer

    tok_trl = copy.deepcopy(tok)
    tok_trl.bos_token = None
    return bench.stepwise_dataset(train).map(  # the features as PRMTrainer gives them, else labels are cast to bool
        PRMTrainer.tokenize_row, remove_columns=["prompt", "completions", "labels"],
        features=Features({"labels": Sequence(Value("int64")), "input_ids": Sequence(Value("int64"))}),
        fn_kwargs={"tokenizer": tok_trl, "step_separator": bench.FMT.step_sep, "max_length": None,
                   "max_completion_length": None, "train_on_last_step_only": False, "is_eval": False},
    )


def test_vendored_trl_rows_equal_procsup_rows(bench, char_tok):
    """TRL's rows (vendored) equal procsup's, labels on the same tokens; runs without TRL."""
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["trl_version"] == "1.13.0"
    train = rows_data(bench)
    assert any(lab is False for t in train for lab in t.labels)
    ds = Dataset.from_list(fixture["rows"])
    bench.check_same_rows(ds, char_tok, train)
    with pytest.raises(AssertionError, match="differently"):  # with TRL's BOS the rows differ: the check bites
        bench.check_same_rows(ds.map(lambda r: {"input_ids": [char_tok.bos_token_id, *r["input_ids"][1:]]}), char_tok, train)
    moved = [dict(r, labels=[-100, *r["labels"][:-1]]) for r in fixture["rows"]]  # a label one token late
    with pytest.raises(AssertionError, match="differently"):
        bench.check_same_rows(Dataset.from_list(moved), char_tok, train)


def test_trl_rows_equal_procsup_rows_and_the_fixture(bench, char_tok):
    """TRL's own tokenize_row, run now, gives procsup's rows and the vendored ones."""
    pytest.importorskip("trl")
    train = rows_data(bench)
    ds = trl_rows(bench, char_tok, train)
    bench.check_same_rows(ds, char_tok, train)
    assert [dict(r) for r in ds] == json.loads(FIXTURE.read_text())["rows"]


def test_benchmark_runs_end_to_end(bench, tmp_path):
    pytest.importorskip("trl")
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


def write_fixture() -> None:
    """Regenerate ``tests/fixtures/trl_prm_rows.json`` (needs trl)."""
    import trl

    from procsup.models.factory import char_tokenizer

    bench = load_bench()
    ds = trl_rows(bench, char_tokenizer(), rows_data(bench))
    FIXTURE.write_text(json.dumps({
        "what": "TRL PRMTrainer.tokenize_row rows (input_ids, labels with -100) of tests/test_prm_vs_trl.py's 12 trajectories",
        "trl_version": trl.__version__, "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python tests/test_prm_vs_trl.py --write-fixture",
        "rows": [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in ds],
    }) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["--write-fixture"]:
    write_fixture()
