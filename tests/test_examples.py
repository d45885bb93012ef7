"""Each script of examples/ runs at tiny scale (few steps, few problems, a tiny model), through its own
environment variables or flags: the commands are the scripts' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "converters"
BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_WAIT_POLICY": "PASSIVE",
            "OUT": str(tmp_path / "out"), **extra}


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_real_data_prm_path_is_four_commands(tmp_path):
    """convert -> train-prm -> score -> evaluate-prm on the fixture excerpts (4 ProcessBench problems: too few
    to split, so a given threshold)."""
    script = (ROOT / "examples" / "real_data_prm.sh").read_text()
    commands = [line for line in script.splitlines() if line.startswith("procsup ")]
    assert [c.split()[1] for c in commands] == ["convert", "train-prm", "score", "evaluate-prm"]
    env = _env(tmp_path, TRAIN=str(FIXTURES / "math_shepherd.jsonl"), EVAL=str(FIXTURES / "processbench_gsm8k.json"),
               STEPS="3", EXTRA="--batch_size 4 --progress false", EVAL_FLAGS="--threshold 0.5 --draws 10")
    stdout = _run(["bash", str(ROOT / "examples" / "real_data_prm.sh")], env, tmp_path)
    assert "ProcessBench first-error F1" in stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processbench"]["tested"] == 4 and report["steps"]["n_steps"] > 0


def test_pal_on_a_task(tmp_path):
    env = _env(tmp_path, COUNT="24", TEST_COUNT="4", STEPS="3", TEST_SIZES="3 4", EXTRA="--batch_size 8 --progress false")
    stdout = _run(["bash", str(ROOT / "examples" / "pal_on_a_task.sh")], env, tmp_path)
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"task"')]
    assert [r["size"] for r in results] == [3, 4] and all(r["n"] == 4 for r in results)


@pytest.mark.parametrize("mode", ["history"])
def test_search(tmp_path, mode):
    env = _env(tmp_path)
    p = str(BIN / "procsup")
    _run([p, "init-model", "tiny", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2"], env, tmp_path)
    _run([p, "make-data", "addition", "--count", "16", "--size", "1-2", "-o", "data.jsonl"], env, tmp_path)
    _run([p, "train", "--model", "tiny", "--train_file", "data.jsonl", "--output_dir", "policy", "--max_steps", "2",
          "--batch_size", "8", "--no-progress"], env, tmp_path)
    _run([p, "make-data", "addition", "--labels", "corrupt", "--count", "16", "-o", "labelled.jsonl"], env, tmp_path)
    _run([p, "train-prm", "--model", "tiny", "--train_file", "labelled.jsonl", "--output_dir", "prm", "--max_steps", "2",
          "--batch_size", "8", "--no-progress"], env, tmp_path)
    stdout = _run([sys.executable, str(ROOT / "examples" / "search.py"), "policy/checkpoint-2", "prm/checkpoint-2",
                   "--size", "2", "--count", "3", "--n", "2", "--beam-width", "1", "--expand", "2"], env, tmp_path)
    out = json.loads(stdout.splitlines()[-1])
    assert [r["method"] for r in out["rows"]][:3] == ["greedy", "best-of-2 (min)", "beam 1x2 (min)"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in out["rows"])
