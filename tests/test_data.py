"""Trajectory formats: round-trips between dict, JSONL, datasets.Dataset and TRL stepwise, and the
errors bad input gets (file:line and field)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.data.convert import (
    from_dataset,
    from_stepwise,
    read_stepwise_jsonl,
    to_dataset,
    to_stepwise,
    write_stepwise_jsonl,
)
from procsup.data.io import iter_jsonl, read_jsonl, write_jsonl
from procsup.data.trajectory import Step, Trajectory, TrajectoryError

FIXTURE = Path(__file__).parent / "fixtures" / "stepwise_sample.jsonl"
STEPWISE_RESERVED = {"prompt", "completions", "labels", "target"}


def canon(trajectories: list[Trajectory]) -> list[str]:
    """Type-exact form for comparisons: ``True == 1.0`` in Python, but not here."""
    return [json.dumps(t.to_dict(), sort_keys=True) for t in trajectories]


def good(**overrides) -> dict:
    record = {"input": "2+2?", "target": "4", "steps": [{"action": "2+2=4", "label": True}]}
    return {**record, **overrides}


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


# --- strategies: unicode text (incl. control chars and U+2028), optional fields, bool/float labels ---

text = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
labels = st.booleans() | st.floats(min_value=0.0, max_value=1.0)
steps = st.builds(
    Step,
    action=st.text(min_size=1, max_size=12),
    state=st.none() | text,
    label=st.none() | labels,
    key=st.none() | text,
)
metas = st.dictionaries(text, json_values, max_size=3)
trajectories = st.builds(
    Trajectory, input=text, target=text, steps=st.lists(steps, min_size=1, max_size=4), meta=metas
)
# What the stepwise format can hold: every step labelled, no state/key, meta keys not its columns.
stepwise_trajectories = st.builds(
    Trajectory,
    input=text,
    target=text,
    steps=st.lists(st.builds(Step, action=st.text(min_size=1, max_size=12), label=labels), min_size=1, max_size=4),
    meta=metas.map(lambda m: {k: v for k, v in m.items() if k not in STEPWISE_RESERVED}),
)


# --- round-trips ---

FAST = settings(max_examples=30, deadline=None)  # keeps the default suite at a few seconds


@FAST
@given(trajectories)
def test_dict_round_trip(t):
    assert canon([Trajectory.from_dict(t.to_dict())]) == canon([t])


@FAST
@given(st.lists(trajectories, max_size=4))
def test_jsonl_round_trip(ts):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        write_jsonl(ts, path)
        assert canon(read_jsonl(path)) == canon(ts)


@FAST
@given(st.lists(trajectories, max_size=4))
def test_dataset_round_trip(ts):
    assert canon(from_dataset(to_dataset(ts))) == canon(ts)


@FAST
@given(stepwise_trajectories)
def test_stepwise_round_trip(t):
    record = to_stepwise(t, target_field="target")
    assert canon([from_stepwise(json.loads(json.dumps(record)), target_field="target")]) == canon([t])


def test_bool_and_float_labels_keep_their_type(tmp_path):
    t = Trajectory("x", "y", [Step("a", label=True), Step("b", label=1.0), Step("c", label=0.0), Step("d", label=False)])
    expected = [True, 1.0, 0.0, False]
    write_jsonl([t], tmp_path / "t.jsonl")
    for back in (read_jsonl(tmp_path / "t.jsonl")[0], from_dataset(to_dataset([t]))[0], from_stepwise(to_stepwise(t))):
        assert [(type(lab), lab) for lab in back.labels] == [(type(lab), lab) for lab in expected]


def test_optional_fields_round_trip_through_dataset():
    t = Trajectory("x", "", [Step("a"), Step("b", state="s", key="k", label=0.25)], meta={"src": None, "n": [1, 2.5]})
    ds = to_dataset([t])
    assert ds[0]["steps"][0] == {"action": "a", "state": None, "label": None, "label_is_bool": False, "key": None}
    assert canon(from_dataset(ds)) == canon([t])


def test_iter_jsonl_is_lazy_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(good()), "", "   ", json.dumps(good(target="5"))])
    it = iter_jsonl(path)
    assert next(it).target == "4"
    assert [t.target for t in it] == ["5"]


# --- bad input: file:line and field ---

BAD_LINES = {
    "missing field": (json.dumps({"input": "q", "steps": ["a"]}), "target", "missing required field"),
    "wrong type": (json.dumps(good(input=3)), "input", "must be a string, got a int"),
    "label count": (json.dumps(good(steps=["a", "b"], labels=[True])), "labels", "1 labels for 2 steps"),
    "empty steps": (json.dumps(good(steps=[])), "steps", "at least one step"),
    "empty action": (json.dumps(good(steps=[{"action": ""}])), "steps[0].action", "must not be empty"),
    "label 1.5": (json.dumps(good(steps=[{"action": "a", "label": 1.5}])), "steps[0].label", "got 1.5"),
    "label -1": (json.dumps(good(steps=["a", {"action": "b", "label": -1}])), "steps[1].label", "got -1"),
    "label NaN": ('{"input": "q", "target": "", "steps": [{"action": "a", "label": NaN}]}', "steps[0].label", "got nan"),
    "huge int label": (json.dumps(good(steps=[{"action": "a", "label": 10**400}])), "steps[0].label", "in [0, 1]"),
    "label as string": (json.dumps(good(steps=[{"action": "a", "label": "+"}])), "steps[0].label", "got str"),
    "unknown field": (json.dumps(good(extra=1)), "extra", "belongs in 'meta'"),
    "not an object": ("[1, 2]", None, "must be a JSON object, got list"),
    "invalid JSON": ('{"input": "q",', None, "invalid JSON"),
    "non-UTF-8": (b'{"input": "caf\xe9", "target": "", "steps": ["a"]}', None, "not valid UTF-8: byte 0xe9"),
}


@pytest.mark.parametrize("case", BAD_LINES, ids=list(BAD_LINES))
def test_bad_record_names_file_line_and_field(tmp_path, case):
    line, field, message = BAD_LINES[case]
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(good()), "", line, json.dumps(good())])
    with pytest.raises(TrajectoryError) as info:
        read_jsonl(path)
    err = info.value
    assert err.where == f"{path}:3"
    assert err.field == field
    prefix = f"{path}:3: field '{field}': " if field else f"{path}:3: "
    assert str(err).startswith(prefix)
    assert message in str(err)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(good()).encode() + b"\r\n")
    assert read_jsonl(path)[0].target == "4"


BAD_STEPWISE = {
    "missing labels": ({"prompt": "q", "completions": ["a"]}, "labels", "missing required field"),
    "completion not a string": ({"prompt": "q", "completions": ["a", 7], "labels": [True, True]}, "completions[1]", "got int"),
    "empty completion": ({"prompt": "q", "completions": [""], "labels": [True]}, "completions[0]", "must not be empty"),
    "no completions": ({"prompt": "q", "completions": [], "labels": []}, "completions", "at least one step"),
    "label count": ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "labels", "1 labels for 2 steps"),
    "null label": ({"prompt": "q", "completions": ["a"], "labels": [None]}, "labels[0]", "got null"),
    "label out of range": ({"prompt": "q", "completions": ["a"], "labels": [2]}, "labels[0]", "got 2"),
    "prompt not a string": ({"prompt": ["q"], "completions": ["a"], "labels": [True]}, "prompt", "got a list"),
}


@pytest.mark.parametrize("case", BAD_STEPWISE, ids=list(BAD_STEPWISE))
def test_bad_stepwise_record_names_stepwise_field(tmp_path, case):
    record, field, message = BAD_STEPWISE[case]
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(record)])
    with pytest.raises(TrajectoryError) as info:
        read_stepwise_jsonl(path)
    assert (info.value.where, info.value.field) == (f"{path}:1", field)
    assert message in str(info.value)


def test_from_stepwise_target_policy():
    record = {"prompt": "q", "completions": ["a"], "labels": [0.5], "answer": "42", "source": "x"}
    assert from_stepwise(record).target == ""
    assert from_stepwise(record).meta == {"answer": "42", "source": "x"}
    assert from_stepwise(record, target_field="answer").target == "42"
    with pytest.raises(TrajectoryError, match="field 'gold': missing required field"):
        from_stepwise(record, target_field="gold")


def test_to_stepwise_needs_every_label_and_no_column_clash():
    with pytest.raises(TrajectoryError, match=r"field 'steps\[1\].label'"):
        to_stepwise(Trajectory("q", "", [Step("a", label=True), Step("b")]))
    with pytest.raises(TrajectoryError, match="field 'meta.labels'"):
        to_stepwise(Trajectory("q", "", [Step("a", label=True)], meta={"labels": 1}))


def test_from_dataset_refuses_a_soft_label_flagged_bool():
    ds = to_dataset([Trajectory("q", "", [Step("a", label=True)])])
    rows = ds.to_list()
    rows[0]["steps"][0]["label"] = 0.5
    with pytest.raises(TrajectoryError, match=r"row 0: field 'steps\[0\].label': label_is_bool"):
        from_dataset(type(ds).from_list(rows, features=ds.features))


# --- reject file ---


def test_rejects_keeps_good_records_and_logs_the_reasons(tmp_path, caplog):
    bad_json, bad_label = '{"input": ', json.dumps(good(steps=[{"action": "a", "label": 1.5}]))
    lines = [json.dumps(good(target="1")), bad_json, "", b"\xff\xfe", bad_label, json.dumps(good(target="2"))]
    path, rejects = write_lines(tmp_path / "mixed.jsonl", lines), tmp_path / "rejects.jsonl"
    with caplog.at_level(logging.INFO, logger="procsup.data.io"):
        kept = read_jsonl(path, rejects=rejects)
    assert [t.target for t in kept] == ["1", "2"]
    rows = [json.loads(x) for x in rejects.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [2, 4, 5]
    assert [r["raw"] for r in rows] == [bad_json, "\\xff\\xfe", bad_label]
    assert "invalid JSON" in rows[0]["error"] and f"{path}:2" in rows[0]["error"]
    assert "not valid UTF-8" in rows[1]["error"]
    assert "field 'steps[0].label'" in rows[2]["error"]
    summary = [r.getMessage() for r in caplog.records if r.name == "procsup.data.io"]
    assert summary == [f"{path}: kept 2 record(s), rejected 3 (written to {rejects})"]
    with pytest.raises(TrajectoryError, match=":2: invalid JSON"):
        read_jsonl(path)


def test_rejects_work_for_stepwise_files(tmp_path):
    lines = [json.dumps({"prompt": "q", "completions": ["a"], "labels": [True]}), json.dumps({"prompt": "q"})]
    path, rejects = write_lines(tmp_path / "s.jsonl", lines), tmp_path / "r.jsonl"
    assert len(read_stepwise_jsonl(path, rejects=rejects)) == 1
    assert json.loads(rejects.read_text())["line"] == 2


# --- atomic write ---


def unserializable_third() -> list[Trajectory]:
    ts = [Trajectory("q", str(i), [Step("a", label=True)]) for i in range(5)]
    ts[2] = Trajectory("q", "2", [Step("a")], meta={"bad": object()})
    return ts


def test_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old content\n")
    with pytest.raises(TrajectoryError, match=f"{path}:3: record 2 cannot be written as JSON"):
        write_jsonl(unserializable_third(), path)
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_failed_write_creates_no_file(tmp_path):
    with pytest.raises(TrajectoryError):
        write_jsonl(unserializable_third(), tmp_path / "out.jsonl")
    with pytest.raises(TrajectoryError):  # NaN is not standard JSON: refused, not written
        write_jsonl([Trajectory("q", "", [Step("a")], meta={"x": float("nan")})], tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


# --- real-data fixture ---


def test_stepwise_fixture_reads_and_round_trips(tmp_path):
    ts = read_stepwise_jsonl(FIXTURE)
    assert len(ts) == 10
    assert all(t.has_labels and all(type(lab) is bool for lab in t.labels) for t in ts)
    assert any(not all(t.labels) for t in ts)
    write_stepwise_jsonl(ts, tmp_path / "copy.jsonl")
    original = [json.loads(x) for x in FIXTURE.read_text(encoding="utf-8").splitlines()]
    assert [json.loads(x) for x in (tmp_path / "copy.jsonl").read_text(encoding="utf-8").splitlines()] == original
