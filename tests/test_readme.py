"""README's "Using it" block runs as written, in a fresh temporary folder, with fewer steps and problems.

Reduced by substitution only (the commands stay the README's): ``--max_steps N`` and ``checkpoint-N``
become 4, ``--count N`` becomes 24 (so 2000 problems and 100 test problems do not take minutes) and the
model is smaller. Left out, and why: ``source .venv/bin/activate`` (the test puts the venv's ``bin`` first
on PATH instead), the ``accelerate launch`` line (two processes: ``tests/test_trainer.py`` covers DDP) and
the ``procsup bench`` lines (minutes to hours; ``tests/test_end_to_end.py`` and ``test_bench_*`` run them
at tiny scale).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from procsup.data.trajectory import Trajectory

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str, lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    return m.group(1).splitlines()


def _reduced(line: str) -> str:
    line = re.sub(r"--max_steps \d+", "--max_steps 4", line)
    line = re.sub(r"checkpoint-\d+", "checkpoint-4", line)
    line = re.sub(r"--count \d+", "--count 24", line)
    return line.replace("--hidden-size 64", "--hidden-size 32 --num-layers 1 --num-heads 2")


def test_using_it_block_runs_as_written(tmp_path):
    lines = [line for line in _block("## Using it", "bash") if line.strip() and not line.lstrip().startswith("#")]
    skipped = ("source ", "accelerate launch", "procsup bench ")
    kept = [_reduced(line) for line in lines if not any(s in line for s in skipped)]
    assert any("train-prm" in line for line in kept) and any("evaluate-prm" in line for line in kept)
    script = "set -euo pipefail\n" + "\n".join(kept) + "\npwd > " + str(tmp_path / "where") + "\n"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    work = Path((tmp_path / "where").read_text().strip())
    assert work != tmp_path and work.parent == tmp_path  # the block made its own fresh folder
    assert (work / "runs" / "prm" / "checkpoint-4").is_dir() and (work / "scored.jsonl").is_file()
    assert "ProcessBench first-error F1" in out.stdout


def test_example_trajectory_is_one_valid_line():
    lines = [line for line in _block("A trajectory, one per line", "json") if line.strip()]
    assert len(lines) == 1
    Trajectory.from_dict(json.loads(lines[0]))
