"""Shared fixtures: a tiny llama with the character tokenizer, a sub-word (BPE) tokenizer trained here,
and a handful of addition trajectories. Everything is built locally, on CPU, in well under a second."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from procsup.models.factory import TinyModelConfig, build_tiny_model, char_tokenizer
from procsup.tasks.addition import AdditionTask

torch.set_num_threads(1)  # the machine has 2 cores shared with other jobs

def wrong_digit_trace(a: int, b: int, wrong_at: int | None):
    """The state trace of a + b (``AdditionTask(index_hints=False)``) with step ``wrong_at`` (1-based) given a
    wrong digit, ``meta['correct']`` set: a trace whose first error is known, for the annotation and
    internalization tests."""
    from dataclasses import replace

    from procsup.data.trajectory import Trajectory

    task = AdditionTask(index_hints=False)
    t = task.state_trajectory(task.problem_of(Trajectory("", "", (), {"a": a, "b": b})))
    steps = list(t.steps)
    if wrong_at is not None:
        d, c = steps[wrong_at - 1].action.split(",")
        steps[wrong_at - 1] = replace(steps[wrong_at - 1], action=f"{(int(d) + 1) % 10},{c}")
    return Trajectory(t.input, t.target, tuple(steps), {**t.meta, "correct": wrong_at is None})


#: The model size every test uses unless it needs another one.
TINY = TinyModelConfig(arch="llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=256)


@pytest.fixture(scope="session")
def char_tok():
    return char_tokenizer()


@pytest.fixture
def tiny_model(char_tok):
    """A fresh tiny llama (seed 0) and the character tokenizer."""
    return build_tiny_model(TINY, char_tok, seed=0)


@pytest.fixture(scope="session")
def addition_trajs():
    """12 state-mode addition demonstrations (1–3 digits): states, actions and the final answer."""
    task = AdditionTask()
    return [task.state_trajectory(p) for p in task.sample_range(seed=0, max_digits=3, count=12)]


@pytest.fixture(scope="session")
def history_trajs():
    """The same problems as expert history-mode trajectories."""
    task = AdditionTask()
    return [task.expert(p) for p in task.sample_range(seed=0, max_digits=3, count=12)]


# Text the BPE is trained on: step-formatted lines, so that merges span digits, separators and spaces.
_BPE_CORPUS = [
    "12+34 | k:2,4 d:1,3\nk:2+4+0=6,0>d ки\nd:1+3+0=4,0>$ ки\nA:46",
    "Step 1: the cat sat on the mat. ки\nStep 2: so the answer is 4. ки\nThe answer is: 4",
    "x\n\n\nab ab ab\n\nthe the the\n a:b a:b ки\n ки\n",
]


@pytest.fixture(scope="session")
def bpe_tok():
    """A byte-level BPE (vocabulary 300) trained here on a few lines: multi-character tokens whose merges
    cross spaces and newlines, as in real sub-word tokenizers. Lossless: decode(encode(s)) == s."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_BPE_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", clean_up_tokenization_spaces=False)
