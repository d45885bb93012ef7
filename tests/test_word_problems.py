"""The word-problem task: expert steps are the story's operations and chain to the answer, the checker
(a parser, never eval) finds exactly the wrong step, the state-mode executor reproduces the expert,
irrelevant sentences change nothing but the text, and sampling is deterministic."""

from __future__ import annotations

import pytest

from procsup.data.tokenize import StepFormat, tokenize
from procsup.data.trajectory import Trajectory
from procsup.tasks.word_problems import SKIP, WordProblem, WordProblemTask, parse_step

CASES = [(size, noise) for size in range(1, 8) for noise in (0, 3)]
MALICIOUS = [
    "__import__('os')", "__import__('os').system('true')", "5+3=8; import os", "(5+3)=8", "5+3==8", "5+3=8=8",
    "5 + 3", "8", "", "eval('8')", "5+3=0x8", "5**3=125", "5/3=1", "-5+3=-2", "9" * 5000 + "+1=1", "５+3=8",
]


def problems(size: int, noise: int, count: int = 6, seeds=range(6)) -> list[WordProblem]:
    return [p for seed in seeds for p in WordProblemTask(noise=noise).sample(seed, size, count)]


def corrupt(action: str) -> str:
    """Add one to the result of a step ``q op n = r``."""
    q, op, n, r = parse_step(action)
    return f"{q}{op}{n}={r + 1}"


@pytest.mark.parametrize("size,noise", CASES)
def test_expert_steps_are_the_operations_and_reach_the_answer(size, noise):
    task = WordProblemTask()
    for p in problems(size, noise):
        traj = task.expert(p)
        assert task.check_answer(p, traj.target) and traj.target == str(p.answer)
        assert task.check_steps(p, [s.action for s in traj.steps]) == [True] * size
        assert len(traj.steps) == p.size == size and len(p.sentences) == 1 + size + noise
        q = p.start
        for step, op in zip(traj.steps, [o for o in p.ops if o]):
            a, got_op, b, r = parse_step(step.action)
            assert (a, got_op, b) == (q, *op) and str(b) in step.state  # the operand is in the sentence read
            assert step.key == f"{q}{op[0]}{op[1]}" and step.state.startswith(f"{p.person} has {q} {p.item}. ")
            q = r
            assert 2 <= q < task.max_value
        assert str(q) == traj.target
        assert traj.input.endswith(f"How many {p.item} does {p.person} have?")


@pytest.mark.parametrize("size,noise", CASES)
def test_check_steps_finds_exactly_the_corrupted_step(size, noise):
    task = WordProblemTask()
    for p in problems(size, noise, count=3):
        actions = [s.action for s in task.expert(p).steps]
        for t in range(size):
            q, op, n, r = parse_step(actions[t])
            wrong_op = {"+": "-", "-": "+", "*": "+"}[op]
            for bad_step in (corrupt(actions[t]), f"{q}{wrong_op}{n}={r}", f"{q + 1}{op}{n}={r}", MALICIOUS[t]):
                bad = actions[:t] + [bad_step] + actions[t + 1 :]
                assert task.check_steps(p, bad) == [i != t for i in range(size)]
            if op in "+*":  # the operands of + and * may come in either order
                assert task.check_steps(p, actions[:t] + [f"{n} {op} {q} = {r}"] + actions[t + 1 :]) == [True] * size
        assert task.check_steps(p, actions[:-1]) == [True] * (size - 1) + [False]  # a missing step is wrong
        assert task.check_steps(p, actions + ["2+2=4"]) == [True] * size + [False]  # so is an extra one
        assert not task.check_answer(p, str(p.answer + 1)) and not task.check_answer(p, None)
        assert task.check_answer(p, f" {p.answer}\n")


def test_subtraction_operands_are_ordered():
    task = WordProblemTask()
    p = WordProblem("Tom", "apples", 9, ("Tom has 9 apples.", "Tom loses 4 apples."), (("-", 4),))
    assert task.check_steps(p, ["9-4=5"]) == [True]
    assert task.check_steps(p, ["4-9=5"]) == [False]


@pytest.mark.parametrize("step", MALICIOUS)
def test_steps_are_parsed_never_evaluated(step):
    task = WordProblemTask()
    p = WordProblem("Tom", "apples", 5, ("Tom has 5 apples.", "Tom buys 3 apples."), (("+", 3),))
    state = task.initial_state(p)
    assert parse_step(step) is None
    assert task.check_steps(p, [step]) == [False]
    assert not task.check_state_step(state, step)
    assert task.execute(state, step) is None


@pytest.mark.parametrize("size,noise", CASES)
def test_executor_driven_by_expert_state_actions(size, noise):
    task = WordProblemTask()
    for p in problems(size, noise):
        traj = task.state_trajectory(p)
        assert len(traj.steps) == size + noise and sum(s.action == SKIP for s in traj.steps) == noise
        assert [s for s in traj.steps if s.action != SKIP] == list(task.expert(p).steps)
        state = task.initial_state(p)
        for step in traj.steps:
            assert not task.is_done(state)
            assert task.render_state(state) == step.state
            assert task.check_state_step(state, step.action)
            wrong = "2+2=4" if step.action == SKIP else SKIP  # using an irrelevant sentence, or skipping a real one
            assert not task.check_state_step(state, wrong)
            state = task.execute(state, step.action)
            assert state is not None
        assert task.is_done(state) and task.answer(state) == traj.target


