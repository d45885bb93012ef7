"""The logic task: expert deductions are sound and reach the answer, the checker finds exactly the wrong
step, the state-mode executor reproduces the expert with states of one length for every chain,
distractor facts change nothing but the input, and sampling is deterministic."""

from __future__ import annotations

import re

import pytest

from procsup.data.tokenize import StepFormat, tokenize
from procsup.data.trajectory import Trajectory
from procsup.tasks.logic import TRAIN_MAX_SIZE, LogicProblem, LogicTask

HISTORY_STEP = re.compile(r"^([a-z])>([a-z]):([a-z])([<>])([a-z])$")
CASES = [(size, k) for size in (2, 3, 5, 8, 10, 13) for k in (0, 3)]


def problems(size: int, distractors: int, count: int = 8, seeds=range(6)) -> list[LogicProblem]:
    return [p for seed in seeds for p in LogicTask(distractors=distractors).sample(seed, size, count)]


def corrupt(action: str) -> str:
    """Flip the relation of the derived fact (``u>v:xRe``)."""
    return action[:-2] + ("<" if action[-2] == ">" else ">") + action[-1]


@pytest.mark.parametrize("size,k", CASES)
def test_expert_deductions_are_sound_and_answer_the_question(size, k):
    task = LogicTask()
    for p in problems(size, k):
        traj = task.expert(p)
        x, y = p.question
        rank = {e: i for i, e in enumerate(p.chain)}
        assert task.check_answer(p, traj.target) and traj.target == (">" if rank[x] < rank[y] else "<")
        assert task.check_steps(p, [s.action for s in traj.steps]) == [True] * len(traj.steps)
        assert 1 <= len(traj.steps) <= size - 1
        for step in traj.steps:
            u, v, left, rel, e = HISTORY_STEP.match(step.action).groups()
            assert f"{u}>{v}" in p.facts and rank[u] + 1 == rank[v]  # a real fact of the chain
            assert left == x and e in (u, v) and (rel == ">") == (rank[x] < rank[e])  # a true relation
            assert step.state == step.key and len(step.state) == 7  # length-independent state
        assert traj.steps[-1].action.endswith(f"{x}{traj.target}{y}")  # the last step derives the answer
        assert len(p.facts) == size - 1 + k


@pytest.mark.parametrize("size,k", CASES)
def test_check_steps_finds_exactly_the_corrupted_step(size, k):
    task = LogicTask()
    for p in problems(size, k, count=4):
        actions = [s.action for s in task.expert(p).steps]
        n = len(actions)
        for t in range(n):
            bad = actions[:t] + [corrupt(actions[t])] + actions[t + 1 :]
            assert task.check_steps(p, bad) == [i != t for i in range(n)]
        assert task.check_steps(p, actions[:-1]) == [True] * (n - 1) + [False]  # a missing step is wrong
        assert task.check_steps(p, []) == [False] * n
        assert task.check_steps(p, actions + [actions[-1]]) == [True] * n + [False]  # so is an extra one
        assert not task.check_answer(p, "<" if p.answer == ">" else ">") and not task.check_answer(p, None)
        assert task.check_answer(p, f" {p.answer}\n")


@pytest.mark.parametrize("size,k", CASES)
def test_executor_driven_by_expert_state_actions(size, k):
    task = LogicTask()
    for p in problems(size, k):
        traj = task.state_trajectory(p)
        assert [s.state for s in traj.steps] == [s.state for s in task.expert(p).steps]
        state = task.initial_state(p)
        for step in traj.steps:
            assert not task.is_done(state)
            assert task.render_state(state) == step.state
            assert re.fullmatch(r"[a-z][<>][a-z]", step.action) and task.check_state_step(state, step.action)
            assert not task.check_state_step(state, corrupt(step.action))
            state = task.execute(state, step.action)
            assert state is not None
        assert task.is_done(state) and task.answer(state) == traj.target
        assert task.check_answer(p, task.answer(state))


@pytest.mark.parametrize("seed,size", [(s, n) for s in range(4) for n in (2, 4, 10)])
def test_distractors_change_only_the_input(seed, size):
    task = LogicTask()
    clean, noisy = task.sample(seed, size, 10), task.sample(seed, size, 10, distractors=4)
    for a, b in zip(clean, noisy):
        assert (a.chain, a.question, a.answer) == (b.chain, b.question, b.answer)
        assert [f for f in b.facts if f in a.facts] == list(a.facts)  # the real facts keep their order
        extra = [f for f in b.facts if f not in a.facts]
        assert len(extra) == 4 and not set("".join(extra).replace(">", "")) & set(a.chain)  # disjoint letters
        assert [s.action for s in task.expert(a).steps] == [s.action for s in task.expert(b).steps]
        assert task.expert(a).input != task.expert(b).input


