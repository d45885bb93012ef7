"""The addition task: expert traces are right, the checkers find exactly the wrong step, the state-mode
executor reproduces the expert, problems are what they claim; and rollout metrics on hand-made rollouts."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procsup.data.trajectory import Step, Trajectory
from procsup.evaluation.metrics import summarize
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


def _rollout(task, problem, steps, answer):
    """A rollout as procsup.rollout.complete writes it: the problem's meta, the answer and its verdict."""
    meta = {**task.expert(problem).meta, "answer": answer, "correct": task.check_answer(problem, answer)}
    return Trajectory(task.expert(problem).input, answer or "", tuple(Step(a) for a in steps), meta)


def test_summarize_by_hand():
    task, p = AdditionTask(), AdditionProblem(12, 13, hints=("k", "d"))  # 25: "k:2+3+0=5,0>d", "d:1+1+0=2,0>$"
    right = [s.action for s in task.expert(p).steps]
    rollouts = [
        _rollout(task, p, right, "25"),  # right answer, valid trace
        _rollout(task, p, [right[0], "x"], "25"),  # right answer, a wrong step: the shortcut
        _rollout(task, p, ["x"], "24"),  # wrong answer, wrong (and short) trace
        _rollout(task, p, [], None),  # no steps, no answer: not a valid trace
        _rollout(task, p, [], "25"),  # right answer with no trace at all: wrong steps too
    ]
    assert summarize(task, "history", rollouts) == {
        "exact_match": 3 / 5,
        "trace_valid": 1 / 5,
        "right_answer_wrong_steps": 2 / 5,
        "n": 5,
    }


def test_summarize_state_mode_needs_a_finished_episode():
    task, p = AdditionTask(index_hints=False), AdditionProblem(27, 15)  # "7+5+0" -> "2,1", "2+1+1" -> "4,0"
    steps = [Step("2,1", state="7+5+0"), Step("4,0", state="2+1+1")]
    meta = {**task.expert(p).meta}
    done = Trajectory("", "42", tuple(steps), {**meta, "answer": "42", "correct": True})
    cut = Trajectory("", "", tuple(steps[:1]), {**meta, "answer": None, "correct": False})  # right so far, unfinished
    assert summarize(task, "state", [done, cut])["trace_valid"] == 0.5


def test_summarize_outcome_only_has_no_trace_metrics():
    task, p = AdditionTask(), AdditionProblem(2, 3)
    rollouts = [_rollout(task, p, [], "5"), _rollout(task, p, [], "3")]
    assert summarize(task, "outcome", rollouts) == {"exact_match": 0.5, "trace_valid": None,
                                                    "right_answer_wrong_steps": None, "n": 2}


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
