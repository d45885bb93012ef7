"""Dataset converters: every source on its fixture excerpt and (when present) on the shared copy,
label invariants, the first-error round trip, the GSM8K calculator parser, errors and rejects."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from procsup.data.converters import (
    MATH_SHEPHERD_STEP_TAG,
    NEUTRAL_POLICIES,
    check_calculation,
    eval_arithmetic,
    from_agentprocessbench,
    from_gsm8k,
    from_math_shepherd,
    from_mr_ben,
    from_prm800k,
    from_prmbench,
    from_processbench,
    read_agentprocessbench,
    read_gsm8k,
    read_math_shepherd,
    read_mr_ben,
    read_prm800k,
    read_prmbench,
    read_processbench,
)
from procsup.data.io import read_jsonl, write_jsonl
from procsup.data.trajectory import TrajectoryError

FIXTURES = Path(__file__).parent / "fixtures" / "converters"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo

# name -> (reader, fixture file, file under ../shared/data). The invariant checked on each is
# _expected_steps: the step count the source itself defines, computed without the converter.
SOURCES = {
    "prm800k": (read_prm800k, "prm800k.jsonl", "prm800k_samples/prm800k_samples_unique.jsonl"),
    "math_shepherd": (read_math_shepherd, "math_shepherd.jsonl", "openr_prm_samples/samples_math-shepherd.jsonl"),
    "processbench": (read_processbench, "processbench_gsm8k.json", "processbench/gsm8k.json"),
    "prmbench": (read_prmbench, "prmbench.jsonl", "prmbench/prm_test_p12_multi_solutions.jsonl"),
    "mr_ben": (read_mr_ben, "mr_ben_physics.json", "mr_ben/biology.json"),
    "gsm8k": (read_gsm8k, "gsm8k_train.jsonl", "gsm8k/test.jsonl"),
    "agentprocessbench": (read_agentprocessbench, "agentprocessbench_hotpotqa.jsonl", "agentprocessbench/hotpotqa.jsonl"),
}


def _raw_records(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [r for solutions in data.values() for r in solutions]


def _expected_steps(name: str, raw: dict) -> int:
    """Step count from the source's own definition, not from the converter."""
    if name == "math_shepherd":
        return raw["input"].count(MATH_SHEPHERD_STEP_TAG)
    if name == "processbench":
        return len(raw["steps"]) if raw["label"] == -1 else raw["label"] + 1
    if name == "prmbench":
        return len(raw["modified_process"])
    if name == "mr_ben":
        steps = [s for s in raw["Model_Solution_Steps"] if s.strip()]
        return len(steps) if raw["Model_Solution_First_Error_Step"] == "N/A" else None  # position checked elsewhere
    if name == "gsm8k":
        return len([line for line in raw["answer"].split("\n") if line.strip()]) - 1
    if name == "agentprocessbench":
        assistant = [i for i, m in enumerate(raw["messages"]) if m["role"] == "assistant"]
        assert sorted(int(k) for k in raw["step_labels"]) == assistant  # every assistant message is labelled
        return len(assistant)
    return None  # prm800k: depends on where labelling stopped; checked by its own tests


def _check_source(name: str, path: Path) -> None:
    reader = SOURCES[name][0]
    trajectories = reader(path)
    raws = _raw_records(path)
    assert len(trajectories) == len(raws)
    for t, raw in zip(trajectories, raws):
        assert t.steps and len(t.labels) == len(t.steps)
        assert all(s.action for s in t.steps)
        assert t.meta["source"] == name
        expected = _expected_steps(name, raw)
        if expected is not None:
            assert len(t.steps) == expected
        if name in ("math_shepherd", "processbench", "prmbench", "agentprocessbench"):
            assert t.has_labels  # these sources label every kept step
        if name == "gsm8k":  # reference solutions: every checkable calculation is right
            assert False not in t.labels
            assert [lab is None for lab in t.labels] == [not c for c in t.meta["calculations"]]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_fixture_converts(name):
    _check_source(name, FIXTURES / SOURCES[name][1])


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_shared_sample_converts(name):
    path = SHARED / SOURCES[name][2]
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (the ../shared/data folder beside the repo)")
    _check_source(name, path)


def test_fixture_trajectories_round_trip_through_jsonl(tmp_path):
    trajectories = [t for name, (reader, fixture, _) in SOURCES.items() for t in reader(FIXTURES / fixture)]
    write_jsonl(trajectories, tmp_path / "all.jsonl")  # meta must be plain JSON
    assert read_jsonl(tmp_path / "all.jsonl") == trajectories


