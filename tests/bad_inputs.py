"""The bad-input corpus: hostile and careless trajectory files and config files, each with what reading it
must give, written down here and not computed by the code under test.

A :class:`Case` is a file's bytes and, per non-blank line, the trajectory that line must become (as its
``to_dict()``) or ``None`` for a line that must be rejected. A reader then owes: with a reject file, the
expected trajectories kept and exactly the expected lines rejected (records in = kept + rejected); without
one, the expected trajectories, or an error located at the first bad line. :func:`config_cases` are YAML
texts that must give a config or a one-line error naming the file.

Cases are made by mutating one good record field by field (wrong types, missing fields, huge ints, NaN and
Infinity, lone surrogates, duplicate keys, bad and contradicting labels, empty steps), by TRL stepwise
records, and by damaging whole files (BOM, CRLF, blank lines, a JSON array, pretty-printed JSON, a
truncated last line, binary garbage, non-UTF-8, UTF-16, very long lines).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

Expected = dict[str, Any] | None
"""A line's expected trajectory (``Trajectory.to_dict()``), or None: the line is rejected."""


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    lines: tuple[Expected, ...]
    """One entry per non-blank line (``line.strip()`` not empty), in order."""

    @property
    def kept(self) -> list[dict[str, Any]]:
        return [x for x in self.lines if x is not None]

    def bad_line_numbers(self) -> list[int]:
        numbers = [n for n, raw in enumerate(self.data.split(b"\n"), start=1) if raw.strip()]
        return [n for n, x in zip(numbers, self.lines) if x is None]


GOOD = {"input": "2+2?", "target": "4", "steps": [{"action": "2+2=4", "label": True}]}
GOOD_OUT = {"input": "2+2?", "target": "4", "steps": [{"action": "2+2=4", "label": True}]}


def _traj(input="2+2?", target="4", steps=None, meta=None) -> dict[str, Any]:
    out = {"input": input, "target": target, "steps": steps or [{"action": "2+2=4", "label": True}]}
    if meta:
        out["meta"] = meta
    return out


def _one(name: str, text: str | bytes, expected: Expected) -> Case:
    """A file of a good record, the case's line, and a good record again: the bad line is in the middle."""
    line = text if isinstance(text, bytes) else text.encode("utf-8")
    good = json.dumps(GOOD).encode()
    return Case(name, b"\n".join([good, line, good]) + b"\n", (GOOD_OUT, expected, GOOD_OUT))


def _with(**fields) -> str:
    return json.dumps({**GOOD, **fields}, ensure_ascii=False)


WRONG_VALUES = {
    "null": None, "int": 3, "zero": 0, "float": 1.5, "true": True, "false": False, "list": [], "list of str": ["a"],
    "object": {}, "empty string": "", "string": "s", "huge int": 10**30, "negative": -1, "one": 1, "half": 0.5,
    "nested list": [["a"]], "unicode": "ки\u2028", "object with action": {"action": "a"},
}


