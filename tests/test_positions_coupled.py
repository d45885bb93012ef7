"""Task-given position ids (issue 18): one rule for training rows, scoring and generation.

The invariant: the ids a training row carries (``meta["positions"]`` -> ``Row.position_ids``) are the ids the
rule gives the row's tokens, and the decode loop, which calls the rule on the row as it grows, feeds every
generated token with that same id (the rule is causal after the prompt). Checked as a property over random
problems, lengths, offsets and garbage continuations, and end to end: greedy generation with positions
equals the teacher-forced argmax of the full row under the same ids.
"""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.data.batch import collate
from procsup.data.positions import add_positions, random_offsets, row_positions, shifted, with_positions
from procsup.data.tokenize import StepFormat, tokenize_many
from procsup.data.trajectory import Trajectory, TrajectoryError
from procsup.models.factory import TinyModelConfig, build_tiny_model, char_tokenizer
from procsup.rollout import LMPolicy, complete, generate, load_policy, start
from procsup.tasks.addition import AdditionProblem, AdditionTask
from procsup.trainers.pal import PALConfig, evaluate_rows, train

FMT = StepFormat()
TASK = AdditionTask(index_hints=False, pad_answer=True)
TOK = char_tokenizer()


def _texts(ids):
    return [TOK.decode([i]) for i in ids]


@settings(max_examples=60, deadline=None)
@given(da=st.integers(1, 25), db=st.integers(1, 25), seed=st.integers(0, 10**6), offset=st.integers(0, 300),
       mode=st.sampled_from(["history", "outcome"]), stride=st.integers(10, 40), spread=st.booleans())
def test_training_rows_and_the_rule_agree_token_by_token(da, db, seed, offset, mode, stride, spread):
    p = TASK.make(random.Random(seed), da, db)
    slots = sorted(random.Random(seed).sample(range(1, 40), p.columns + 1)) if spread else None
    rule = shifted(TASK.coupled_positions(stride, FMT, slots), offset)
    (row,) = tokenize_many([add_positions(TASK.expert(p), rule, FMT, mode)], TOK, FMT, mode)
    assert row.position_ids == row_positions(row, TOK, rule)
    texts = _texts(row.input_ids)
    prompt = len(tokenize_many([Trajectory(TASK.render_input(p), "", ())], TOK, FMT, "steps")[0].input_ids)
    # causal after the prompt: what generation computes on the row so far is the teacher-forced id
    for k in range(prompt + 1, len(texts) + 1):
        assert rule(texts[:k])[-1] == row.position_ids[k - 1]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 22), seed=st.integers(0, 10**6), tail=st.text(alphabet="0123456789+=,A:\n", max_size=60))
def test_the_rule_is_causal_on_any_continuation(n, seed, tail):
    """A model's own (wrong, malformed) text still gets ids that never depend on later tokens."""
    p = TASK.sample(seed, n, 1)[0]
    rule = TASK.coupled_positions(10, FMT)
    texts = _texts(tokenize_many([Trajectory(TASK.render_input(p), "", ())], TOK, FMT, "steps")[0].input_ids)
    texts += list(tail) + ["<eos>"]
    full = rule(texts)
    assert len(full) == len(texts) and min(full) >= 0
    prompt = len(texts) - len(tail) - 1
    for k in range(prompt + 1, len(texts) + 1):
        assert rule(texts[:k]) == full[:k]


@pytest.mark.parametrize("slots", [None, (2, 5, 9, 11)])
def test_every_token_sits_one_id_before_what_the_next_token_reads(slots):
    """798+713 = 1511: the token before each restated input digit, carry-in and answer digit has the id just
    below the one it must read, with regular blocks and with randomly spaced ones."""
    p = AdditionProblem(798, 713)
    (row,) = tokenize_many([add_positions(TASK.expert(p), TASK.coupled_positions(10, FMT, slots), FMT, "history")],
                           TOK, FMT, "history")
    text, pos = "".join(_texts(row.input_ids)), row.position_ids
    at = {}  # id -> the characters there
    for ch, i in zip(text, pos):
        at.setdefault(i, []).append(ch)
    steps = text[text.index("\n") + 1 : text.index("A:")].split("\n")[:-1]
    start = text.index("\n") + 1
    carry = "0"
    for t, step in enumerate(steps):  # "x+y+c=d,c'"
        i = start + sum(len(s) + 1 for s in steps[:t])
        assert step[0] in at[pos[i - 1] + 1] and step[2] in at[pos[i + 1] + 1]  # x and y: input digits there
        assert at.get(pos[i + 3] + 1, ["0"])[0] == carry  # the carry-in: the previous carry-out (none: 0)
        carry = step[8]
    colon = text.index("A:") + 1  # ':' reads the last carry-out, the first digit of "1511"
    assert text[colon + 1] in at[pos[colon] + 1]
    for k in range(1, 4):  # each answer digit: the next one is the sum digit two ids below it
        assert text[colon + k + 1] in at[pos[colon + k] - 2]
    block0 = 10 * (slots[0] if slots else 1)
    assert pos[text.index("8")] == block0 and pos[text.index("\n")] == block0 - 1


