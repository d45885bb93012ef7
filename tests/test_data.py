"""Trajectory formats: round-trips between dict, JSONL, datasets.Dataset and TRL stepwise, and the
errors bad input gets (file:line and field)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.data.convert import (
    convert_file,
    from_dataset,
    from_stepwise,
    read_stepwise_jsonl,
    to_dataset,
    to_stepwise,
    write_stepwise_jsonl,
)
from procsup.data.io import PathError, check_paths, iter_jsonl, read_jsonl, write_json, write_jsonl
from procsup.data.trajectory import Step, Trajectory, TrajectoryError

FIXTURE = Path(__file__).parent / "fixtures" / "stepwise_sample.jsonl"
STEPWISE_RESERVED = {"prompt", "completions", "labels", "target", "states", "keys"}


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
    action=st.text(max_size=12),
    state=st.none() | text,
    label=st.none() | labels,
    key=st.none() | text,
)
metas = st.dictionaries(text, json_values, max_size=3)
trajectories = st.builds(
    Trajectory, input=text, target=text, steps=st.lists(steps, min_size=1, max_size=4), meta=metas
)
# What the stepwise format can hold: every step labelled with a hard label (TRL casts labels with
# int()), meta keys not its columns; target, states and keys travel in extra columns.
stepwise_trajectories = st.builds(
    Trajectory,
    input=text,
    target=text,
    steps=st.lists(
        st.builds(Step, action=st.text(max_size=12), label=st.booleans(), state=st.none() | text,
                  key=st.none() | text),
        min_size=1, max_size=4,
    ),
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
    """procsup -> stepwise -> procsup keeps the target and each step's state and key (the round trip of
    `procsup convert` dropped all three), read back by from_stepwise and by the trajectory reader alike."""
    record = json.loads(json.dumps(to_stepwise(t)))
    assert canon([from_stepwise(record)]) == canon([t])
    with tempfile.TemporaryDirectory() as d:
        write_stepwise_jsonl([t], Path(d) / "s.jsonl")
        assert canon(read_jsonl(Path(d) / "s.jsonl")) == canon([t])


def test_a_failed_samples_empty_action_reads_back(tmp_path):
    """A policy can stop a step without writing anything; procsup writes that step, so it must read it back,
    from its own JSONL and from TRL's stepwise shape (an empty completion), label and all."""
    failed = Trajectory("12+9", "21", (Step("1,1", state="2+9+0", label=True), Step("", state="1+0+1", label=False)),
                        {"correct": False})
    write_jsonl([failed], tmp_path / "t.jsonl")
    assert read_jsonl(tmp_path / "t.jsonl") == [failed]
    write_stepwise_jsonl([failed], tmp_path / "s.jsonl")
    assert [t.steps for t in read_jsonl(tmp_path / "s.jsonl")] == [failed.steps]
    assert from_stepwise({"prompt": "q", "completions": [""], "labels": [False]}).steps == (Step("", label=False),)


def test_convert_round_trip_keeps_target_state_and_key(tmp_path):
    t = Trajectory("q", "42", [Step("a", state="s0", key="k0", label=True), Step("b", label=False)], meta={"src": 1})
    write_jsonl([t], tmp_path / "t.jsonl")
    assert convert_file(tmp_path / "t.jsonl", tmp_path / "s.jsonl", "stepwise") == 1
    row = json.loads((tmp_path / "s.jsonl").read_text())
    assert row == {"prompt": "q", "completions": ["a", "b"], "labels": [True, False], "target": "42",
                   "states": ["s0", None], "keys": ["k0", None], "src": 1}
    convert_file(tmp_path / "s.jsonl", tmp_path / "back.jsonl", "procsup")
    assert canon(read_jsonl(tmp_path / "back.jsonl")) == canon([t])


def test_bool_and_float_labels_keep_their_type(tmp_path):
    t = Trajectory("x", "y", [Step("a", label=True), Step("b", label=1.0), Step("c", label=0.0), Step("d", label=False)])
    expected = [True, 1.0, 0.0, False]
    write_jsonl([t], tmp_path / "t.jsonl")
    for back in (read_jsonl(tmp_path / "t.jsonl")[0], from_dataset(to_dataset([t]))[0]):
        assert [(type(lab), lab) for lab in back.labels] == [(type(lab), lab) for lab in expected]
    hard = Trajectory("x", "y", [Step("a", label=True), Step("d", label=False)])
    assert from_stepwise(to_stepwise(hard)).labels == [True, False]


def test_integer_labels_0_and_1_are_hard_labels():
    """JSON ``1``/``0`` is how many tools write true/false: a hard label (bool), not the soft label 1.0
    (which a hard-label PRM run refused as "soft"). Floats stay soft, 1.0 included."""
    t = Trajectory.from_dict(good(steps=[{"action": "a", "label": 1}, {"action": "b", "label": 0},
                                         {"action": "c", "label": 1.0}, {"action": "d", "label": 0.5}]))
    assert [(type(lab), lab) for lab in t.labels] == [(bool, True), (bool, False), (float, 1.0), (float, 0.5)]
    assert [type(lab) for lab in Trajectory.from_dict(good(steps=["a", "b"], labels=[1, 0])).labels] == [bool, bool]
    for bad in (2, -1, 10**5000):
        with pytest.raises(TrajectoryError, match=r"steps\[0\].label.*in \[0, 1\]"):
            Trajectory.from_dict(good(steps=[{"action": "a", "label": bad}]))