def _field_cases() -> list[Case]:
    cases = []
    for name, value in WRONG_VALUES.items():
        # input and target: strings only (the empty string too)
        for f in ("input", "target"):
            ok = isinstance(value, str)
            cases.append(_one(f"{f} = {name}", _with(**{f: value}), _traj(**{f: value}) if ok else None))
        # steps: a non-empty list of objects or strings
        cases.append(_one(f"steps = {name}", _with(steps=value),
                          _traj(steps=[{"action": "a"}]) if value == ["a"] else None))
        # a step that is this value (a string, the empty one too: a policy can write nothing)
        ok = isinstance(value, str)
        want = _traj(steps=[{"action": value if ok else "a"}]) if ok or value == {"action": "a"} else None
        cases.append(_one(f"step = {name}", _with(steps=[value]), want))
        # a TRL stepwise prompt
        sw = {"prompt": value, "completions": ["a"], "labels": [True]}
        cases.append(_one(f"stepwise prompt = {name}", json.dumps(sw, ensure_ascii=False),
                          _traj(value, "", [{"action": "a", "label": True}]) if isinstance(value, str) else None))
        # step fields
        ok = isinstance(value, str)
        cases.append(_one(f"action = {name}", _with(steps=[{"action": value}]), _traj(steps=[{"action": value}]) if ok else None))
        for f in ("state", "key"):
            ok = value is None or isinstance(value, str)
            step = {"action": "a", f: value}
            cases.append(_one(f"{f} = {name}", _with(steps=[step]),
                              _traj(steps=[{"action": "a", **({f: value} if value is not None else {})}]) if ok else None))
        # a label: bool, 0/1 (hard), a float in [0, 1] (soft) or null
        label: Any = "bad"
        if value is None or isinstance(value, bool):
            label = value
        elif isinstance(value, int) and value in (0, 1):  # ints 0/1 are hard labels
            label = value == 1
        elif isinstance(value, float) and 0 <= value <= 1:
            label = value
        step = {"action": "a", "label": value}
        want = None if label == "bad" else _traj(steps=[{"action": "a", **({"label": label} if label is not None else {})}])
        cases.append(_one(f"label = {name}", _with(steps=[step]), want))
        # meta: an object or null; labels: a list of one label or null
        cases.append(_one(f"meta = {name}", _with(meta=value),
                          _traj(meta=value or None) if value is None or isinstance(value, dict) else None))
        cases.append(_one(f"labels = {name}", json.dumps({**GOOD, "steps": ["a"], "labels": value}),
                          _traj(steps=[{"action": "a"}]) if value is None else None))
    for f in ("input", "target", "steps"):
        cases.append(_one(f"missing {f}", json.dumps({k: v for k, v in GOOD.items() if k != f}), None))
    cases.append(_one("missing action", _with(steps=[{"label": True}]), None))
    cases.append(_one("unknown field", _with(extra=1), None))
    cases.append(_one("unknown step field", _with(steps=[{"action": "a", "lable": True}]), None))
    cases.append(_one("action is whitespace", _with(steps=[" "]), _traj(steps=[{"action": " "}])))
    return cases


def _label_cases() -> list[Case]:
    cases = []
    for value in (0.0, 1.0, 0.5, 1e-300, 1.0000001, -0.0, -1e-9, 2, 10**400):
        ok = isinstance(value, float) and 0 <= value <= 1
        want = _traj(steps=[{"action": "a", "label": value}]) if ok else None
        cases.append(_one(f"label {value!r:.20}", _with(steps=[{"action": "a", "label": value}]), want))
    # a top-level labels list and step labels: they must agree
    steps = [{"action": "a", "label": True}, {"action": "b", "label": False}]
    for labels, want in [
        ([True, False], steps), ([1, 0], steps), ([None, None], steps), ([False, False], None), ([True, True], None),
        ([1.0, False], None), ([0.5, 0.5], None), ([True], None), ([True, False, True], None), ("TF", None),
        ([None, "x"], None),
    ]:
        cases.append(_one(f"labels {labels} over step labels", json.dumps({**GOOD, "steps": steps, "labels": labels}),
                          _traj(steps=want) if want else None))
    for labels, want in [([0.25, 1], [0.25, True]), ([True, None], [True, None])]:
        expected = [{"action": a, **({"label": lab} if lab is not None else {})} for a, lab in zip("ab", want)]
        cases.append(_one(f"labels {labels} alone", json.dumps({**GOOD, "steps": ["a", "b"], "labels": labels}),
                          _traj(steps=expected)))
    return cases


