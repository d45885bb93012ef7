"""evaluate-prm's report: which sections the data allows, hand-checked numbers, the seeded split on data
listed errors-first (as ProcessBench files are), and the trivial rows."""

from __future__ import annotations

import pytest

from procsup.data.trajectory import Step, Trajectory
from procsup.evaluation.prm_report import first_error_of, format_report, prm_report


def _traj(labels, meta=None, input="q"):
    return Trajectory(input, "", tuple(Step(f"s{i}", label=lab) for i, lab in enumerate(labels)), meta or {})


def test_first_error_of():
    assert first_error_of(_traj([True, False, None])) == 1
    assert first_error_of(_traj([True, True])) == -1
    assert first_error_of(_traj([None, False])) is None  # unknown before the error
    assert first_error_of(_traj([True, True, True], {"first_error": 2})) == 2


def test_given_threshold_hand_computed():
    trajs = [_traj([True, False]), _traj([True, True]), _traj([False, None]), _traj([True, True])]
    scores = [[0.9, 0.2], [0.8, 0.3], [0.7, 0.1], [0.9, 0.9]]
    report = prm_report(trajs, scores, threshold=0.5, draws=5)
    pb = report["processbench"]
    # predictions at 0.5: 1, 1, 1, -1 against labels 1, -1, 0, -1: errors 1 of 2 right, correct 1 of 2
    assert pb["prm"]["error_acc"] == 0.5 and pb["prm"]["correct_acc"] == 0.5 and pb["prm"]["f1"] == 0.5
    assert pb["always_no_error"]["correct_acc"] == 1.0 and pb["always_no_error"]["f1"] == 0.0
    assert pb["always_first_step"]["error_acc"] == 0.5  # the sample whose first step is wrong
    steps = report["steps"]
    assert steps["n_steps"] == 7 and steps["prm"]["accuracy"] == pytest.approx(5 / 7)
    assert set(report["skipped"]) == {"prmbench", "best_of_n"}


def test_errors_first_data_is_split_at_random():
    """A naive half split of errors-first data would leave no error-free sample to choose a threshold on."""
    trajs = [_traj([True, False]) for _ in range(20)] + [_traj([True, True]) for _ in range(20)]
    scores = [[0.9, 0.1]] * 20 + [[0.9, 0.8]] * 20
    pb = prm_report(trajs, scores, seed=3, draws=10)["processbench"]
    assert pb["tested"] == 20 and pb["threshold_chosen_on"] == 20 and pb["prm"]["f1"] == 1.0
    assert 0.0 <= pb["random_scores"]["f1"]["mean"] <= pb["random_scores"]["f1"]["p90"] < 1.0
    again = prm_report(trajs, scores, seed=3, draws=10)["processbench"]
    assert again == pb  # seeded


def test_prmbench_and_best_of_n_sections():
    meta = [{"classification": "circular", "correct": True, "answer": "1"},
            {"classification": "circular", "correct": False, "answer": "2"},
            {"classification": "confidence", "correct": True, "answer": "1"},
            {"classification": "confidence", "correct": False, "answer": "3"}]
    trajs = [_traj([True, True], meta[0], "p"), _traj([True, False], meta[1], "p"),
             _traj([True, True], meta[2], "r"), _traj([False, True], meta[3], "r")]
    scores = [[0.9, 0.8], [0.9, 0.2], [0.7, 0.6], [0.3, 0.9]]
    report = prm_report(trajs, scores, threshold=0.5, draws=5)
    assert report["prmbench"]["prm"]["overall"]["prmscore"] == 1.0  # every step on the right side of 0.5
    assert report["prmbench"]["always_correct"]["overall"]["tp"] == 6
    bo = report["best_of_n"]
    assert bo["problems"] == 2 and bo["prm"]["min"] == 1.0 and bo["random_candidate"] == 0.5 and bo["pass_at_n"] == 1.0
    text = format_report(report)
    assert "PRMBench" in text and "Best-of-N" in text and max(map(len, text.splitlines())) <= 80


def test_mismatched_scores_are_an_error():
    with pytest.raises(ValueError, match="2 scores for 1 steps"):
        prm_report([_traj([True])], [[0.1, 0.2]])
