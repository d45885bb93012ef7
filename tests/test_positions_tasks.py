"""Coupled position ids of logic (step t <-> the fact it uses) and word problems (step t <-> sentence t), issue 18.

The invariant of tests/test_positions_coupled.py, for these tasks' rules: over random sizes, perturbations,
strides, offsets and block slots, the ids a training row carries are the rule's on its tokens, and the rule
on every prefix of the row (what the decode loop computes) gives the id teacher forcing uses; on any
continuation the rule stays causal; greedy generation with the rule equals the teacher-forced argmax.
Then what each coupling promises: a logic step sits at its fact's ids, a word-problem step at a fixed
distance from its sentence's number.
"""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.data.positions import add_positions, random_slots, row_positions, shifted
from procsup.data.tokenize import StepFormat, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.models.factory import TinyModelConfig, build_tiny_model, char_tokenizer
from procsup.rollout import generate
from procsup.tasks.logic import LogicTask
from procsup.tasks.word_problems import WordProblemTask

FMT = StepFormat()
TOK = char_tokenizer()


def _texts(ids):
    return [TOK.decode([i]) for i in ids]


def _prompt_ids(task, p):
    return tokenize_many([Trajectory(task.render_input(p), "", ())], TOK, FMT, "steps")[0].input_ids


def _logic(seed, size, distractors):
    return LogicTask(distractors).make(random.Random(seed), size)


def _word(seed, ops, noise, max_value):
    return WordProblemTask(noise, max_value).make(random.Random(seed), ops)


def _blocks(p):
    return len(p.facts) + 1 if hasattr(p, "facts") else len(p.sentences) + 1


def _check_rows_and_prefixes(task, p, rule, mode):
    (row,) = tokenize_many([add_positions(task.expert(p), rule, FMT, mode)], TOK, FMT, mode)
    assert row.position_ids == row_positions(row, TOK, rule)
    texts = _texts(row.input_ids)
    for k in range(len(_prompt_ids(task, p)) + 1, len(texts) + 1):
        assert rule(texts[:k])[-1] == row.position_ids[k - 1]
    return row


@settings(max_examples=50, deadline=None)
@given(size=st.integers(2, 14), distractors=st.integers(0, 3), seed=st.integers(0, 10**6), offset=st.integers(0, 200),
       mode=st.sampled_from(["history", "outcome"]), stride=st.integers(8, 30), spread=st.booleans())
def test_logic_training_rows_and_every_generation_prefix_agree(size, distractors, seed, offset, mode, stride, spread):
    task, p = LogicTask(distractors), _logic(seed, size, distractors)
    slots = random_slots(random.Random(seed), _blocks(p), 30) if spread else None
    _check_rows_and_prefixes(task, p, shifted(task.coupled_positions(stride, FMT, slots), offset), mode)


@settings(max_examples=40, deadline=None)
@given(ops=st.integers(1, 10), noise=st.integers(0, 3), seed=st.integers(0, 10**6), offset=st.integers(0, 300),
       mode=st.sampled_from(["history", "outcome"]), stride=st.integers(64, 100), spread=st.booleans(),
       max_value=st.sampled_from([100, 1000]))
def test_word_training_rows_and_every_generation_prefix_agree(ops, noise, seed, offset, mode, stride, spread, max_value):
    task, p = WordProblemTask(noise, max_value), _word(seed, ops, noise, max_value)
    slots = random_slots(random.Random(seed), _blocks(p), 20) if spread else None
    _check_rows_and_prefixes(task, p, shifted(task.coupled_positions(stride, FMT, slots), offset), mode)


@settings(max_examples=50, deadline=None)
@given(which=st.sampled_from(["logic", "word"]), size=st.integers(2, 10), seed=st.integers(0, 10**6),
       tail=st.text(alphabet="abcxyz0123456789+-*=<>:A\n", max_size=60))
def test_the_task_rules_are_causal_on_any_continuation(which, size, seed, tail):
    """A model's own (wrong, malformed) text gets ids that never depend on later tokens."""
    task = LogicTask() if which == "logic" else WordProblemTask(max_value=100)
    p = _logic(seed, size, 0) if which == "logic" else _word(seed, size, 0, 100)
    rule = task.coupled_positions(fmt=FMT)
    texts = _texts(_prompt_ids(task, p)) + list(tail) + ["<eos>"]
    full = rule(texts)
    assert len(full) == len(texts) and min(full) >= 0
    for k in range(len(texts) - len(tail), len(texts) + 1):
        assert rule(texts[:k]) == full[:k]


@settings(max_examples=40, deadline=None)
@given(size=st.integers(3, 14), seed=st.integers(0, 10**6), spread=st.booleans())
def test_a_logic_step_sits_at_the_ids_of_the_fact_it_uses(size, seed, spread):
    task, p = LogicTask(), _logic(seed, size, 0)
    slots = random_slots(random.Random(seed), _blocks(p), 30) if spread else None
    row = _check_rows_and_prefixes(task, p, task.coupled_positions(12, FMT, slots), "history")
    text, ids = "".join(_texts(row.input_ids)), row.position_ids
    prompt = task.render_input(p)
    at = len(prompt) + 1
    for step in task.expert(p).steps:
        fact = step.action.split(":")[0]
        k = prompt.index(fact)  # the fact's characters in the input
        assert text[at : at + 3] == fact and ids[at : at + 3] == ids[k : k + 3]
        at += len(step.action) + 1
    # and the ids differ from one step to the next when the facts do: the coupling is not a constant
    assert len({ids[len(prompt) + 1]} | {ids[k] for k in range(len(prompt))}) > 1


