"""benchmarks/real_model_bon.py: answers compared as numbers, what the PRM reads of a candidate, and the table's
rows computed by hand on a small example (no model: the benchmark run itself is not tested here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from procsup.data.trajectory import Trajectory

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bon():
    spec = importlib.util.spec_from_file_location("real_model_bon", BENCH / "real_model_bon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text, expected", [
    ("18.", "18"), ("$1,080.", "1080"), ("18.0 dollars", "18"), ("0.50", "1/2"), ("2 * 5 = 10 bolts.", "10"),
    ("-3", "-3"), ("none", None), (None, None), ("", None),
])
def test_number_is_the_last_number_canonical(bon, text, expected):
    assert bon.number(text) == expected


def test_gsm8k_task_compares_numbers(bon):
    task = bon.GSM8KTask([Trajectory("q1", "1080", ()), Trajectory("q2", "7", ())])
    assert task.check_answer("q1", "$1,080.")
    assert task.check_answer("q2", "7 apples.")
    assert not task.check_answer("q2", "17.")
    assert not task.check_answer("q2", None)
    assert not task.check_answer("q2", "seven")


def test_scoring_steps_drop_blank_lines_and_end_with_the_answer_line(bon):
    assert bon.scoring_steps({"steps": ["a = 1", "  ", "b = 2"], "answer": "3."}) == ["a = 1", "b = 2", "The answer is 3."]
    assert bon.scoring_steps({"steps": ["a = 1"], "answer": None}) == ["a = 1"]
    assert bon.scoring_steps({"steps": [""], "answer": None}) == []


def test_metrics_by_hand(bon):
    # problem 0: candidates right, wrong, wrong, right; answers 5, 3, 3, 5; the PRM's min prefers candidate 3
    # problem 1: wrong, wrong(no answer), right, wrong; answers 1, None, 2, 1; the PRM prefers candidate 1,
    #            which has no answer: among answered ones it prefers candidate 2 (right)
    scores = [[[0.2, 0.9], [0.5], [0.6, 0.4], [0.8]], [[0.1], [0.99], [0.7, 0.9], [0.3]]]
    correct = [[True, False, False, True], [False, False, True, False]]
    answers = [["5", "3", "3", "5"], ["1", None, "2", "1"]]
    m = bon.metrics(scores, correct, answers, 4, "min")
    assert m["one_sample"] == 0.5  # problem 0's first candidate only
    assert m["random_pick"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["majority_vote"] == 0.5  # 5 vs 3 tie -> 5 (first seen, right); problem 1: "1" wins (wrong)
    assert m["prm_best_of_n"] == 1.0  # min scores 0.2, 0.5, 0.4, 0.8 -> cand 3 right; answered: 0.1, 0.7, 0.3 -> cand 2
    assert m["prm_best_of_n_all_candidates"] == 0.5  # problem 1 picks the unanswered candidate 1
    assert m["pass_at_n"] == 1.0
    m2 = bon.metrics(scores, correct, answers, 2, "last")  # first two candidates: last scores 0.9, 0.5 / 0.1, 0.99
    assert m2["prm_best_of_n"] == 0.5 and m2["pass_at_n"] == 0.5 and m2["random_pick"] == pytest.approx(0.25)


def test_ranking_by_hand(bon):
    scores = [[[0.2, 0.9], [0.5], [0.6, 0.4], [0.8]], [[0.1], [0.99], [0.7, 0.9], [0.3]]]
    correct = [[True, False, False, True], [False, False, True, False]]
    r = bon.ranking(scores, correct, "min")  # mins 0.2 0.5 0.4 0.8 / 0.1 0.99 0.7 0.3
    assert r["problems_with_both"] == 2
    assert r["within_problem_auroc"] == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert r["right_candidates"] == 3
    assert r["mean_score_right"] == pytest.approx((0.2 + 0.8 + 0.7) / 3)
    assert r["mean_score_wrong"] == pytest.approx((0.5 + 0.4 + 0.1 + 0.99 + 0.3) / 5)