def _raw_json_cases() -> list[Case]:
    """Values only raw JSON text can hold: NaN, Infinity, lone surrogates, duplicate keys, huge numbers."""
    base = '{"input": "q", "target": "t", "steps": [%s]%s}'
    cases = []
    for token in ("NaN", "Infinity", "-Infinity", "1e999", "-1e400"):
        cases.append(_one(f"{token} as label", base % ('{"action": "a", "label": %s}' % token, ""), None))
        cases.append(_one(f"{token} in meta", base % ('"a"', ', "meta": {"x": %s}' % token), None))
        cases.append(_one(f"{token} deep in meta", base % ('"a"', ', "meta": {"x": [1, {"y": [[%s]]}]}' % token), None))
        cases.append(_one(f"{token} in labels", base % ('"a"', ', "labels": [%s]' % token), None))
    for escape in ("\\ud800", "\\udfff", "\\udc00x", "x\\ud83d"):
        for where, text in [
            ("input", '{"input": "%s", "target": "t", "steps": ["a"]}'),
            ("target", '{"input": "q", "target": "%s", "steps": ["a"]}'),
            ("action", '{"input": "q", "target": "t", "steps": ["%s"]}'),
            ("state", '{"input": "q", "target": "t", "steps": [{"action": "a", "state": "%s"}]}'),
            ("meta value", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"k": ["%s"]}}'),
            ("meta key", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"%s": 1}}'),
            ("top-level key", '{"input": "q", "target": "t", "steps": ["a"], "%s": 1}'),
        ]:
            cases.append(_one(f"lone surrogate {escape} in {where}", text % escape, None))
    # a surrogate pair is a real character
    cases.append(_one("surrogate pair", '{"input": "\\ud83d\\ude00", "target": "t", "steps": ["a"]}',
                      _traj(input="\U0001F600", target="t", steps=[{"action": "a"}])))
    for where, text in [
        ("top level", '{"input": "q", "input": "r", "target": "t", "steps": ["a"]}'),
        ("step", '{"input": "q", "target": "t", "steps": [{"action": "a", "label": true, "label": false}]}'),
        ("meta", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"k": 1, "k": 2}}'),
        ("deep meta", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"x": [{"k": 1, "k": 1}]}}'),
        ("labels", '{"input": "q", "target": "t", "steps": ["a"], "labels": [true], "labels": [false]}'),
    ]:
        cases.append(_one(f"duplicate key in {where}", text, None))
    cases.append(_one("10**100 in meta", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"n": %s}}' % ("1" + "0" * 100),
                      _traj("q", "t", [{"action": "a"}], {"n": 10**100})))
    cases.append(_one("5000-digit int in meta", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"n": %s}}' % ("9" * 5000),
                      None))
    cases.append(_one("5000-digit label", base % ('{"action": "a", "label": %s}' % ("1" * 5000), ""), None))
    cases.append(_one("deep meta (50 levels)", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"x": %s}}'
                      % ("[" * 50 + "]" * 50), _traj("q", "t", [{"action": "a"}], {"x": json.loads("[" * 50 + "]" * 50)})))
    cases.append(_one("nested too deeply", '{"input": "q", "target": "t", "steps": ["a"], "meta": {"x": %s}}'
                      % ("[" * 100_000 + "]" * 100_000), None))
    cases.append(_one("raw tab inside a string", '{"input": "q\tr", "target": "t", "steps": ["a"]}', None))
    cases.append(_one("escaped NUL and U+2028", '{"input": "q\\u0000\\u2028", "target": "t", "steps": ["a"]}',
                      _traj("q\x00\u2028", "t", [{"action": "a"}])))
    cases.append(_one("single quotes", "{'input': 'q', 'target': 't', 'steps': ['a']}", None))
    cases.append(_one("trailing comma", '{"input": "q", "target": "t", "steps": ["a"],}', None))
    cases.append(_one("two records on a line", json.dumps(GOOD) + " " + json.dumps(GOOD), None))
    cases.append(_one("JSON comment", json.dumps(GOOD) + " // ok", None))
    for text in ("null", "true", "1", '"text"', "[]", "[1, 2]"):
        cases.append(_one(f"top-level {text}", text, None))
    return cases