def test_top_level_labels_must_agree_with_step_labels():
    """A top-level ``labels`` list silently overrode the step labels (or erased them with nulls)."""
    steps = [{"action": "a", "label": True}, {"action": "b", "label": False}]
    with pytest.raises(TrajectoryError, match=r"field 'labels\[1\]': is True but steps\[1\].label is False"):
        Trajectory.from_dict(good(steps=steps, labels=[True, True]))
    with pytest.raises(TrajectoryError, match=r"labels\[0\]': is 1.0 but steps\[0\].label is True"):
        Trajectory.from_dict(good(steps=steps, labels=[1.0, False]))  # a verdict is not an estimate
    assert Trajectory.from_dict(good(steps=steps, labels=[True, False])).labels == [True, False]
    assert Trajectory.from_dict(good(steps=steps, labels=[1, 0])).labels == [True, False]  # 1 is true
    assert Trajectory.from_dict(good(steps=steps, labels=[None, None])).labels == [True, False]  # null: not given
    assert Trajectory.from_dict(good(steps=["a", {"action": "b"}], labels=[0.5, None])).labels == [0.5, None]


def test_soft_labels_are_not_written_to_stepwise_silently():
    """TRL casts stepwise labels with int(): 0.7 became 0 with no word. Refused, or thresholded on request."""
    t = Trajectory("q", "", [Step("a", label=True), Step("b", label=0.7), Step("c", label=0.2)])
    with pytest.raises(TrajectoryError, match=r"steps\[1\].label': soft label 0.7: TRL casts stepwise labels with int"):
        to_stepwise(t)
    assert to_stepwise(t, threshold=0.5)["labels"] == [True, True, False]


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
    "label 1.5": (json.dumps(good(steps=[{"action": "a", "label": 1.5}])), "steps[0].label", "got 1.5"),
    "label -1": (json.dumps(good(steps=["a", {"action": "b", "label": -1}])), "steps[1].label", "got -1"),
    "label NaN": ('{"input": "q", "target": "", "steps": [{"action": "a", "label": NaN}]}', "steps[0].label",
                  "nan is not a JSON number"),
    "NaN deep in meta": ('{"input": "q", "target": "", "steps": ["a"], "meta": {"x": [1, {"y": NaN}]}}', "meta.x[1].y",
                         "NaN and Infinity are not standard JSON"),
    "1e999 is inf": ('{"input": "q", "target": "", "steps": ["a"], "meta": {"p": 1e999}}', "meta.p", "inf is not"),
    "lone surrogate": ('{"input": "q\\ud800", "target": "", "steps": ["a"]}', "input", "lone surrogate"),
    "surrogate in a meta key": ('{"input": "q", "target": "", "steps": ["a"], "meta": {"k": {"\\udc00": 1}}}', "meta.k",
                                "lone surrogate"),
    "duplicate key": ('{"input": "q", "target": "", "steps": [{"action": "a", "label": true, "label": false}]}', None,
                      "duplicate key 'label'"),
    "huge int": ('{"input": "q", "target": "", "steps": ["a"], "meta": {"n": ' + "9" * 5000 + "}}", None,
                 "invalid JSON: Exceeds the limit"),
    "pretty-printed": ("{", None, "a record spread over several lines"),
    "JSON array": ('[{"input": "q", "target": "", "steps": ["a"]},', None, "a JSON array is not JSON Lines"),
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


# --- TRL stepwise files read as trajectories ---


def test_trajectory_reader_accepts_stepwise_records(tmp_path):
    """`procsup train-prm` users pass TRL's stepwise files: read as they are, beside procsup records."""
    lines = [json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True, 0], "source": "x"}), json.dumps(good())]
    ts = read_jsonl(write_lines(tmp_path / "s.jsonl", lines))
    assert canon(ts[:1]) == canon([Trajectory("q", "", [Step("a", label=True), Step("b", label=False)], {"source": "x"})])
    assert ts[1].target == "4"
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"prompt": "q", "completions": ["a"], "labels": [0.5, 1]})])
    with pytest.raises(TrajectoryError, match=r"bad.jsonl:1: field 'labels': 2 labels for 1 steps"):
        read_jsonl(path)


# --- paths: checked at the door ---


