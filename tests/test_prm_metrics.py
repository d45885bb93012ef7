"""PRM metrics against numbers worked out by hand (in the comments), plus invariants checked
against brute force: the fast threshold search equals first_error + processbench_scores, the
rank-based AUROC equals the pairwise definition, and PRMBench's F1s equal the official formula."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from procsup.evaluation.prm_metrics import (
    aggregate,
    best_of_n,
    best_of_n_curve,
    choose_threshold,
    first_error,
    majority_vote,
    prmbench_predictions,
    prmbench_scores,
    processbench_scores,
    step_accuracy,
    step_auroc,
    weighted_majority_vote,
)

# ---------------------------------------------------------------------------------------------
# aggregate, first_error


@pytest.mark.parametrize(
    "how, expected",
    [("last", 0.8), ("min", 0.5), ("product", 0.9 * 0.5 * 0.8), ("mean", (0.9 + 0.5 + 0.8) / 3)],
)
def test_aggregate(how, expected):
    assert aggregate([0.9, 0.5, 0.8], how) == pytest.approx(expected)


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "min")
    with pytest.raises(ValueError, match="how must be one of"):
        aggregate([0.5], "max")
    with pytest.raises(ValueError, match=r"step_scores\[1\] must be finite"):
        aggregate([0.5, math.nan], "mean")


@pytest.mark.parametrize("threshold, expected", [(0.95, 0), (0.5, 1), (0.4, 2), (0.1, -1)])
def test_first_error(threshold, expected):
    # 0.4 < 0.4 is false: a score equal to the threshold passes.
    assert first_error([0.9, 0.4, 0.2], threshold) == expected


def test_numpy_scalars_are_numbers():
    np = pytest.importorskip("numpy")
    scores = np.array([0.9, 0.4, 0.2], dtype=np.float32)
    assert first_error(list(scores), 0.5) == 1
    assert processbench_scores(list(np.array([1, -1])), [1, -1])["f1"] == 1.0
    assert step_auroc(list(scores), list(np.array([1, 0, 0]))) == 1.0


def test_first_error_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        first_error([], 0.5)


# ---------------------------------------------------------------------------------------------
# ProcessBench

LABELS = [2, 0, 1, 3, -1, -1, -1]  # 4 erroneous samples, 3 error-free


def test_processbench_always_no_error():
    out = processbench_scores([-1] * len(LABELS), LABELS)
    assert out == {"error_acc": 0.0, "correct_acc": 1.0, "f1": 0.0, "n_error": 4, "n_correct": 3}


def test_processbench_oracle():
    out = processbench_scores(LABELS, LABELS)
    assert (out["error_acc"], out["correct_acc"], out["f1"]) == (1.0, 1.0, 1.0)


def test_processbench_mixed():
    # erroneous: 2->2 ok, 0->1 no, 1->-1 no, 3->3 ok: 2/4.  error-free: -1 ok, 0 no, -1 ok: 2/3.
    # F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = (2/3) / (7/6) = 4/7.
    out = processbench_scores([2, 1, -1, 3, -1, 0, -1], LABELS)
    assert out["error_acc"] == 0.5
    assert out["correct_acc"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(4 / 7)


def test_processbench_rejects_bad_input():
    with pytest.raises(ValueError, match="predictions has 2 items but labels has 3"):
        processbench_scores([0, -1], [0, -1, 1])
    with pytest.raises(ValueError, match="empty"):
        processbench_scores([], [])
    with pytest.raises(ValueError, match="no error-free"):
        processbench_scores([0, 1], [0, 1])
    with pytest.raises(ValueError, match="no erroneous"):
        processbench_scores([-1], [-1])
    with pytest.raises(ValueError, match=r"labels\[0\] must be an int >= -1"):
        processbench_scores([0, -1], [-2, -1])
    with pytest.raises(ValueError, match=r"predictions\[0\] must be an int"):
        processbench_scores([True, -1], [0, -1])


# Calibration split. A sample is predicted right for thresholds t in:
#   A label 1: 0.3 < t <= 0.9     B label -1: t <= 0.7     C label -1: t <= 0.6     D label 0: 0.2 < t
# Default grid: 0.2, midpoints 0.25 0.45 0.65 0.75 0.85, inf. F1 by t:
#   0.2: errors 0/2 -> 0.   0.25: D only, 1/2; B, C 2/2 -> 2/3.   0.45: all four -> 1.   0.65: C fails -> 2/3.
CALIB_SCORES = [[0.9, 0.3, 0.8], [0.8, 0.7], [0.6, 0.9], [0.2, 0.9]]
CALIB_LABELS = [1, -1, -1, 0]


def test_choose_threshold_default_grid():
    assert choose_threshold(CALIB_SCORES, CALIB_LABELS) == (pytest.approx(0.45), 1.0)


def test_choose_threshold_explicit_grid_and_ties():
    # 0.5 and 0.55 both give F1 1 (0.5, 0.55 are in every interval); ties go to the smaller one.
    assert choose_threshold(CALIB_SCORES, CALIB_LABELS, grid=[0.1, 0.55, 0.5, 0.7]) == (0.5, 1.0)
    # Only 0.25 and 0.65 on offer: both F1 2/3, the smaller wins.
    t, f1 = choose_threshold(CALIB_SCORES, CALIB_LABELS, grid=[0.65, 0.25])
    assert (t, f1) == (0.25, pytest.approx(2 / 3))


def test_chosen_threshold_transfers_to_a_test_split():
    t, _ = choose_threshold(CALIB_SCORES, CALIB_LABELS)
    test_scores = [[0.95, 0.5, 0.4], [0.7, 0.35], [0.5, 0.6]]
    test_labels = [2, 1, -1]
    # t = 0.45: [0.95, 0.5, 0.4] -> 2 ok; [0.7, 0.35] -> 1 ok; [0.5, 0.6] -> -1 ok.
    predictions = [first_error(s, t) for s in test_scores]
    assert predictions == [2, 1, -1]
    assert processbench_scores(predictions, test_labels)["f1"] == 1.0


def test_choose_threshold_matches_brute_force():
    rng = random.Random(0)
    for _ in range(30):
        scores = [[rng.choice([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]) for _ in range(rng.randint(1, 5))] for _ in range(12)]
        labels = [rng.randint(-1, len(s) - 1) for s in scores]
        labels[0], labels[1] = -1, 0  # both kinds present
        for t in [0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, math.inf]:
            expected = processbench_scores([first_error(s, t) for s in scores], labels)["f1"]
            assert choose_threshold(scores, labels, grid=[t]) == (t, pytest.approx(expected))


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="step_scores_list has 1 items but labels has 2"):
        choose_threshold([[0.5]], [0, -1])
    with pytest.raises(ValueError, match=r"labels\[0\] must be -1 or a step index below 2"):
        choose_threshold([[0.5, 0.4], [0.3]], [2, -1])
    with pytest.raises(ValueError, match=r"step_scores_list\[1\] is empty"):
        choose_threshold([[0.5], []], [0, -1])
    with pytest.raises(ValueError, match="grid is empty"):
        choose_threshold([[0.5], [0.3]], [0, -1], grid=[])
    with pytest.raises(ValueError, match="no erroneous"):
        choose_threshold([[0.5], [0.3]], [-1, -1])


# ---------------------------------------------------------------------------------------------
# PRMBench


def test_prmbench_predictions_tie_is_an_error():
    # official rule: correct iff score > 0.5, so 0.5 itself is predicted wrong (unlike first_error)
    assert prmbench_predictions([0.5, 0.51, 0.2]) == [False, True, False]
    assert prmbench_predictions([0.5, 0.51, 0.2], threshold=0.1) == [True, True, True]


def test_prmbench_scores_hand_computed():
    labels = [[1, 0, 0, 1], [1, 1, 0], [1, 1]]
    preds = [[1, 1, 0, 0], [1, 1, 0], [1, 0]]
    out = prmbench_scores(preds, labels, ["circular", "confidence", "multi_solutions"])
    per = out["per_class"]
    # circular: TP 1 (step 1), FP 1 (step 2), TN 1 (step 3), FN 1 (step 4): both F1 = 2/(2+1+1)
    assert (per["circular"]["tp"], per["circular"]["fp"], per["circular"]["tn"], per["circular"]["fn"]) == (1, 1, 1, 1)
    assert per["circular"]["prmscore"] == pytest.approx(0.5)
    assert per["confidence"]["prmscore"] == 1.0
    # multi_solutions: TP 1, FN 1 -> F1 = 2/3; no wrong step, so PRMScore is that F1 (the leaderboard's MS)
    ms = per["multi_solutions"]
    assert ms["f1"] == pytest.approx(2 / 3) and ms["negative_f1"] == 0.0 and ms["prmscore"] == pytest.approx(2 / 3)
    assert ms["negative_recall"] is None
    # overall pools every step: TP 4, FP 1, TN 2, FN 2
    o = out["overall"]
    assert (o["tp"], o["fp"], o["tn"], o["fn"], o["n_solutions"], o["n_steps"]) == (4, 1, 2, 2, 3, 9)
    assert o["precision"] == pytest.approx(4 / 5) and o["recall"] == pytest.approx(4 / 6)
    assert o["negative_precision"] == pytest.approx(2 / 4) and o["negative_recall"] == pytest.approx(2 / 3)
    assert o["f1"] == pytest.approx(8 / 11)  # = 2PR/(P+R) = 2(4/5)(2/3)/(4/5 + 2/3)
    assert o["negative_f1"] == pytest.approx(4 / 7)  # = 2(1/2)(2/3)/(1/2 + 2/3)
    assert o["prmscore"] == pytest.approx((8 / 11 + 4 / 7) / 2)
    assert list(per) == ["circular", "confidence", "multi_solutions"]


def test_prmbench_trivial_predictors():
    labels = [[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1]]  # 6 of 8 steps correct in the error class; 9 of 11 overall
    classes = ["deception", "deception", "multi_solutions"]
    oracle = prmbench_scores(labels, labels, classes)
    assert oracle["overall"]["prmscore"] == 1.0
    assert all(g["prmscore"] == 1.0 for g in oracle["per_class"].values())
    # always "correct": F1 = 2p/(1+p) with p the share of correct steps, negative F1 = 0 -> PRMScore p/(1+p)
    always = prmbench_scores([[1] * len(x) for x in labels], labels, classes)
    assert always["per_class"]["deception"]["prmscore"] == pytest.approx(0.75 / 1.75)
    assert always["overall"]["prmscore"] == pytest.approx((9 / 11) / (1 + 9 / 11))
    assert always["overall"]["negative_f1"] == 0.0 and always["overall"]["negative_precision"] is None
    assert always["per_class"]["multi_solutions"]["prmscore"] == 1.0
    # always "wrong": the mirror image, on the wrong steps (q = 2/11 -> negative F1 = 2q/(1+q))
    never = prmbench_scores([[0] * len(x) for x in labels], labels, classes)
    assert never["overall"]["f1"] == 0.0 and never["overall"]["negative_f1"] == pytest.approx(4 / 13)
    assert never["per_class"]["multi_solutions"]["prmscore"] == 0.0


def test_prmbench_counts_steps_after_the_first_error():
    from procsup.data.converters import from_prmbench

    record = {"modified_question": "q", "modified_process": ["1. a", "2. b", "3. c", "4. d"], "error_steps": [2]}
    traj = from_prmbench(record)
    assert traj.labels == [True, False, True, True]  # step 3 follows the error and is still correct
    out = prmbench_scores([[True] * 4], [traj.labels], ["circular"])["overall"]
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (3, 1, 0, 0)


def _official_f1s(tp, fp, tn, fn):
    """Transcribed from ssmisya/PRMBench mr_eval/tasks/prmtest_classified/task.py, evaluate_function."""
    precision = tp / (tp + fp) if (tp + fp) != 0 else -1
    recall = tp / (tp + fn) if (tp + fn) != 0 else -1
    f1 = 2 * precision * recall / (precision + recall) if (precision + recall) != 0 else -1
    negative_precision = tn / (tn + fn) if (tn + fn) != 0 else -1
    negative_recall = tn / (tn + fp) if (tn + fp) != 0 else -1
    negative_f1 = (
        2 * negative_precision * negative_recall / (negative_precision + negative_recall)
        if (negative_precision + negative_recall) != 0
        else -1
    )
    return f1, negative_f1


def test_prmbench_f1_matches_official_formula():
    rng = random.Random(0)
    for _ in range(2000):
        tp, fp, tn, fn = (rng.choice([0, 0, 1, 2, 3, 7]) for _ in range(4))
        if tp + fp + tn + fn == 0:
            continue
        labels = [1] * (tp + fn) + [0] * (tn + fp)
        preds = [1] * tp + [0] * fn + [0] * tn + [1] * fp
        got = prmbench_scores([preds], [labels], ["x"])["overall"]
        for ours, theirs, (hits, miss_a, miss_b) in zip(
            (got["f1"], got["negative_f1"]), _official_f1s(tp, fp, tn, fn), ((tp, fp, fn), (tn, fn, fp))
        ):
            if hits:  # precision and recall defined, not both 0: the same number
                assert ours == pytest.approx(theirs)
            elif miss_a and miss_b:  # the documented difference: precision = recall = 0 gives -1 upstream
                assert (ours, theirs) == (0.0, -1)
            elif miss_a or miss_b:  # one of them undefined (-1), the other 0: upstream -0.0
                assert ours == 0.0 and theirs == 0.0
            else:  # nothing to score: undefined on both sides
                assert ours is None and theirs == -1


def test_prmbench_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="predictions and labels are empty"):
        prmbench_scores([], [], [])
    with pytest.raises(ValueError, match="3 predictions for 2 step labels"):
        prmbench_scores([[1, 1, 1]], [[1, 0]], ["a"])
    with pytest.raises(ValueError, match=r"labels\[0\]\[1\] must be 0/1"):
        prmbench_scores([[1, 1]], [[1, -100]], ["a"])
    with pytest.raises(ValueError, match="but classes has 2"):
        prmbench_scores([[1]], [[1]], ["a", "b"])
    with pytest.raises(ValueError, match=r"step_scores\[0\] must be finite"):
        prmbench_predictions([math.nan])


# ---------------------------------------------------------------------------------------------
# Step classification


def test_step_auroc_hand_computed():
    # Correct steps {0.35, 0.8} vs wrong {0.1, 0.4}: pairs won 1 + 0 + 1 + 1 = 3 of 4.
    assert step_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # Correct {0.5, 0.9} vs wrong {0.5, 0.2}: tie 0.5 + 1 + 1 + 1 = 3.5 of 4.
    assert step_auroc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == 0.875
    assert step_auroc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5
    assert step_auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert step_auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0


def test_step_auroc_matches_pairwise_definition():
    rng = random.Random(1)
    for _ in range(30):
        n = rng.randint(2, 15)
        scores = [rng.choice([0.1, 0.2, 0.5, 0.9]) for _ in range(n)]  # many ties on purpose
        labels = [rng.randint(0, 1) for _ in range(n)]
        labels[0], labels[1] = 0, 1
        pos = [s for s, y in zip(scores, labels) if y]
        neg = [s for s, y in zip(scores, labels) if not y]
        pairwise = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)) / (len(pos) * len(neg))
        assert step_auroc(scores, labels) == pytest.approx(pairwise)


def test_step_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="needs both classes, got 2 correct and 0 wrong"):
        step_auroc([0.1, 0.9], [1, 1])
    with pytest.raises(ValueError, match=r"labels\[1\] must be 0/1 or a bool, got -100"):
        step_auroc([0.1, 0.9], [1, -100])  # the ignore index must not be cast to True
    with pytest.raises(ValueError, match="scores has 3 items but labels has 2"):
        step_auroc([0.1, 0.9, 0.5], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        step_auroc([], [])


def test_step_accuracy():
    # Predicted correct iff score >= 0.5: [1, 1, 0, 0] against [1, 1, 1, 0] -> 3/4.
    assert step_accuracy([0.9, 0.5, 0.49, 0.1], [1, 1, 1, 0]) == 0.75
    assert step_accuracy([0.9, 0.5, 0.49, 0.1], [1, 1, 1, 0], threshold=0.4) == 1.0  # [1, 1, 1, 0]: all right
    assert step_accuracy([0.9, 0.5, 0.49, 0.1], [1, 1, 1, 0], threshold=0.05) == 0.75  # [1, 1, 1, 1]
    assert step_accuracy([0.9, 0.5, 0.49, 0.1], [1, 1, 1, 0], threshold=0.95) == 0.25  # [0, 0, 0, 0]
    with pytest.raises(ValueError, match="scores has 1 items but labels has 2"):
        step_accuracy([0.5], [1, 0])
    with pytest.raises(ValueError, match=r"labels\[0\] must be 0/1"):
        step_accuracy([0.5], [0.7])


# ---------------------------------------------------------------------------------------------
# Reranking

# Problem 0, three candidates:        min    last   product  mean
#   [0.9, 0.2]   wrong               0.2    0.2    0.18     0.55
#   [0.6, 0.7]   right               0.6    0.7    0.42     0.65
#   [0.5, 0.95]  wrong               0.5    0.95   0.475    0.725
# Problem 1: [0.8] right, [0.3] wrong -> every aggregation picks the right one.
BON_SCORES = [[[0.9, 0.2], [0.6, 0.7], [0.5, 0.95]], [[0.8], [0.3]]]
BON_CORRECT = [[False, True, False], [True, False]]


@pytest.mark.parametrize("how, expected", [("min", 1.0), ("last", 0.5), ("product", 0.5), ("mean", 0.5)])
def test_best_of_n(how, expected):
    assert best_of_n(BON_SCORES, BON_CORRECT, how) == expected


def test_best_of_n_ties_go_to_first_candidate():
    assert best_of_n([[[0.5], [0.5]]], [[False, True]], "last") == 0.0
    assert best_of_n([[[0.5], [0.5]]], [[True, False]], "last") == 1.0


def test_best_of_n_rejects_bad_input():
    with pytest.raises(ValueError, match="problem 1: candidates_scores has 2 candidates but candidates_correct has 1"):
        best_of_n(BON_SCORES, [[False, True, False], [True]], "min")
    with pytest.raises(ValueError, match="problem 0 has no candidates"):
        best_of_n([[]], [[]], "min")
    with pytest.raises(ValueError, match="candidates_scores has 2 items but candidates_correct has 1"):
        best_of_n(BON_SCORES, BON_CORRECT[:1], "min")


ANSWERS = [["4", "5", "5"], ["7", "8", None, None], ["1", "1", "2"]]
CORRECT = [[True, False, False], [False, True, False, False], [True, True, False]]


def test_majority_vote():
    # p0: "5" x2 beats "4" -> wrong. p1: "7" and "8" tie (None does not vote), "7" came first -> wrong.
    # p2: "1" x2 -> right. 1/3.
    assert majority_vote(ANSWERS, CORRECT) == pytest.approx(1 / 3)


def test_weighted_majority_vote():
    # p0: "4" 0.9 vs "5" 0.3 + 0.4 = 0.7 -> right. p1: "7" 0.2 vs "8" 0.6 (None ignored) -> right.
    # p2: "1" 0.3 + 0.3 = 0.6 vs "2" 0.9 -> wrong. 2/3.
    weights = [[0.9, 0.3, 0.4], [0.2, 0.6, 0.9, 0.9], [0.3, 0.3, 0.9]]
    assert weighted_majority_vote(ANSWERS, weights, CORRECT) == pytest.approx(2 / 3)


def test_votes_edge_cases_and_bad_input():
    assert majority_vote([[None, None]], [[False, False]]) == 0.0  # nothing parsed: wrong
    with pytest.raises(ValueError, match="answer '5' is marked both correct and incorrect"):
        majority_vote([["5", "5"]], [[True, False]])
    with pytest.raises(ValueError, match="negative weight"):
        weighted_majority_vote([["5", "6"]], [[0.5, -0.1]], [[True, False]])
    with pytest.raises(ValueError, match="problem 0: answers has 2 candidates but weights has 1"):
        weighted_majority_vote([["5", "6"]], [[0.5]], [[True, False]])
    with pytest.raises(ValueError, match="empty"):
        majority_vote([], [])


# Problem 0: scores 0.1 0.9 0.2 0.3, only candidate 1 right, answers a b a a.
# Problem 1: scores 0.5 0.4 0.8 0.1, candidates 2 and 3 right, answers x y z z.
CURVE_SCORES = [[[0.1], [0.9], [0.2], [0.3]], [[0.5], [0.4], [0.8], [0.1]]]
CURVE_CORRECT = [[False, True, False, False], [False, False, True, True]]
CURVE_ANSWERS = [["a", "b", "a", "a"], ["x", "y", "z", "z"]]


def test_best_of_n_curve_first_n():
    curve = best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", candidates_answers=CURVE_ANSWERS, ns=(1, 2, 4))
    # N=1: both first candidates wrong.
    assert curve[1] == {"best_of_n": 0.0, "best_of_n_finished": 0.0, "oracle": 0.0, "majority_vote": 0.0,
                        "weighted_majority_vote": 0.0}
    # N=2: BoN p0 picks 0.9 (right), p1 picks 0.5 (wrong). Majority: both tie 1-1, first answer wins -> wrong,
    # wrong. Weighted: p0 "b" 0.9 > "a" 0.1 right; p1 "x" 0.5 > "y" 0.4 wrong.
    assert curve[2] == {"best_of_n": 0.5, "best_of_n_finished": 0.5, "oracle": 0.5, "majority_vote": 0.0,
                        "weighted_majority_vote": 0.5}
    # N=4: BoN right, right. Majority: p0 "a" x3 wrong, p1 "z" x2 right. Weighted: p0 "b" 0.9 > "a" 0.6,
    # p1 "z" 0.9 > "x" 0.5: right, right.
    assert curve[4] == pytest.approx({"best_of_n": 1.0, "best_of_n_finished": 1.0, "oracle": 1.0, "majority_vote": 0.5,
                                      "weighted_majority_vote": 1.0})


def test_best_of_n_finished_ranks_only_candidates_with_an_answer():
    # p0: the top score (0.9) is a sample that ended without an answer, so wrong; among the finished ones
    # 0.6 (right) wins. p1: no candidate finished: wrong either way, as majority vote counts it.
    scores = [[[0.9], [0.6], [0.2]], [[0.7], [0.4]]]
    correct = [[False, True, False], [False, False]]
    answers = [[None, "7", "8"], [None, None]]
    assert best_of_n(scores, correct, "min") == 0.0
    assert best_of_n(scores, correct, "min", answers) == 0.5
    assert majority_vote(answers, correct) == 0.5  # "7" and "8" tie, "7" first; p1 has no vote
    curve = best_of_n_curve(scores, correct, "min", candidates_answers=answers, ns=(2,))
    assert curve[2]["best_of_n"] == 0.0 and curve[2]["best_of_n_finished"] == 0.5
    with pytest.raises(ValueError, match="problem 1: candidates_scores has 2 candidates but candidates_answers has 1"):
        best_of_n(scores, correct, "min", [[None, "7", "8"], [None]])


def test_best_of_n_curve_seeded_draws():
    a = best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=(1, 4), seed=3, draws=50)
    b = best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=(1, 4), seed=3, draws=50)
    assert a == b
    assert set(a[1]) == {"best_of_n", "oracle"}
    # N=1: the only candidate is picked, so BoN equals pass@1; N=all: every draw is the full set.
    assert a[1]["best_of_n"] == a[1]["oracle"]
    assert 0.0 < a[1]["best_of_n"] < 1.0
    assert a[4] == {"best_of_n": 1.0, "oracle": 1.0}


def test_best_of_n_curve_draws_do_not_depend_on_other_ns():
    alone = best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=(2,), seed=7, draws=5)
    with_others = best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=(1, 2, 4), seed=7, draws=5)
    assert alone[2] == with_others[2]


def test_best_of_n_curve_rejects_bad_input():
    with pytest.raises(ValueError, match=r"every N must be an int in \[1, 4\]"):
        best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=(1, 8))
    with pytest.raises(ValueError, match="ns is empty"):
        best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", ns=())
    with pytest.raises(ValueError, match="draws must be >= 1"):
        best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", seed=0, draws=0)
    with pytest.raises(ValueError, match="problem 1: candidates_scores has 4 candidates but candidates_answers has 3"):
        best_of_n_curve(CURVE_SCORES, CURVE_CORRECT, "last", candidates_answers=[["a"] * 4, ["x"] * 3])


def test_within_problem_auroc_ignores_between_problem_difficulty():
    from procsup.evaluation.prm_metrics import within_problem_auroc

    # problem 0: the right candidate scores lowest; problem 1: highest; problem 2 has no wrong candidate.
    scores = [[0.9, 0.8, 0.1], [0.2, 0.3, 0.4], [0.5, 0.5]]
    correct = [[False, False, True], [False, False, True], [True, True]]
    assert within_problem_auroc(scores, correct) == (0.5, 2)
    # a scorer that only knows which problem is easy: pooled AUROC 0.83, within-problem chance
    easy = [[0.9, 0.9], [0.1, 0.1]]
    ok = [[True, False], [False, False]]
    assert within_problem_auroc(easy, ok) == (0.5, 1)
    assert within_problem_auroc([[0.3]], [[True]]) == (None, 0)