def test_collate_pads_position_ids_and_refuses_a_mixed_batch():
    trajs = [TASK.expert(TASK.sample(0, d, 1)[0]) for d in (1, 4)]
    rule = TASK.coupled_positions(10, FMT)
    rows = tokenize_many([add_positions(t, rule, FMT, "history") for t in trajs], TOK, FMT, "history")
    batch = collate(rows, TOK.pad_token_id)
    assert batch["position_ids"].shape == batch["input_ids"].shape
    assert batch["position_ids"][0, : len(rows[0].input_ids)].tolist() == list(rows[0].position_ids)
    assert batch["position_ids"][0, len(rows[0].input_ids):].eq(0).all()
    plain = tokenize_many(trajs[:1], TOK, FMT, "history")
    assert "position_ids" not in collate(plain, TOK.pad_token_id)
    with pytest.raises(ValueError, match="mixes"):
        collate([rows[0], plain[0]], TOK.pad_token_id)
    assert with_positions(plain, TOK, rule)[0].position_ids == rows[0].position_ids


def test_positions_written_for_another_mode_are_refused():
    traj = add_positions(TASK.expert(TASK.sample(0, 3, 1)[0]), TASK.coupled_positions(), FMT, "outcome")
    with pytest.raises(TrajectoryError, match="meta.positions"):
        tokenize_many([traj], TOK, FMT, "history")


def test_random_offsets_cover_the_range_and_follow_the_seed():
    offs = random_offsets(2000, 30, seed=1)
    assert set(offs) == set(range(31)) and offs == random_offsets(2000, 30, seed=1)
    with pytest.raises(ValueError):
        random_offsets(3, -1, 0)


def test_padded_answer_is_checked_and_written_by_the_executor():
    p = AdditionProblem(12, 39)
    assert TASK.expert(p).target == "051" and TASK.check_answer(p, "051") and not TASK.check_answer(p, "51")
    state = TASK.initial_state(p)
    for s in TASK.state_trajectory(p).steps:
        state = TASK.execute(state, s.action)
    assert TASK.answer(state) == "051"
    assert AdditionTask().expert(p).target == "51"  # the default layout is unchanged


def _greedy_matches_teacher_forcing(model, rule, problems):
    prompts = [tokenize_many([Trajectory(TASK.render_input(p), "", ())], TOK, FMT, "steps")[0].input_ids
               for p in problems]
    gens = generate(model, TOK, prompts, max_new_tokens=40, positions=rule, batch_size=8)
    for prompt, (gen,) in zip(prompts, gens):
        full = [*prompt, *gen]
        pos = torch.tensor([rule(_texts(full))])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full]), position_ids=pos).logits[0]
        argmax = logits[len(prompt) - 1 : -1].argmax(-1).tolist()
        assert argmax == gen
    return gens


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_with_positions_is_the_teacher_forced_argmax(arch):
    """Batched (left-padded prompts of different lengths), KV-cached decoding feeds each new token the rule's
    id: the full row under the same ids, in one pass, has the generated tokens as its argmax."""
    torch.manual_seed(0)
    model, _ = build_tiny_model(TinyModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2), seed=0)
    with torch.no_grad():  # weights large enough that the random model's output depends on its input
        for w in model.parameters():
            w.normal_(0, 0.5)
    rule = shifted(TASK.coupled_positions(10, FMT), 7)
    problems = [TASK.sample(s, d, 1)[0] for s, d in enumerate((1, 3, 6, 2, 9))]
    gens = _greedy_matches_teacher_forcing(model.eval(), rule, problems)
    assert len({t for g in gens for t in g[0]}) > 3  # the model's output varies: a test that can fail
    # the ids matter: default positions give other tokens
    prompts = [tokenize_many([Trajectory(TASK.render_input(p), "", ())], TOK, FMT, "steps")[0].input_ids
               for p in problems]
    assert generate(model, TOK, prompts, max_new_tokens=40, batch_size=8) != gens