def _stepwise_cases() -> list[Case]:
    """TRL stepwise records (prompt, completions, labels), read as trajectories."""
    sw = {"prompt": "q", "completions": ["a", "b"], "labels": [True, False]}
    steps = [{"action": "a", "label": True}, {"action": "b", "label": False}]
    cases = [
        _one("stepwise", json.dumps(sw), _traj("q", "", steps)),
        _one("stepwise int labels", json.dumps({**sw, "labels": [1, 0]}), _traj("q", "", steps)),
        _one("stepwise soft labels", json.dumps({**sw, "labels": [0.5, 0.25]}),
             _traj("q", "", [{"action": "a", "label": 0.5}, {"action": "b", "label": 0.25}])),
        _one("stepwise extra column", json.dumps({**sw, "source": "x"}), _traj("q", "", steps, {"source": "x"})),
        _one("stepwise empty completion", json.dumps({**sw, "completions": ["a", ""]}),
             _traj("q", "", [steps[0], {"action": "", "label": False}])),
        _one("stepwise with procsup's target, states, keys",
             json.dumps({**sw, "target": "t", "states": ["s", None], "keys": [None, "k"]}),
             _traj("q", "t", [{"action": "a", "state": "s", "label": True}, {"action": "b", "label": False, "key": "k"}])),
    ]
    for name, record in [
        ("no labels", {"prompt": "q", "completions": ["a"]}),
        ("no completions", {"prompt": "q", "labels": [True]}),
        ("no prompt", {"completions": ["a"], "labels": [True]}),
        ("empty completions", {**sw, "completions": [], "labels": []}),
        ("label count", {**sw, "labels": [True]}),
        ("null label", {**sw, "labels": [True, None]}),
        ("label 2", {**sw, "labels": [True, 2]}),
        ("label string", {**sw, "labels": [True, "False"]}),
        ("completion int", {**sw, "completions": ["a", 3]}),
        ("prompt list", {**sw, "prompt": ["q"]}),
        ("completions string", {**sw, "completions": "ab"}),
        ("states too short", {**sw, "states": ["s"]}),
        ("target int", {**sw, "target": 3}),
        ("NaN label", None),
    ]:
        text = json.dumps(record) if record is not None else '{"prompt": "q", "completions": ["a"], "labels": [NaN]}'
        cases.append(_one(f"stepwise {name}", text, None))
    return cases