def test_rejects_equal_to_the_input_is_refused(tmp_path):
    """`validate F --rejects F` read its own rejects forever (the file grew to ~2 GB in 60 s): refused before
    anything is read or written, by path, through a symlink and through a hard link."""
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(good()), "not json"])
    before = path.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(path)
    os.link(path, tmp_path / "hard.jsonl")
    for rejects in (path, tmp_path / "link.jsonl", tmp_path / "hard.jsonl", tmp_path / "sub" / ".." / "d.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(PathError, match=f"rejects {rejects} is the same file as input {path}"):
            read_jsonl(path, rejects=rejects)
        assert path.read_bytes() == before


def test_convert_refuses_an_output_that_is_the_input_or_the_rejects(tmp_path):
    """`convert --rejects R` with R the output: the output overwrote the rejects."""
    src = write_lines(tmp_path / "in.jsonl", [json.dumps(good()), "not json"])
    with pytest.raises(PathError, match="output .*in.jsonl is the same file as input"):
        convert_file(src, src, "stepwise")
    with pytest.raises(PathError, match="rejects .*out.jsonl is the same file as output"):
        convert_file(src, tmp_path / "out.jsonl", "stepwise", rejects=tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    assert convert_file(src, tmp_path / "out.jsonl", "stepwise", rejects=tmp_path / "r.jsonl") == 1
    assert json.loads((tmp_path / "r.jsonl").read_text())["line"] == 2


def test_reject_file_is_overwritten_not_appended(tmp_path):
    path, rejects = write_lines(tmp_path / "d.jsonl", [json.dumps(good()), "bad 1"]), tmp_path / "r.jsonl"
    read_jsonl(path, rejects=rejects)
    read_jsonl(path, rejects=rejects)
    assert len(rejects.read_text().splitlines()) == 1  # this run's rejects only
    write_lines(path, [json.dumps(good())])
    read_jsonl(path, rejects=rejects)
    assert rejects.read_text() == ""  # a clean run leaves no stale rejects behind


@pytest.mark.parametrize("where", ["input", "output", "rejects"])
def test_folders_and_missing_paths_are_one_line_errors(tmp_path, where):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(good())])
    folder = tmp_path / "folder"
    folder.mkdir()
    paths = {"input": data, "output": tmp_path / "o.jsonl", "rejects": tmp_path / "r.jsonl", where: folder}
    with pytest.raises(PathError, match=f"^{where} {folder}: is a folder, not a file$"):
        convert_file(paths["input"], paths["output"], "procsup", rejects=paths["rejects"])
    paths[where] = tmp_path / "missing" / "x.jsonl"
    message = "no such file" if where == "input" else f"folder {tmp_path / 'missing'} does not exist"
    with pytest.raises(PathError, match=message) as info:
        convert_file(paths["input"], paths["output"], "procsup", rejects=paths["rejects"])
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)


def test_check_paths_names_roles_and_skips_none(tmp_path):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(good())])
    check_paths(inputs={"train_file": data}, outputs={"rejects_file": None})
    with pytest.raises(PathError, match=r"rejects_file .* is the same file as train_file"):
        check_paths(inputs={"train_file": data}, outputs={"rejects_file": data})
    with pytest.raises(PathError, match="is the same file as output"):
        check_paths(outputs=[tmp_path / "a", tmp_path / "a"])


def test_write_into_a_folder_or_a_missing_folder_is_refused(tmp_path):
    t = [Trajectory("q", "", [Step("a")])]
    with pytest.raises(PathError, match="is a folder"):
        write_jsonl(t, tmp_path)
    with pytest.raises(PathError, match="does not exist"):
        write_jsonl(t, tmp_path / "no" / "x.jsonl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everything")
def test_permission_errors_are_one_line(tmp_path):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(good())])
    data.chmod(0)
    with pytest.raises(PathError, match="permission denied"):
        read_jsonl(data)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PathError, match="permission denied"):
        write_jsonl([], locked / "x.jsonl")


# --- counts ---


def test_records_in_equal_kept_plus_rejected(tmp_path):
    lines = [json.dumps(good()), "", "{", '  "input": "q",', "}", json.dumps(good(labels=[False])), "\r",
             json.dumps(good(meta={"x": float("nan")})), b"\xff", json.dumps(good(target="5"))]
    path, rejects = write_lines(tmp_path / "d.jsonl", lines), tmp_path / "r.jsonl"
    kept = read_jsonl(path, rejects=rejects)
    rows = [json.loads(x) for x in rejects.read_text(encoding="utf-8").splitlines()]
    records_in = sum(1 for x in path.read_bytes().split(b"\n") if x.strip())
    assert (records_in, len(kept), len(rows)) == (8, 2, 6)
    assert all(r["error"] and "\n" not in r["error"] for r in rows)


def test_write_json_replaces_whole_or_leaves_the_old_file(tmp_path):
    """Results, caches and procsup.json go through write_json: a failed write (here an object JSON cannot
    hold) leaves the previous file byte for byte and no temporary file behind."""
    path = tmp_path / "results.json"
    write_json(path, {"a": [1, 2.5], "b": "ü"})
    before = path.read_bytes()
    assert json.loads(before) == {"a": [1, 2.5], "b": "ü"}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with pytest.raises(PathError, match="cannot write"):
        write_json(tmp_path / "missing" / "x.json", {})
