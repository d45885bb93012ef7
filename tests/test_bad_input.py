"""The bad-input corpus (tests/bad_inputs.py) through every door: ``read_jsonl`` with and without a reject
file, ``procsup validate`` (with and without ``--rejects``) and ``build_config`` / ``procsup train --config``.

Each case must give its expected trajectories, or a one-line error located at its first bad line, or a
reject per bad line with its reason; records in = kept + rejected; never a traceback."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from bad_inputs import config_cases, trajectory_cases
from typer.testing import CliRunner

from procsup.cli import app
from procsup.config import build_config
from procsup.data.io import read_jsonl
from procsup.data.trajectory import TrajectoryError
from procsup.trainers.pal import PALConfig

CASES = {c.name: c for c in trajectory_cases()}
CONFIGS = {c.name: c for c in config_cases()}
runner = CliRunner()


def canon(records) -> list[str]:
    return [json.dumps(r if isinstance(r, dict) else r.to_dict(), sort_keys=True) for r in records]


def _no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output


def _one_procsup_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith(("INFO ", "WARNING "))]
    assert len(lines) == 1 and lines[0].startswith("procsup: "), output[:2000]
    return lines[0]


def test_corpus_is_large_and_varied():
    kinds = Counter("good" if all(x is not None for x in c.lines) else "bad" for c in CASES.values())
    assert len(CASES) >= 300 and kinds["good"] >= 40 and kinds["bad"] >= 250, kinds
    assert len(CONFIGS) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_reader(tmp_path, name):
    case = CASES[name]
    path, rejects = tmp_path / "data.jsonl", tmp_path / "rejects.jsonl"
    path.write_bytes(case.data)
    kept = read_jsonl(path, rejects=rejects)
    rows = [json.loads(x) for x in rejects.read_text(encoding="utf-8").splitlines()]
    assert canon(kept) == canon(case.kept)  # no silent wrong result: exactly the expected trajectories
    assert [r["line"] for r in rows] == case.bad_line_numbers()
    assert len(case.lines) == len(kept) + len(rows)  # records in = kept + rejected
    for r in rows:
        assert r["error"].startswith(f"{path}:{r['line']}: ") and "\n" not in r["error"] and len(r["error"]) <= 500
    bad = case.bad_line_numbers()
    if not bad:
        assert canon(read_jsonl(path)) == canon(case.kept)
        return
    with pytest.raises(TrajectoryError) as info:
        read_jsonl(path)
    assert info.value.where == f"{path}:{bad[0]}"
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    str(info.value).encode("utf-8")  # printable: no lone surrogate reaches the message


@pytest.mark.parametrize("name", list(CASES))
def test_validate_command(tmp_path, name):
    case = CASES[name]
    path, rejects = tmp_path / "data.jsonl", tmp_path / "rejects.jsonl"
    path.write_bytes(case.data)
    result = runner.invoke(app, ["validate", str(path)])
    _no_traceback(result)
    if case.bad_line_numbers():
        assert result.exit_code == 1
        line = _one_procsup_line(result.output)
        assert line.startswith(f"procsup: {path}:{case.bad_line_numbers()[0]}: ")
    else:
        assert result.exit_code == 0 and f"{len(case.kept)} valid trajectories" in result.output
    result = runner.invoke(app, ["validate", str(path), "--rejects", str(rejects)])
    _no_traceback(result)
    assert f"{len(case.kept)} valid trajectories" in result.output
    assert len(rejects.read_text(encoding="utf-8").splitlines()) == len(case.bad_line_numbers())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_file(tmp_path, name):
    case = CONFIGS[name]
    path = tmp_path / "run.yaml"
    path.write_bytes(case.text)
    if case.expected is not None:
        cfg = build_config(PALConfig, path)
        assert {k: getattr(cfg, k) for k in case.expected} == case.expected
        assert all(type(getattr(cfg, k)) is type(v) for k, v in case.expected.items())
        return
    with pytest.raises(ValueError) as info:
        build_config(PALConfig, path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 1000
    key = case.text.decode("utf-8", "replace").splitlines()[-1].split(":")[0].strip()
    assert message.startswith(str(path)) or key in message, message
    result = runner.invoke(app, ["train", "--config", str(path)])
    _no_traceback(result)
    assert result.exit_code == 2 and _one_procsup_line(result.output).startswith("procsup: bad configuration: ")