def _file_cases() -> list[Case]:
    good, good2 = json.dumps(GOOD).encode(), json.dumps({**GOOD, "target": "5"}).encode()
    out2 = {**GOOD_OUT, "target": "5"}
    pretty = json.dumps(GOOD, indent=2).encode()
    rng = random.Random(13)
    garbage = bytes(rng.randrange(256) for _ in range(4000))
    cases = [
        Case("empty file", b"", ()),
        Case("only blank lines", b"\n  \n\t\n\r\n", ()),
        Case("BOM", b"\xef\xbb\xbf" + good + b"\n", (GOOD_OUT,)),
        Case("BOM on line 2", good + b"\n\xef\xbb\xbf" + good + b"\n", (GOOD_OUT, None)),
        Case("CRLF", good + b"\r\n" + good2 + b"\r\n", (GOOD_OUT, out2)),
        Case("blank lines between", b"\n" + good + b"\n\n   \n" + good2 + b"\n\n", (GOOD_OUT, out2)),
        Case("no final newline", good + b"\n" + good2, (GOOD_OUT, out2)),
        Case("CR only between records", good + b"\r" + good2 + b"\r", (None,)),
        Case("JSON array of records", b"[" + good + b", " + good2 + b"]\n", (None,)),
        Case("JSON array over lines", b"[\n" + good + b",\n" + good2 + b"\n]\n", (None, None, out2, None)),
        Case("pretty-printed record (README)", pretty + b"\n", tuple([None] * len(pretty.split(b"\n")))),
        Case("truncated last line", good + b"\n" + good2[: len(good2) // 2], (GOOD_OUT, None)),
        Case("truncated in a string", good + b"\n" + good2[:10] + b"\n", (GOOD_OUT, None)),
        Case("latin-1", good + b"\n" + '{"input": "café", "target": "t", "steps": ["a"]}'.encode("latin-1") + b"\n",
             (GOOD_OUT, None)),
        Case("UTF-16", json.dumps(GOOD).encode("utf-16") + b"\n", (None,)),
        Case("NUL bytes", good + b"\n\x00\x00\x00\n", (GOOD_OUT, None)),
        Case("gzip magic", b"\x1f\x8b\x08\x00" + good + b"\n", (None,)),
        Case("UTF-8 BOM then garbage", b"\xef\xbb\xbf\xff\xfe\n", (None,)),
        Case("very long action (1 MB)", json.dumps({**GOOD, "steps": ["x" * 1_000_000]}).encode() + b"\n",
             (_traj(steps=[{"action": "x" * 1_000_000}]),)),
        Case("very long garbage line (1 MB)", b"{" + b"x" * 1_000_000 + b"\n", (None,)),
        Case("very long unknown key", json.dumps({**GOOD, "k" * 100_000: 1}).encode() + b"\n", (None,)),
        Case("control characters in a key", json.dumps({**GOOD, "a\nb\x1b[31m": 1}).encode() + b"\n", (None,)),
        Case("unicode text", json.dumps({"input": "2+2? ки", "target": "४", "steps": ["שלום\u2028"]},
                                        ensure_ascii=False).encode() + b"\n",
             (_traj("2+2? ки", "४", [{"action": "שלום\u2028"}]),)),
        Case("many records", b"\n".join([good] * 500) + b"\n", tuple([GOOD_OUT] * 500)),
    ]
    lines = [x for x in garbage.split(b"\n")]
    cases.append(Case("binary garbage", garbage, tuple(None for x in lines if x.strip())))
    mixed = [good, garbage[:200].replace(b"\n", b""), good2, b"{", b"}"]
    cases.append(Case("garbage between records", b"\n".join(mixed) + b"\n", (GOOD_OUT, None, out2, None, None)))
    return cases


def trajectory_cases() -> list[Case]:
    """Every trajectory-file case; names are unique."""
    cases = _field_cases() + _label_cases() + _raw_json_cases() + _stepwise_cases() + _file_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    return cases


@dataclass(frozen=True)
class ConfigCase:
    name: str
    text: bytes
    expected: dict[str, Any] | None
    """Fields the built config must have, or None: a one-line ValueError naming the file."""


def config_cases() -> list[ConfigCase]:
    """YAML files for ``PALConfig`` (``output_dir: out`` added unless the case is about the file itself)."""
    ok = {
        'resume: "false"': {"resume": False}, "resume: false": {"resume": False}, 'resume: "yes"': {"resume": True},
        "resume: 1": {"resume": True}, "resume: off": {"resume": False}, "learning_rate: 1e-3": {"learning_rate": 1e-3},
        "learning_rate: 1.0e-3": {"learning_rate": 1e-3}, 'learning_rate: "3e-4"': {"learning_rate": 3e-4},
        "lam: 2": {"lam": 2.0}, 'batch_size: "8"': {"batch_size": 8}, "batch_size: 8": {"batch_size": 8},
        "model: null": {"model": None}, 'model: "none"': {"model": None}, "model: ./m": {"model": "./m"},
        "mode: state": {"mode": "state"}, 'step_sep: "\\n"': {"step_sep": "\n"}, "seed: 0": {"seed": 0},
        "": {}, "# only a comment": {},
    }
    bad = [
        "resume: maybe", "resume: 2", "resume: []", "resume: null", "learning_rate: fast", "learning_rate: .nan",
        "learning_rate: .inf", "learning_rate: -.inf", 'learning_rate: "nan"', "learning_rate: true", "learning_rate: [1]",
        "lam: {}", "batch_size: 3.0", "batch_size: 1e3", "batch_size: true", "batch_size: null", "batch_size: eight",
        "batch_size: 0", "batch_size: -1", "batch_size: " + "9" * 5000, "mode: steps", "mode: 1", "mode: [state]",
        "output_dir: 2024", "output_dir: 2024-01-01", "output_dir: true", "output_dir: [a]", "model: 3",
        "no_such_field: 1", "learning_rat: 0.1", "lam: 1\nlam: 2", "lam: [1", "lam: 'x", "  - a\nb: c",
        "lam: 1\n\tbatch_size: 2", "a: b: c", "!!python/object:os.system x", "lam: *anchor", "{", "]",
    ]
    cases = [ConfigCase(f"ok {k!r}", ("output_dir: out\n" + k + "\n").encode(), {"output_dir": "out", **v})
             for k, v in ok.items()]
    cases += [ConfigCase(f"bad {k!r}", ("output_dir: out\n" + k + "\n").encode(), None) for k in bad]
    for name, data in [
        ("list", b"- output_dir\n- out\n"), ("scalar", b"output_dir\n"), ("number", b"3\n"), ("int keys", b"1: 2\n"),
        ("non-UTF-8", b"output_dir: caf\xe9\n"), ("binary", bytes(range(256))), ("tab indent", b"a:\n\t- b\n"),
        ("duplicate output_dir", b"output_dir: a\noutput_dir: b\n"), ("null key", b"~: 1\noutput_dir: out\n"),
    ]:
        cases.append(ConfigCase(f"file {name}", data, None))
    return cases