def test_rendering_by_hand():
    task = LogicTask()
    p = LogicProblem(chain=tuple("cfadb"), question=("a", "f"), facts=("f>a", "c>f", "a>d", "d>b"))
    traj = task.expert(p)
    assert traj.input == "f>a,c>f,a>d,d>b;a?f" and traj.target == "<"
    assert [s.action for s in traj.steps] == ["a>d:a>d", "d>b:a>b", "f>a:a<f"]
    assert [s.state for s in traj.steps] == ["a=a,a>d", "a>d,d>b", "a=a,f>a"]
    assert [s.action for s in task.state_trajectory(p).steps] == ["a>d", "a>b", "a<f"]
    # x at the bottom of the chain: the walk starts upward at once
    q = LogicProblem(chain=tuple("cfadb"), question=("b", "a"), facts=p.facts)
    assert [s.action for s in task.expert(q).steps] == ["d>b:b<d", "a>d:b<a"] and task.expert(q).target == "<"
    assert LogicTask.problem_of(Trajectory.from_dict(traj.to_dict())) == p


@pytest.mark.parametrize("action", ["", "a", "a>", "a>dd", "d>b", "a>a", "a>z", "a=d", "A>d", "__import__('os')"])
def test_execute_rejects_malformed_actions(action):
    task = LogicTask()
    p = LogicProblem(chain=tuple("cfadb"), question=("a", "f"), facts=("f>a", "c>f", "a>d", "d>b"))
    state = task.initial_state(p)
    assert task.execute(state, action) is None and not task.check_state_step(state, action)


def test_execute_applies_a_wrong_but_well_formed_action():
    task = LogicTask()
    p = LogicProblem(chain=tuple("cfadb"), question=("a", "f"), facts=("f>a", "c>f", "a>d", "d>b"))
    state = task.initial_state(p)
    assert not task.check_state_step(state, "a<f")
    jumped = task.execute(state, " a<f\n")  # a shortcut to the answer: applied, and judged wrong
    assert task.is_done(jumped) and task.answer(jumped) == "<"
    assert task.execute(state, "a>b") == task.execute(task.execute(state, "a>d"), "a>b")


@pytest.mark.parametrize("size", [2, 5, 10])
def test_sample_is_deterministic(size):
    task = LogicTask(distractors=2)
    first = task.sample(seed=5, size=size, count=30)
    assert first == task.sample(seed=5, size=size, count=30)
    assert first != task.sample(seed=6, size=size, count=30)
    assert all(p.size == size and len(set(p.chain)) == size for p in first)
    assert {p.answer for p in first} == {"<", ">"}


def test_train_test_split_and_sizes():
    task = LogicTask()
    train, test = task.train_test_split(seed=0, train_count=200, test_count=20)
    assert {p.size for p in train} == set(range(2, TRAIN_MAX_SIZE + 1))
    assert {p.size for p in test} == {2 * TRAIN_MAX_SIZE}
    assert train == task.train_test_split(seed=0, train_count=200, test_count=20)[0]
    with pytest.raises(ValueError, match="letters"):
        LogicTask(distractors=5).sample(0, 22, 1)
    with pytest.raises(ValueError, match="size"):
        task.sample(0, 1, 1)
    with pytest.raises(ValueError, match="distractors"):
        LogicTask(distractors=-1)


@pytest.mark.parametrize("mode", ["history", "state", "outcome"])
def test_trajectories_tokenize_with_the_char_tokenizer(char_tok, mode):
    task = LogicTask(distractors=2)
    p = task.sample(0, 6, 1)[0]
    traj = task.state_trajectory(p) if mode == "state" else task.expert(p)
    rows = tokenize(traj, char_tok, StepFormat(), mode)
    assert all(char_tok.unk_token_id not in r.input_ids for r in rows)
    steps = {"history": rows[0].num_steps, "state": len(rows), "outcome": rows[0].num_steps}[mode]
    assert steps == (0 if mode == "outcome" else len(traj.steps))