# --- first-error sources -----------------------------------------------------------------------


def _first_false(labels) -> int:
    return next((i for i, lab in enumerate(labels) if lab is False), -1)


@pytest.mark.parametrize("keep_after_error", [False, True])
def test_processbench_first_error_round_trips(keep_after_error):
    paths = [FIXTURES / "processbench_gsm8k.json"] + [p for p in [SHARED / "processbench" / "gsm8k.json"] if p.exists()]
    for path in paths:
        for t, raw in zip(read_processbench(path, keep_after_error=keep_after_error), _raw_records(path)):
            assert t.meta["first_error"] == raw["label"] == _first_false(t.labels)
            if keep_after_error:
                assert [s.action for s in t.steps] == raw["steps"]
                assert t.labels[raw["label"] + 1 :] == [None] * (len(raw["steps"]) - raw["label"] - 1) or raw["label"] == -1
            else:
                assert all(t.labels) or t.labels[-1] is False  # the trajectory ends on its first error


@pytest.mark.parametrize(("label", "field"), [(3, "label"), (-2, "label"), ("1", "label"), (True, "label")])
def test_processbench_bad_label_names_the_field(label, field):
    with pytest.raises(TrajectoryError) as e:
        from_processbench({"problem": "p", "steps": ["a", "b", "c"], "label": label})
    assert e.value.field == field
    # an empty step is read as one (the format allows empty actions), so the label index still points at it
    assert [st.action for st in from_processbench({"problem": "p", "steps": ["a", "", "c"], "label": 1}).steps] == ["a", ""]


def test_mr_ben_first_error_is_the_step_numbered_k():
    record = {
        "Question": "q",
        "Options": "A: 1\nB: 2",
        "Ground_Truth_Answer": "A",
        "Model_Solution_Steps": ["Step 1: a", "", "Step 2: b", "", "Step 3: c", "Solution: Choice_B"],
        "Model_Solution_First_Error_Step": "2",
        "Question_UUID": "u",
    }
    t = from_mr_ben(record)
    assert [s.action for s in t.steps] == ["a", "b"]  # blank separators and "Step k:" prefixes gone
    assert t.labels == [True, False] and t.meta["first_error"] == 1 == _first_false(t.labels)
    kept = from_mr_ben(record, keep_after_error=True)
    assert kept.labels == [True, False, None, None]
    assert from_mr_ben({**record, "Model_Solution_First_Error_Step": "N/A"}).labels == [True] * 4
    assert t.input == "q\nA: 1\nB: 2" and t.target == "A"


def test_mr_ben_shared_first_error_round_trips(tmp_path):
    path = SHARED / "mr_ben" / "medicine.json"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    trajectories = read_mr_ben(path, rejects=tmp_path / "rejects.jsonl")
    for t in trajectories:
        assert t.meta["first_error"] == _first_false(t.labels)
        assert (t.meta["first_error"] == -1) == (t.meta["correctness"] == "correct")
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").open()]
    assert len(rejected) == 1 and "Model_Solution_First_Error_Step" in rejected[0]["error"]  # step 5 of 4


def test_mr_ben_coding_record_is_refused():
    with pytest.raises(TrajectoryError) as e:
        from_mr_ben({"Question": "q", "Model_Solution_Steps": "def f(): pass", "Model_Solution_First_Error_Step": "pass"})
    assert e.value.field == "Model_Solution_Steps"


# --- PRM800K -----------------------------------------------------------------------------------


def _prm800k(steps, finish="found_error"):
    return {
        "labeler": "x",
        "generation": 6,
        "question": {"problem": "p", "ground_truth_answer": "4"},
        "label": {"steps": steps, "finish_reason": finish},
    }


def _step(ratings, chosen=0, human=None):
    completions = [{"text": f"t{i}", "rating": r} for i, r in enumerate(ratings)]
    return {"completions": completions, "chosen_completion": chosen, "human_completion": human}


@pytest.mark.parametrize("neutral", sorted(NEUTRAL_POLICIES))
def test_prm800k_neutral_policies(neutral):
    t = from_prm800k(_prm800k([_step([1]), _step([0]), _step([0, -1, 1], chosen=None)]), neutral=neutral)
    assert t.labels == [True, NEUTRAL_POLICIES[neutral], False]
    assert [s.action for s in t.steps] == ["t0", "t0", "t1"]  # ends on the first -1 completion
    assert t.target == "4" and t.meta["finish_reason"] == "found_error"


