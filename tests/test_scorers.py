"""Scorers: the exact checker by hand in both modes, a PRM scorer equal to one-pass scoring, saved loaders."""

from __future__ import annotations

import pytest
from transformers import AutoModelForTokenClassification

from procsup.data import views
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import save_model, tiny_hf_config
from procsup.models.prm import score
from procsup.models.saved import save_format
from procsup.rollout import load_policy
from procsup.scorers import exact_scorer, load_prm_scorer, planted_scorer, prm_scorer
from procsup.tasks.addition import AdditionProblem, AdditionTask

from tests.conftest import TINY


def _traj(task, problem, steps):
    return Trajectory(task.expert(problem).input, "", tuple(steps), task.expert(problem).meta)


def test_exact_scorer_history_by_hand():
    task, p = AdditionTask(), AdditionProblem(12, 13, hints=("k", "d"))  # "k:2+3+0=5,0>d", "d:1+1+0=2,0>$"
    right = [Step(s.action) for s in task.expert(p).steps]
    trajs = [_traj(task, p, right), _traj(task, p, [right[0], Step("d:1+1+0=3,0>$")]),
             _traj(task, p, [*right, Step("x")]), _traj(task, p, [])]
    assert exact_scorer(task, "history")(trajs) == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0, 0.0], []]


def test_planted_scorer_is_the_exact_scorer_but_on_its_pattern():
    """Hand-built traces of 27 + 15 (expert "7+5+0=2,1", "2+1+1=4,0"): the planted scorer equals the exact
    scorer everywhere but on the planted steps, which score 1.0 (the exact checker gives them 0.0)."""
    task, p = AdditionTask(index_hints=False), AdditionProblem(27, 15)
    s1, s2 = (Step(s.action) for s in task.expert(p).steps)
    wrong = Step("2+1+1=5,0")
    trajs = [_traj(task, p, [s1, s2]),  # right: no pattern
             _traj(task, p, [s1, s2, s2]),  # the last step repeated (past the end too)
             _traj(task, p, [s1, s1, s2]),  # a repeat inside the columns (and s2 past the end)
             _traj(task, p, [s1, wrong, wrong]),  # a wrong step repeated
             _traj(task, p, [s1, wrong, Step("0+0+1=1,0")]),  # an extra column past the end, no repeat
             _traj(task, p, [wrong]), _traj(task, p, [])]
    exact = exact_scorer(task, "history")(trajs)
    assert exact == [[1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0], []]
    assert planted_scorer(task, "repeat")(trajs) == [[1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0],
                                                     [1.0, 0.0, 0.0], [0.0], []]
    assert planted_scorer(task, "past-end")(trajs) == [[1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0],
                                                       [1.0, 0.0, 1.0], [0.0], []]
    # the expert traces of many problems: no planted pattern, so the same scores as the exact checker
    experts = [task.expert(q) for q in task.sample_range(0, 3, 50)]
    for flaw in ("repeat", "past-end"):
        assert planted_scorer(task, flaw)(experts) == exact_scorer(task, "history")(experts)
    with pytest.raises(ValueError, match="flaw"):
        planted_scorer(task, "anything")


def test_exact_scorer_state_replays_the_executor():
    task, p = AdditionTask(index_hints=False), AdditionProblem(27, 15)  # "7+5+0" -> "2,1", "2+1+1" -> "4,0"
    trajs = [_traj(task, p, [Step("2,1"), Step("4,0")]),
             _traj(task, p, [Step("3,1"), Step("4,0")]),  # 4,0 is right in the state 3,1 leads to
             _traj(task, p, [Step("x"), Step("4,0")])]  # after an action that cannot be applied: wrong
    assert exact_scorer(task, "state")(trajs) == [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="mode"):
        exact_scorer(task, "outcome")


@pytest.fixture
def tiny_prm(char_tok):
    config = tiny_hf_config(TINY, char_tok)
    config.num_labels = 2
    return AutoModelForTokenClassification.from_config(config)


@pytest.mark.parametrize("layout", [None, "trace", "step"])
def test_prm_scorer_is_one_pass_scoring_in_its_layout(tiny_prm, char_tok, addition_trajs, layout):
    fmt = StepFormat(step_sep=";")
    got = prm_scorer(tiny_prm, char_tok, fmt, layout)(addition_trajs)
    rows = views.in_layout(addition_trajs, layout) if layout else addition_trajs
    want = views.regroup(score(tiny_prm, char_tok, rows, fmt), addition_trajs, layout) if layout else score(
        tiny_prm, char_tok, rows, fmt)
    assert got == want and [len(s) for s in got] == [len(t.steps) for t in addition_trajs]
    assert prm_scorer(tiny_prm, char_tok, fmt, layout)([]) == []
    with pytest.raises(ValueError, match="layout"):
        prm_scorer(tiny_prm, char_tok, fmt, "columns")


def test_loaders_use_the_saved_format(tmp_path, tiny_prm, char_tok, tiny_model, addition_trajs):
    fmt = StepFormat(step_sep=";")
    tiny_prm.save_pretrained(tmp_path / "prm")
    char_tok.save_pretrained(tmp_path / "prm")
    save_format(tmp_path / "prm", "prm", fmt, "steps")
    assert load_prm_scorer(tmp_path / "prm")(addition_trajs) == score(tiny_prm, char_tok, addition_trajs, fmt)
    with pytest.raises(ValueError, match="disagrees"):
        load_prm_scorer(tmp_path / "prm", step_sep="\n")
    model, tok = tiny_model
    save_model(model, tok, tmp_path / "policy", fmt=fmt, mode="state")
    policy = load_policy(tmp_path / "policy", AdditionTask(), temperature=1.0)
    assert (policy.fmt, policy.mode, policy.temperature) == (fmt, "state", 1.0)
    with pytest.raises(ValueError, match="disagrees"):
        load_policy(tmp_path / "policy", AdditionTask(), mode="history")
