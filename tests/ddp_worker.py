"""A fixed tiny PAL run, for the DDP test (see there for the exact command; on CPU it is
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/ddp_worker.py MODEL OUT``).

The model comes from MODEL (saved there by the test, so every process starts from the same weights);
the data is a fixed set of addition trajectories; the final weights land in OUT/checkpoint-5.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator

from procsup.models.factory import load_model
from procsup.tasks.addition import AdditionTask
from procsup.trainers.loop import TrainResult
from procsup.trainers.pal import PALConfig, train

MAX_STEPS = 5


def run(model_dir: str, output_dir: str) -> TrainResult:
    torch.set_num_threads(1)
    model, tokenizer, _ = load_model(model_dir)
    task = AdditionTask(carry_heavy=0.5)
    trajectories = [task.expert(p) for p in task.sample_range(seed=3, max_digits=4, count=12)]
    cfg = PALConfig(
        output_dir=output_dir, mode="history", batch_size=8, max_steps=MAX_STEPS, warmup_steps=1,
        learning_rate=1e-2, log_steps=1, seed=1, progress=False,
    )
    accelerator = Accelerator()
    result = train(cfg, model=model, tokenizer=tokenizer, trajectories=trajectories, accelerator=accelerator)
    # tokens = this process's own tokens x world size: the test checks the processes saw different rows
    print(f"process {accelerator.process_index} of {accelerator.num_processes}: {result.tokens} tokens", flush=True)
    return result


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