@settings(max_examples=40, deadline=None)
@given(ops=st.integers(2, 10), seed=st.integers(0, 10**6), spread=st.booleans())
def test_a_word_step_is_a_fixed_distance_from_its_sentences_number(ops, seed, spread):
    task, p = WordProblemTask(max_value=100), _word(seed, ops, 0, 100)
    slots = random_slots(random.Random(seed), _blocks(p), 20) if spread else None
    row = _check_rows_and_prefixes(task, p, task.coupled_positions(64, FMT, slots), "history")
    ids, prompt = row.position_ids, task.render_input(p)
    starts = [sum(len(s) + 1 for s in p.sentences[:j]) for j in range(len(p.sentences))]  # joined by spaces
    at, gaps = len(prompt) + 1, set()
    for t, step in enumerate(task.expert(p).steps, start=1):
        sentence = p.sentences[t]
        number = starts[t] + next(i for i, c in enumerate(sentence) if c.isdigit())
        gaps.add(ids[at] - ids[number])
        at += len(step.action) + 1
    assert gaps == {52 - 24}


def _greedy_is_teacher_forced(model, task, rule, problems):
    prompts = [_prompt_ids(task, p) for p in problems]
    gens = generate(model, TOK, prompts, max_new_tokens=30, positions=rule, batch_size=8)
    for prompt, (gen,) in zip(prompts, gens):
        full = [*prompt, *gen]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full]), position_ids=torch.tensor([rule(_texts(full))])).logits[0]
        assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == gen
    return gens, prompts


@pytest.mark.parametrize("which", ["logic", "word"])
def test_generation_with_the_task_rule_is_the_teacher_forced_argmax(which):
    """Batched, KV-cached decoding with the task's rule (prompts of different lengths, a random start offset):
    the full row under the same ids has the generated tokens as its argmax."""
    model, _ = build_tiny_model(TinyModelConfig(arch="llama", hidden_size=32, num_layers=2, num_heads=2), seed=0)
    with torch.no_grad():  # weights large enough that the random model's output depends on its input
        for w in model.parameters():
            w.normal_(0, 0.5)
    if which == "logic":
        task, problems = LogicTask(), [_logic(s, n, 0) for s, n in enumerate((2, 5, 9, 3))]
    else:
        task, problems = WordProblemTask(max_value=100), [_word(s, n, 0, 100) for s, n in enumerate((2, 5, 8))]
    rule = shifted(task.coupled_positions(fmt=FMT), 5)
    gens, prompts = _greedy_is_teacher_forced(model.eval(), task, rule, problems)
    assert len({t for g in gens for t in g[0]}) > 3  # the output varies: a test that can fail
    assert generate(model, TOK, prompts, max_new_tokens=30, batch_size=8) != gens  # the ids matter


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="stride"):
        LogicTask().coupled_positions(stride=5)
    with pytest.raises(ValueError, match="stride"):
        WordProblemTask().coupled_positions(stride=40)
    with pytest.raises(ValueError, match="slots"):
        LogicTask().coupled_positions(slots=(3, 2))
    with pytest.raises(ValueError, match="prompt"):
        LogicTask().coupled_positions()(list("not a logic prompt\n"))
    with pytest.raises(ValueError, match="question"):
        WordProblemTask().coupled_positions()(list("Tom has 3 apples.\n"))


def test_bench_positions_runs_every_arm_and_its_trivial_rows(tmp_path):
    from procsup.bench.positions import PositionsBenchConfig, format_rows, main

    cfg = PositionsBenchConfig(output_dir=str(tmp_path / "b"), seeds=(0, 1), hidden_size=16, logic_train_size=40,
                               logic_steps=2, logic_batch_size=4, word_train_size=20, word_steps=2, word_batch_size=2,
                               test_size=3, val_size=2, trivial_size=2, logic_test_sizes=(3, 4), logic_val_sizes=(4,),
                               word_test_ops=(2, 3), word_val_ops=(3,))
    result = main(cfg)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["tables"] == json.loads(json.dumps(result["tables"]))
    for name in ("logic", "word_problems"):
        test = result["tables"][name]["test"]
        assert set(test) == {"history-coupled", "outcome-coupled", "history", "outcome"}
        assert test["history-coupled"]["3" if name == "word_problems" else "4"]["trace_valid"] is not None
        assert test["outcome"]["2" if name == "word_problems" else "3"]["trace_valid"] is None
        assert len(test["history"]["2" if name == "word_problems" else "3"]["exact_match"]["per_seed"]) == 2
        assert "untrained history-coupled" in result["tables"][name]["trivial"]
        assert len(format_rows(name, result)) == 1 + 4 + 5
    assert sum(bool(r.get("cached")) for r in main(cfg)["runs"]) == 16  # a re-run reads every run back
