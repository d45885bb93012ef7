"""RL under ``accelerate launch --num_processes 2`` (gloo, CPU): each process samples its own slice of the
update's problems, DDP averages the gradients, and both processes end with the same weights.

This file is also the worker: ``accelerate launch ... tests/test_rl_ddp.py MODEL OUT`` runs :func:`run`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from procsup.data.tokenize import StepFormat
from procsup.models.factory import TinyModelConfig, build_tiny_model, load_model, save_model
from procsup.rl.grpo import RLConfig, train
from procsup.scorers import exact_scorer
from procsup.tasks.addition import AdditionTask

TASK = AdditionTask(index_hints=False)
MAX_STEPS = 3


def run(model_dir: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    from accelerate import Accelerator

    model, tok, _ = load_model(model_dir)
    accelerator = Accelerator()
    cfg = RLConfig(output_dir=output_dir, max_steps=MAX_STEPS, batch_size=4, group_size=4, learning_rate=1e-2,
                   step_reward="exact", credit="sum", gamma=0.0, seed=2, max_new_tokens=12, progress=False)
    result = train(cfg, task=TASK, scorer=exact_scorer(TASK, "history"), model=model, tokenizer=tok, fmt=StepFormat(),
                   problems=TASK.sample_range(1, 1, 40), accelerator=accelerator)
    checksum = sum(float(p.double().sum()) for p in result.model.parameters())
    # one write with its newline (print writes the text and the newline apart, and two processes' lines could
    # interleave on the shared pipe: a CI run saw "...checksum 96.58process 0 of 2: ...")
    sys.stdout.write(f"process {accelerator.process_index} of {accelerator.num_processes}: samples {result.samples} "
                     f"checksum {checksum:.10f}\n")
    sys.stdout.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_sample_their_slices_and_stay_in_sync(tmp_path):
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                                  max_positions=128), seed=4)
    init = save_model(model, tok, tmp_path / "init", fmt=StepFormat(), mode="history")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(Path(__file__)), str(init), str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(f"2-process run: {time.perf_counter() - t0:.1f}s")
    line = r"process (\d) of 2: samples (\d+) checksum (-?\d+\.\d{10})"
    found = dict((r, (int(s), c)) for r, s, c in re.findall(line, proc.stdout))
    assert found.keys() == {"0", "1"}, proc.stdout[-2000:]
    assert found["0"] == found["1"]  # the same (all-process) sample count and the same weights on both
    start = sum(float(p.detach().double().sum()) for p in model.parameters())
    assert float(found["0"][1]) != start  # it trained
    assert (tmp_path / "ddp" / f"checkpoint-{MAX_STEPS}" / "model.safetensors").is_file()
    # 4 problems x 4 samples per update, 2 problems per process: every process sampled, the count is summed
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == MAX_STEPS


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