def test_sampling_with_positions_at_a_tiny_temperature_is_greedy():
    model, _ = build_tiny_model(TinyModelConfig(arch="gpt2", hidden_size=32, num_layers=2, num_heads=2), seed=1)
    rule = TASK.coupled_positions(10, FMT)
    prompts = [tokenize_many([Trajectory(TASK.render_input(TASK.sample(s, 4, 1)[0]), "", ())], TOK, FMT,
                             "steps")[0].input_ids for s in range(3)]
    greedy = generate(model, TOK, prompts, max_new_tokens=20, positions=rule)
    sampled = generate(model, TOK, prompts, n=3, max_new_tokens=20, temperature=1e-6, positions=rule)
    assert sampled == [[g[0]] * 3 for g in greedy]
    stopped = generate(model, TOK, prompts, n=2, max_new_tokens=20, temperature=1.0, positions=rule,
                       stop_strings=["+"])
    assert all("+" not in TOK.decode(s[:-1]) for row in stopped for s in row)


def test_a_model_trained_with_coupling_reproduces_its_teacher_forced_argmax(tmp_path):
    """Trained through the PAL trainer on rows with coupled, randomly offset ids (the trainer passes them to
    the model: the eval loss differs from the same rows' loss without them), then sampled through
    ``complete`` with the rule: generation and teacher forcing agree token by token."""
    torch.manual_seed(0)
    model, tok = build_tiny_model(TinyModelConfig(arch="gpt2", hidden_size=32, num_layers=2, num_heads=2), seed=0)
    rule = TASK.coupled_positions(10, FMT)
    problems = TASK.sample_range(0, 2, 200)
    offs = random_offsets(len(problems), 40, seed=0)
    trajs = [add_positions(TASK.expert(p), shifted(rule, o), FMT, "history") for p, o in zip(problems, offs)]
    cfg = PALConfig(output_dir=str(tmp_path / "run"), mode="history", max_steps=60, batch_size=16,
                    learning_rate=3e-3, warmup_steps=5, progress=False, save_steps=0)
    result = train(cfg, model=model, tokenizer=tok, trajectories=trajs)
    rows = tokenize_many(trajs[:32], tok, FMT, "history")
    coupled = evaluate_rows(result.model, rows, tok, cfg, "cpu")["eval_loss"]
    plain = evaluate_rows(result.model, tokenize_many([TASK.expert(p) for p in problems[:32]], tok, FMT, "history"),
                          tok, cfg, "cpu")["eval_loss"]
    assert coupled < plain
    test = [TASK.sample(s, 3, 1)[0] for s in range(4)]
    _greedy_matches_teacher_forcing(result.model.eval(), rule, test)
    policy = LMPolicy(result.model, tok, TASK, FMT, mode="history", positions=rule)
    out = complete(policy, start(TASK, test))
    assert all(o[0].meta["tokens"] > 0 for o in out)
    # the saved model says it needs task-given ids: loading it as a policy without a rule is an error, not
    # a silently wrong decoding with default ids; with the rule it decodes as the in-memory model
    final = tmp_path / "run" / "checkpoint-60"
    assert json.loads((final / "procsup.json").read_text())["positions"] == "task-given"
    with pytest.raises(ValueError, match="positions="):
        load_policy(final, TASK)
    from typer.testing import CliRunner

    from procsup.cli import app

    cli = CliRunner().invoke(app, ["evaluate", "addition", str(final), "--size", "2", "--count", "2"])
    assert cli.exit_code == 1 and "position ids" in cli.output
    loaded = load_policy(final, TASK, positions=rule)
    assert [o[0].steps for o in complete(loaded, start(TASK, test))] == [o[0].steps for o in out]


def test_bench_addition_with_coupling_runs_both_text_arms_and_its_trivial_rows(tmp_path):
    from procsup.bench.addition import AdditionBenchConfig, main

    cfg = AdditionBenchConfig(
        output_dir=str(tmp_path / "bench"), methods=("outcome", "history"), seeds=(0,), train_size=40, steps=2,
        batch_size=8, test_digits=(2,), test_size=3, val_digits=(4,), val_size=2, hidden_size=16, num_heads=2,
        index_hints=False, pad_answer=True, coupling=True, spread=0.5, trivial=True, trivial_size=2, progress=False,
    )
    result = main(cfg)
    assert set(result["table"]) == {"outcome", "history"} and set(result["val_table"]["history"]) == {"4"}
    assert result["runs"][0]["val"]["4"]["n"] == 2
    (trivial,) = result["trivial"]
    assert set(trivial["untrained"]) == {"outcome", "history"} and 0 <= trivial["majority"]["2"] <= 1
    with pytest.raises(ValueError, match="index_hints=false"):
        AdditionBenchConfig(coupling=True)