def test_prm800k_follows_chosen_and_human_completions():
    human = {"text": "mine", "rating": None}
    steps = [_step([-1, 1], chosen=1), _step([-1, -1], chosen=None, human=human), _step([None, None], chosen=None)]
    t = from_prm800k(_prm800k(steps, "give_up"))
    assert [s.action for s in t.steps] == ["t1", "mine"]  # the unrated last step is dropped
    assert t.labels == [True, True] and t.meta["human_completion_steps"] == [1]


def test_prm800k_bad_records_name_the_field():
    with pytest.raises(TrajectoryError) as e:
        from_prm800k(_prm800k([_step([1], chosen=None), _step([1])]))
    assert e.value.field == "label.steps[0].chosen_completion"
    with pytest.raises(TrajectoryError) as e:
        from_prm800k(_prm800k([_step([1], chosen=3)]))
    assert e.value.field == "label.steps[0].chosen_completion"
    with pytest.raises(TrajectoryError) as e:
        from_prm800k(_prm800k([_step([2])]))
    assert e.value.field == "label.steps[0].completions[0].rating"
    with pytest.raises(TrajectoryError) as e:
        from_prm800k({"label": {"steps": []}})
    assert e.value.field == "question"
    with pytest.raises(ValueError, match="neutral"):
        read_prm800k(FIXTURES / "prm800k.jsonl", neutral="drop")


# --- Math-Shepherd, PRMBench, AgentProcessBench ------------------------------------------------


def test_math_shepherd_labels_come_from_the_tag_positions():
    tag = MATH_SHEPHERD_STEP_TAG
    record = {
        "input": f"Q? Step 1: a = 1 {tag}\nStep 2: b {tag}\nStep 3: The answer is: 7 {tag}",
        "label": "Q? Step 1: a = 1 +\nStep 2: b -\nStep 3: The answer is: 7 -",
        "task": "GSM8K",
    }
    t = from_math_shepherd(record)
    assert t.input == "Q?" and t.target == "7"
    assert [s.action for s in t.steps] == ["a = 1", "b", "The answer is: 7"]
    assert t.labels == [True, False, False]
    for bad in ("Q? Step 1: a = 1 +\nStep 2: b ?\nStep 3: The answer is: 7 -", "Q? Step 1: a = 2 +\nStep 2: b -\nStep 3: x -"):
        with pytest.raises(TrajectoryError) as e:
            from_math_shepherd({**record, "label": bad})
        assert e.value.field == "label"


def test_prmbench_labels_all_error_steps_and_refuses_out_of_range():
    record = {"modified_question": "q", "modified_process": ["1. a", "Step 2: b", "3.5 is c"], "error_steps": [2, 3], "idx": "i"}
    t = from_prmbench(record)
    assert t.labels == [True, False, False] and [s.action for s in t.steps] == ["a", "b", "3.5 is c"]
    with pytest.raises(TrajectoryError) as e:
        from_prmbench({**record, "error_steps": [2, 4]})
    assert e.value.field == "error_steps[1]"
    both = read_prmbench(FIXTURES / "prmbench.jsonl", include_original=True)
    assert [t.meta["process"] for t in both] == ["modified", "original"] * 2
    assert all(t.labels == [True] * len(t.steps) for t in both[1::2])


def test_agentprocessbench_steps_are_assistant_messages():
    record = {
        "question": "q",
        "ground_truth": {"target": ["Paris", "paris"]},
        "messages": [
            {"role": "user", "content": "ask"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "search", "arguments": "{}"}}]},
            {"role": "tool", "content": "result"},
            {"role": "assistant", "content": "Paris"},
        ],
        "step_labels": {"1": 0, "3": 1},
        "final_label": 1,
    }
    t = from_agentprocessbench(record, neutral="soft")
    assert t.labels == [0.5, True] and t.target == "Paris"
    assert [s.state for s in t.steps] == ["ask", "result"]
    assert '"name": "search"' in t.steps[0].action
    with pytest.raises(TrajectoryError) as e:
        from_agentprocessbench({**record, "step_labels": {"2": 1}})
    assert e.value.field == "step_labels['2']"


# --- GSM8K calculator annotations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("48/2", 24),
        ("2+3*4", 14),
        ("(2+3)*4", 20),
        ("-3+5", 2),
        ("10/4", Fraction(5, 2)),
        (" 1.5 * 2 ", 3),
        (".5+.5", 1),
        ("2-(-(3))", 5),
    ],
)
def test_eval_arithmetic(text, value):
    assert eval_arithmetic(text) == value


@pytest.mark.parametrize("text", ["__import__('os').system('x')", "2**8", "abs(-1)", "1 +", "(1", "1)", "", "1e5", "x"])
def test_eval_arithmetic_rejects_anything_else(text):
    with pytest.raises(ValueError):
        eval_arithmetic(text)


