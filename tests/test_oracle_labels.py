"""Oracle step labels: the task's checker labels hand-made, corrupted and sampled traces."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from procsup.annotation.oracle import inject_corruptions, label_traces, oracle_label, orm_labels
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory
from procsup.rollout import LMPolicy
from procsup.tasks.addition import AdditionProblem, AdditionTask
from procsup.tasks.base import corrupt_digit

TASK = AdditionTask()
PROBLEM = AdditionProblem(57, 68, hints=("k", "d"))  # 7+8=15 -> "5,1"; 5+6+1=12 -> "2,1"; answer 125
RIGHT = ["k:7+8+0=5,1>d", "d:5+6+1=2,1>$"]


def _trace(actions, answer):
    return Trajectory("57+68 | k:7,8 d:5,6", answer or "", tuple(Step(a) for a in actions), {"answer": answer})


def test_expert_steps_are_the_right_steps():
    assert [s.action for s in TASK.expert(PROBLEM).steps] == RIGHT


@pytest.mark.parametrize(
    "actions, answer, labels, missing, correct",
    [
        (RIGHT, "125", [True, True], 0, True),
        (["k:7+8+0=5,0>d", RIGHT[1]], "125", [False, True], 0, True),  # right answer, wrong step
        (RIGHT[:1], None, [True], 1, False),  # stopped short: one missing step, no label to carry it
        ([*RIGHT, "x:0+0+1=1,0>$"], "1125", [True, True, False], 0, False),  # a step beyond the expert's is wrong
        ([], None, [], 2, False),
    ],
)
def test_oracle_label_hand_made_traces(actions, answer, labels, missing, correct):
    out = oracle_label(TASK, PROBLEM, _trace(actions, answer))
    assert out.labels == labels
    assert all(type(lab) is bool for lab in out.labels)
    assert out.meta["missing_steps"] == missing
    assert out.meta["correct"] is correct
    assert [s.action for s in out.steps] == actions


def test_oracle_label_without_answer_meta_checks_the_target():
    traj = Trajectory("x", "125", tuple(Step(a) for a in RIGHT))
    assert oracle_label(TASK, PROBLEM, traj).meta["correct"] is True


def test_addition_corrupts_one_result_digit_only():
    rng = random.Random(0)
    for _ in range(50):
        out = TASK.corrupt(RIGHT[0], rng)
        assert out != RIGHT[0]
        assert out[: out.index("=")] == "k:7+8+0" and out.endswith(">d")
        assert sum(a != b for a, b in zip(out, RIGHT[0])) == 1


def test_corrupt_digit_without_digits_is_unchanged():
    assert corrupt_digit("U", random.Random(0)) == "U"


@pytest.mark.parametrize("rate, expected", [(0.0, [True, True]), (1.0, [False, False])])
def test_inject_corruptions_on_addition(rate, expected):
    expert = TASK.expert(PROBLEM)
    out = inject_corruptions(TASK, PROBLEM, expert, random.Random(1), rate)
    assert out.labels == expected
    assert out.meta["corrupted"] == ([] if rate == 0 else [0, 1])
    assert out.labels == TASK.check_steps(PROBLEM, [s.action for s in out.steps])


class EvenTask:
    """A fake task whose steps are numbers and whose checker accepts any even one: many corruptions stay valid."""

    def corrupt(self, action, rng):
        return corrupt_digit(action, rng)

    def expert(self, problem):
        return Trajectory("q", "0", (Step("12"), Step("34"), Step("56")))

    def check_steps(self, problem, actions):
        return [a.isdigit() and int(a) % 2 == 0 for a in actions] + [False] * (3 - len(actions))

    def check_answer(self, problem, answer):
        return answer == "0"


def test_inject_corruptions_labels_are_the_checkers_so_valid_corruptions_stay_true():
    task = EvenTask()
    seen_valid_corruption = False
    for seed in range(30):
        out = inject_corruptions(task, None, task.expert(None), random.Random(seed), 0.7)
        actions = [s.action for s in out.steps]
        assert out.labels == task.check_steps(None, actions)
        seen_valid_corruption |= any(out.labels[t] for t in out.meta["corrupted"])
    assert seen_valid_corruption  # a changed tens digit keeps the number even


def test_inject_corruptions_rejects_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        inject_corruptions(TASK, PROBLEM, TASK.expert(PROBLEM), random.Random(0), 1.5)


def test_label_traces_history_labels_every_step_and_appends_the_answer(tiny_model):
    model, tok = tiny_model
    problems = TASK.sample(seed=0, size=2, count=2)
    policy = LMPolicy(model, tok, TASK, StepFormat(), temperature=1.0, max_new_tokens=10)
    a = label_traces(policy, problems, 3, seed=7)
    again = label_traces(policy, problems, 3, seed=7)
    assert [[t.to_dict() for t in ts] for ts in a] == [[t.to_dict() for t in ts] for ts in again]
    assert [len(ts) for ts in a] == [3, 3]
    for p, ts in zip(problems, a):
        for t in ts:
            actions = [s.action for s in t.steps[:-1]]
            assert t.labels[:-1] == TASK.check_steps(p, actions)[: len(actions)]
            assert t.steps[-1].action == "A:" + (t.meta["answer"] or "") and t.labels[-1] is t.meta["correct"]
    with pytest.raises(ValueError, match="corrupt_rate"):
        label_traces(policy, problems, 1, seed=0, corrupt_rate=0.5)


@dataclass
class ScriptedStates(LMPolicy):
    """Each rendered state gets the next action of ``script[state]``."""

    script: dict = field(default_factory=dict)

    def propose(self, states, n=1):
        queues = self.__dict__.setdefault("_queues", {k: iter(v) for k, v in self.script.items()})
        return [[next(queues[s]) for _ in range(n)] for s in states]


class SwapTask(AdditionTask):
    """Addition whose corruption is a fixed swap table: "2,1" -> "3,1", "4,0" -> "5,0"."""

    def corrupt(self, action, rng):
        return {"2,1": "3,1", "4,0": "5,0"}.get(action, action)


def test_label_traces_state_mode_hand_traced(tiny_model):
    # 27 + 15: column 0 is 7+5+0 (right: "2,1"), column 1 is 2+1+carry; answer 42
    # sample 1: right, right -> 42; sample 2: wrong sum digit, then right for its state -> 43 (wrong);
    # sample 3: an action the executor cannot apply -> no answer, the trace stops there
    model, tok = tiny_model
    task = AdditionTask(index_hints=False)
    policy = ScriptedStates(model, tok, task, StepFormat(), mode="state", temperature=1.0,
                            script={"7+5+0": ["2,1", "3,1", "x"], "2+1+1": ["4,0", "4,0"]})
    (ts,) = label_traces(policy, [AdditionProblem(27, 15)], 3, seed=0)
    assert [[(s.state, s.action) for s in t.steps] for t in ts] == [
        [("7+5+0", "2,1"), ("2+1+1", "4,0")], [("7+5+0", "3,1"), ("2+1+1", "4,0")], [("7+5+0", "x")]]
    assert [t.labels for t in ts] == [[True, True], [False, True], [False]]
    assert [(t.meta["answer"], t.meta["correct"]) for t in ts] == [("42", True), ("43", False), (None, False)]
    assert all(t.input == task.expert(AdditionProblem(27, 15)).input == "27+15 | 7,5 2,1" for t in ts)


def test_label_traces_injects_corruptions_before_the_checker_and_the_executor(tiny_model):
    # 27 + 15 (answer 42). Sample 1 writes "x" (not executable: stops); sample 2 writes the right actions,
    # each corrupted: "2,1" -> "3,1" in round 0, then in the state that leads to, "4,0" -> "5,0"
    model, tok = tiny_model
    policy = ScriptedStates(model, tok, SwapTask(index_hints=False), StepFormat(), mode="state", temperature=1.0,
                            script={"7+5+0": ["x", "2,1"], "2+1+1": ["4,0"]})
    (ts,) = label_traces(policy, [AdditionProblem(27, 15)], 2, seed=0, corrupt_rate=1.0)
    assert [[(s.state, s.action) for s in t.steps] for t in ts] == [[("7+5+0", "x")], [("7+5+0", "3,1"), ("2+1+1", "5,0")]]
    assert [t.labels for t in ts] == [[False], [False, False]]
    assert [t.meta["corrupted"] for t in ts] == [[], [0, 1]]  # "x" was left as it was: not a corruption
    assert [(t.meta["answer"], t.meta["correct"]) for t in ts] == [(None, False), ("53", False)]
    with pytest.raises(ValueError, match="corrupt_rate"):
        label_traces(policy, [AdditionProblem(27, 15)], 1, seed=0, corrupt_rate=1.5)


def test_orm_labels_keep_only_the_outcome_on_the_last_step():
    traj = Trajectory("x", "1", (Step("a", label=True), Step("b", label=False)), {"correct": True})
    assert orm_labels(traj).labels == [None, True]