@pytest.mark.parametrize("size", [2, 5, 7])
def test_noise_changes_only_the_text(size):
    task = WordProblemTask()
    for seed in range(4):
        clean, noisy = task.sample(seed, size, 10), task.sample(seed, size, 10, noise=3)
        for a, b in zip(clean, noisy):
            assert a.answer == b.answer and (a.person, a.item, a.start) == (b.person, b.item, b.start)
            relevant = [b.sentences[0]] + [s for s, o in zip(b.sentences[1:], b.ops) if o is not None]
            assert tuple(relevant) == a.sentences and [o for o in b.ops if o] == list(a.ops)
            assert [s.action for s in task.expert(a).steps] == [s.action for s in task.expert(b).steps]
            assert len(b.sentences) == len(a.sentences) + 3 and task.expert(b).input != task.expert(a).input


def test_rendering_by_hand():
    task = WordProblemTask()
    sentences = ("Tom has 5 apples.", "Tom buys 3 apples.", "Sue is 9 years old.", "Tom gives 2 apples to Sue.",
                 "Tom now has 3 times as many apples.")
    p = WordProblem("Tom", "apples", 5, sentences, (("+", 3), None, ("-", 2), ("*", 3)))
    traj = task.expert(p)
    assert traj.input == " ".join(sentences) + " How many apples does Tom have?"
    assert [s.action for s in traj.steps] == ["5+3=8", "8-2=6", "6*3=18"] and traj.target == "18"
    states = task.state_trajectory(p).steps
    assert [(s.state, s.action) for s in states[1:3]] == [
        ("Tom has 8 apples. Sue is 9 years old.", SKIP), ("Tom has 8 apples. Tom gives 2 apples to Sue.", "8-2=6"),
    ]
    assert WordProblemTask.problem_of(Trajectory.from_dict(traj.to_dict())) == p
    # a wrong result is carried by the executor (and judged wrong), like any model output
    state = task.execute(task.initial_state(p), " 5+3=9\n")
    assert state.quantity == 9 and task.render_state(state) == "Tom has 9 apples. Sue is 9 years old."


@pytest.mark.parametrize("size", [1, 3, 7])
def test_sample_is_deterministic(size):
    task = WordProblemTask(noise=2)
    first = task.sample(seed=5, size=size, count=30)
    assert first == task.sample(seed=5, size=size, count=30)
    assert first != task.sample(seed=6, size=size, count=30)
    assert all(p.size == size for p in first)
    train = task.sample_range(seed=0, max_size=4, count=100)
    assert train == task.sample_range(seed=0, max_size=4, count=100) and {p.size for p in train} == {2, 3, 4}


def test_all_operations_occur_and_config_is_validated():
    ops = {o[0] for p in problems(5, 0) for o in p.ops}
    assert ops == {"+", "-", "*"}
    for bad in (dict(noise=-1), dict(max_value=10), dict(max_operand=1)):
        with pytest.raises(ValueError):
            WordProblemTask(**bad)
    with pytest.raises(ValueError, match="size"):
        WordProblemTask().sample(0, 0, 1)


@pytest.mark.parametrize("mode", ["history", "state", "outcome"])
def test_trajectories_tokenize_with_the_char_tokenizer(char_tok, mode):
    task = WordProblemTask(noise=2)
    p = task.sample(0, 5, 1)[0]
    traj = task.state_trajectory(p) if mode == "state" else task.expert(p)
    rows = tokenize(traj, char_tok, StepFormat(), mode)
    assert all(char_tok.unk_token_id not in r.input_ids for r in rows)
    steps = {"history": rows[0].num_steps, "state": len(rows), "outcome": rows[0].num_steps}[mode]
    assert steps == (0 if mode == "outcome" else len(traj.steps))


def test_step_keys_name_the_sub_problem_not_the_wording():
    """Consistency keys: equal for the same arithmetic in differently worded stories, None for noise."""
    task = WordProblemTask()
    a = WordProblem("Tom", "apples", 8, ("Tom has 8 apples.", "Tom buys 3 apples."), (("+", 3),))
    b = WordProblem("Sue", "coins", 8, ("Sue has 8 coins.", "Sue's mum is 40.", "Ana gives Sue 3 coins."),
                    (None, ("+", 3)))
    ka, kb = ([s.key for s in task.state_trajectory(p).steps] for p in (a, b))
    assert ka == ["8+3"] and kb == [None, "8+3"]
    assert [s.key for s in task.expert(b).steps] == ["8+3"]
    assert task.state_trajectory(a).steps[0].state != task.state_trajectory(b).steps[1].state
