"""The addition task: expert traces are right, the checkers find exactly the wrong step, the state-mode
executor reproduces the expert, problems are what they claim; and rollout metrics on hand-made rollouts."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.evaluation.rollout import Rollout, summarize
from procsup.tasks.addition import END, AdditionProblem, AdditionTask

HISTORY_STEP = re.compile(r"^([a-z]):([0-9])\+([0-9])\+([01])=([0-9]),([01])>([a-z$])$")

problems = st.builds(
    lambda seed, da, db, heavy: AdditionTask(carry_heavy=heavy).make(random.Random(seed), da, db),
    st.integers(0, 2**32), st.integers(1, 20), st.integers(1, 20), st.sampled_from([0.0, 1.0]),
)


def corrupt(action: str) -> str:
    """Change the sum digit of a history step (``h:x+y+c=D,k>n``)."""
    i = action.index("=") + 1
    return action[:i] + str((int(action[i]) + 1) % 10) + action[i + 1 :]


@settings(max_examples=150, deadline=None)
@given(p=problems)
def test_expert_trace_is_the_column_algorithm(p):
    task = AdditionTask()
    traj = task.expert(p)
    assert traj.target == str(p.a + p.b) and task.check_answer(p, traj.target)
    assert len(traj.steps) == p.columns == max(len(str(p.a)), len(str(p.b)))
    # Re-derive the sum from the steps alone: each step reads its column's digits and the carry in.
    digits, carry = "", 0
    for t, step in enumerate(traj.steps):
        h, x, y, c, d, k, nxt = HISTORY_STEP.match(step.action).groups()
        assert h == p.hints[t] and nxt == (p.hints[t + 1] if t + 1 < p.columns else END)
        assert (int(x), int(y)) == p.column(t) and int(c) == carry
        assert int(x) + int(y) + int(c) == int(d) + 10 * int(k)
        assert step.state == f"{x}+{y}+{c}"
        digits, carry = d + digits, int(k)
    assert int(("1" if carry else "") + digits) == p.a + p.b
    assert p.hints and len(set(p.hints)) == len(p.hints)  # distinct column letters


@settings(max_examples=100, deadline=None)
@given(p=problems)
def test_check_steps_finds_exactly_the_corrupted_step(p):
    task = AdditionTask()
    actions = [s.action for s in task.expert(p).steps]
    assert task.check_steps(p, actions) == [True] * len(actions)
    for t in range(len(actions)):
        bad = actions[:t] + [corrupt(actions[t])] + actions[t + 1 :]
        assert task.check_steps(p, bad) == [i != t for i in range(len(actions))]
    assert task.check_steps(p, actions[:-1]) == [True] * (len(actions) - 1) + [False]  # a missing step is wrong
    assert not task.check_answer(p, str(p.a + p.b + 1)) and not task.check_answer(p, None)
    assert task.check_answer(p, f" {p.a + p.b}\n")


@settings(max_examples=100, deadline=None)
@given(p=problems)
def test_executor_driven_by_expert_state_actions(p):
    task = AdditionTask()
    traj = task.state_trajectory(p)
    state = task.initial_state(p)
    for step in traj.steps:
        assert not task.is_done(state)
        assert task.render_state(state) == step.state
        assert re.fullmatch(r"[0-9],[01]", step.action)
        assert task.check_state_step(state, step.action)
        state = task.execute(state, step.action)
        assert state is not None
    assert task.is_done(state)
    assert task.answer(state) == traj.target == str(p.a + p.b)


@pytest.mark.parametrize("action", ["", "5", "12,0", "5,2", "a,1", "5;1", "5,1,0", "5 ,1", "-1,0"])
def test_execute_rejects_malformed_actions(action):
    task = AdditionTask()
    assert task.execute(task.initial_state(AdditionProblem(15, 7, ("a", "b"))), action) is None


def test_execute_by_hand():
    task = AdditionTask()
    p = AdditionProblem(95, 7, ("q", "z"))
    s = task.execute(task.initial_state(p), " 2,1\n")  # surrounding whitespace of a generation is ignored
    assert (s.t, s.carry, s.digits) == (1, 1, "2")
    assert task.render_state(s) == "9+0+1"
    s = task.execute(s, "0,1")
    assert task.is_done(s) and task.answer(s) == "102"


def _carries(p: AdditionProblem) -> list[bool]:
    """Does column t carry out, for each column both operands have."""
    out, carry = [], 0
    for t in range(p.columns):
        x, y = p.column(t)
        carry = (x + y + carry) // 10
        out.append(bool(carry))
    return out[: min(len(str(p.a)), len(str(p.b)))]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), da=st.integers(1, 20), db=st.integers(1, 20))
def test_carry_heavy_carries_in_every_overlapping_column(seed, da, db):
    p = AdditionTask(carry_heavy=1.0).make(random.Random(seed), da, db)
    assert (len(str(p.a)), len(str(p.b))) == (da, db)
    assert all(_carries(p)), (p.a, p.b)


@pytest.mark.parametrize("heavy", [0.0, 1.0])
@pytest.mark.parametrize("size", [1, 3, 20])
def test_sample_is_deterministic_with_n_digit_operands(size, heavy):
    task = AdditionTask(carry_heavy=heavy)
    first = task.sample(seed=5, size=size, count=50)
    assert first == task.sample(seed=5, size=size, count=50)
    assert first != task.sample(seed=6, size=size, count=50)
    assert all(len(str(p.a)) == len(str(p.b)) == size for p in first)
    assert all(len(p.hints) == size for p in first)


def test_carry_heavy_range():
    with pytest.raises(ValueError, match="carry_heavy"):
        AdditionTask(carry_heavy=1.5)


# --- rollout metrics on hand-made rollouts ----------------------------------------------------------


def test_summarize_by_hand():
    rollouts = [
        Rollout(None, ["s1", "s2"], "5", True, [True, True]),  # right answer, valid trace
        Rollout(None, ["s1", "x"], "5", True, [True, False]),  # right answer, a wrong step: the shortcut
        Rollout(None, ["x"], "4", False, [False, False]),  # wrong answer, wrong trace
        Rollout(None, [], None, False, []),  # no steps, no answer: not a valid trace
        Rollout(None, [], "5", True, []),  # right answer with no trace at all: wrong steps too
    ]
    assert summarize(rollouts) == {
        "exact_match": 3 / 5,
        "trace_valid": 1 / 5,
        "right_answer_wrong_steps": 2 / 5,
        "n": 5,
    }


def test_summarize_outcome_only_has_no_trace_metrics():
    rollouts = [Rollout(None, [], "5", True, None), Rollout(None, [], "3", False, None)]
    assert summarize(rollouts) == {"exact_match": 0.5, "trace_valid": None, "right_answer_wrong_steps": None, "n": 2}


def test_without_index_hints_the_same_problems_have_letterless_steps():
    plain, hinted = AdditionTask(index_hints=False), AdditionTask()
    p, q = plain.sample(3, 3, 5), hinted.sample(3, 3, 5)
    assert [(x.a, x.b) for x in p] == [(x.a, x.b) for x in q]  # the same seed gives the same operands
    e = plain.expert(AdditionProblem(798, 713))
    assert e.input == "798+713 | 8,3 9,1 7,7"
    assert [s.action for s in e.steps] == ["8+3+0=1,1", "9+1+1=1,1", "7+7+1=5,1"] and e.target == "1511"
    assert plain.check_steps(AdditionProblem(798, 713), ["8+3+0=1,1", "9+1+1=2,1", "7+7+1=5,1"]) == [True, False, True]
    assert plain.problem_of(e) == AdditionProblem(798, 713)
    with pytest.raises(ValueError, match="index_hints"):
        AdditionTask(shuffle_columns=True, index_hints=False)