@pytest.mark.parametrize(
    ("annotation", "correct"),
    [
        ("48/2=24", True),
        ("10/3=3.33", True),  # a claim with decimals may round
        ("6*0.5=3.00", True),
        ("48/2=25", False),
        ("10/3=3.4", False),
        ("10/3=3", False),  # a whole-number claim must be exact
        ("7/2=4", False),
        ("5/0=1", False),  # division by zero: wrong, not an exception
        ("5/(2-2)=0", False),
        ("abc", None),  # cannot be checked
        ("1+=2", None),
        ("560//10=56", None),
    ],
)
def test_check_calculation(annotation, correct):
    assert check_calculation(annotation)["correct"] is correct


def test_malicious_annotation_executes_nothing(monkeypatch, tmp_path):
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    marker = tmp_path / "pwned"
    record = {"question": "q", "answer": f"A <<__import__('os').system('touch {marker}')=0>>0.\nB <<1+1=2>>2.\n#### 2"}
    t = from_gsm8k(record)
    assert t.labels == [None, True] and not called and not marker.exists()
    assert t.meta["calculations"][0][0]["value"] is None


def test_gsm8k_labels_each_step_by_its_arithmetic():
    record = {"question": "q", "answer": "a <<2*3=6>>6 and <<6+1=8>>8\nno calculator here\nb <<4/0=1>>1\nc <<9-4=5>>5\n#### 5"}
    t = from_gsm8k(record)
    assert t.labels == [False, None, False, True]  # one wrong annotation makes the step wrong
    assert t.steps[0].action == "a 6 and 8" and t.target == "5"
    assert from_gsm8k(record, keep_annotations=True).steps[0].action == "a <<2*3=6>>6 and <<6+1=8>>8"
    assert t.meta["calculations"][3] == [{"expr": "9-4", "claimed": "5", "value": 5.0, "correct": True}]
    with pytest.raises(TrajectoryError) as e:
        from_gsm8k({"question": "q", "answer": "a\nb"})
    assert e.value.field == "answer"


# --- errors located in files, and rejects ------------------------------------------------------


def test_bad_jsonl_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    good = (FIXTURES / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path.write_text(good + "\n" + json.dumps({"question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(TrajectoryError) as e:
        read_gsm8k(path)
    assert e.value.where == f"{path}:2" and e.value.field == "answer"
    assert f"{path}:2: field 'answer'" in str(e.value)


def test_bad_json_array_record_names_file_index_and_field(tmp_path):
    records = json.loads((FIXTURES / "processbench_gsm8k.json").read_text(encoding="utf-8"))
    records[2]["label"] = 99
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(TrajectoryError) as e:
        read_processbench(path)
    assert e.value.where == f"{path}:[2]" and e.value.field == "label"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(TrajectoryError, match="invalid JSON") as e:
        read_processbench(path)
    assert e.value.where == str(path)


def test_bad_mr_ben_record_names_question_and_solution(tmp_path):
    data = json.loads((FIXTURES / "mr_ben_physics.json").read_text(encoding="utf-8"))
    key = next(iter(data))
    del data[key][1]["Question"]
    path = tmp_path / "physics.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TrajectoryError) as e:
        read_mr_ben(path)
    assert e.value.where == f"{path}:[{key!r}][1]" and e.value.field == "Question"


def test_rejects_work_through_iter_records(tmp_path, caplog):
    lines = (FIXTURES / "math_shepherd.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.dumps({"input": "no tag", "label": "no tag"})
    path = tmp_path / "shepherd.jsonl"
    path.write_text("\n".join([lines[0], bad, lines[1], "{not json"]) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    with caplog.at_level("WARNING"):
        trajectories = read_math_shepherd(path, rejects=rejects)
    assert len(trajectories) == 2
    rows = [json.loads(line) for line in rejects.open(encoding="utf-8")]
    assert [r["line"] for r in rows] == [2, 4]
    assert "field 'input'" in rows[0]["error"] and rows[0]["raw"] == bad
    assert "rejected 2" in caplog.text


def test_rejects_work_for_json_arrays(tmp_path):
    records = json.loads((FIXTURES / "processbench_gsm8k.json").read_text(encoding="utf-8"))
    records[1]["steps"] = "not a list"
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    assert len(read_processbench(path, rejects=rejects)) == 3
    (row,) = [json.loads(line) for line in rejects.open(encoding="utf-8")]
    assert row["index"] == "[1]" and "field 'steps'" in row["error"]
