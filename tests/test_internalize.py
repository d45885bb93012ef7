"""Internalization (issue 16): each stage (identify, correct, reuse as step rewards), the budget and the
measurement against exact labels on scripted state-mode policies whose first error is known; the scorer
inside the RL trainer on a tiny history-mode model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from procsup.annotation import first_error_labels
from procsup.data.tokenize import StepFormat
from procsup.rl.grpo import RLConfig, train
from procsup.rl.internalize import (
    InternalizeConfig,
    InternalizeScorer,
    correct,
    exact_first_error,
    first_error_rewards,
    identify,
    internalize,
    measure,
)
from procsup.rollout import LMPolicy
from procsup.scorers import exact_labels
from procsup.tasks.addition import AdditionTask

from conftest import wrong_digit_trace

TASK = AdditionTask(index_hints=False)


@dataclass
class Scripted:
    """A state-mode addition policy: right digits (``wrong=False``: a right prefix always completes to the
    right answer, a wrong one never, as addition cannot recover), or always one digit off."""

    task: AdditionTask
    wrong: bool = False
    mode: str = "state"
    device: str = "cpu"
    max_steps: int | None = None

    def propose(self, states, n=1):
        out = []
        for s in states:
            x, y, c = (int(v) for v in s.split("+"))
            out.append([f"{(x + y + c + self.wrong) % 10},{(x + y + c) // 10}"] * n)
        return out


trace = wrong_digit_trace


def exact(trajs):
    return exact_labels(TASK, "state", trajs)


def test_first_error_rewards_hand_computed():
    assert first_error_rewards(5, 3) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert first_error_rewards(4, 1, right=1.0, wrong=-1.0, after=0.5) == [-1.0, 0.5, 0.5, 0.5]
    assert first_error_rewards(3, None) == [1.0] * 3
    assert first_error_rewards(3, 4) == [1.0] * 3  # the answer line: every written step right
    with pytest.raises(ValueError):
        first_error_rewards(3, 0)


def test_exact_first_error():
    assert exact_first_error([True, False, True], 3, False) == 2
    assert exact_first_error([True, True], 2, False) == 3  # steps right, answer wrong: the answer line
    assert exact_first_error([True, True, False], 2, False) == 3  # a step missing
    assert exact_first_error([True, True], 2, True) is None


def test_identify_locates_the_known_first_error_and_skips_right_samples():
    items = identify(Scripted(TASK), [trace(12345, 11111, 3), trace(12345, 11111, 1), trace(12345, 11111, None)],
                     first_error_labels, k=2, seed=0)
    assert [it.first_error for it in items] == [3, 1, None]
    assert [it.searched for it in items] == [True, True, False]
    assert items[0].search_rollouts == 4  # probes 2 (2 new, succeed) and 3 (2 new, fail): as test_annotate
    assert items[2].search_rollouts == items[2].search_samples == 0


def test_correct_resamples_the_last_good_prefix_until_right():
    good = identify(Scripted(TASK), [trace(12345, 11111, 3)], first_error_labels, k=2, seed=0)
    correct(Scripted(TASK), good, n=3, rounds=2, seed=0)
    (it,) = good
    expert = trace(12345, 11111, None)
    assert [s.action for s in it.correction.steps] == [s.action for s in expert.steps]
    assert it.correction.meta["correct"]
    assert it.correct_rollouts == 3  # one round: the first already had a right completion
    assert it.correct_samples == 3 * 3  # 3 completions x the 3 steps after the 2-step prefix
    # a policy that never succeeds: every round spent, no correction
    bad = identify(Scripted(TASK, wrong=True), [trace(12345, 11111, 3)], first_error_labels, k=2, seed=0)
    assert bad[0].first_error == 1  # no completion of any prefix succeeds: blamed on the first step
    correct(Scripted(TASK, wrong=True), bad, n=3, rounds=2, seed=0)
    assert bad[0].correction is None and bad[0].correct_rollouts == 6


def test_internalize_rewards_and_search_budget():
    trajs = [trace(12345, 11111, 3), trace(12345, 11111, 2), trace(12345, 11111, None), trace(12345, 11111, 5)]
    items = internalize(Scripted(TASK), trajs, InternalizeConfig(k=2, correct_n=2, correct_rounds=1), first_error_labels, seed=0)
    assert [it.step_rewards for it in items] == [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1] * 5, [1, 1, 1, 1, 0]]
    assert all(it.correction is not None for i, it in enumerate(items) if i != 2) and items[2].correction is None
    budget = internalize(Scripted(TASK), trajs, InternalizeConfig(k=2, max_searched=1, wrong_reward=-1.0),
                         first_error_labels, seed=0)
    searched = [i for i, it in enumerate(budget) if it.searched]
    assert len(searched) == 1
    for i, it in enumerate(budget):
        if i not in searched and i != 2:  # over the budget: the outcome on every step
            assert it.step_rewards == [-1.0] * 5 and it.search_rollouts == 0 and it.correction is None
    assert budget[2].step_rewards == [1.0] * 5


def test_measure_against_exact_labels_hand_computed():
    trajs = [trace(12345, 11111, 3), trace(12345, 11111, 2), trace(12345, 11111, None)]
    items = internalize(Scripted(TASK), trajs, InternalizeConfig(k=2, correct_n=2, correct_rounds=1), first_error_labels, seed=0)
    items[1].first_error = 4  # pretend the search found it late
    corrections = [it.correction for it in items if it.correction is not None]
    m = measure(items, exact(trajs), exact(corrections))
    assert m["searched"] == 2
    assert m["first_error_accuracy"] == 0.5 and m["first_error_late"] == 0.5 and m["first_error_early"] == 0.0
    # labels judged: 3 (1st: T, T, F) and 4 (2nd: T, T, T, F against exact T, F, T, T): 3 + 2 of 7 agree
    assert m["step_label_accuracy"] == pytest.approx(5 / 7)
    assert m["corrected"] == 1.0 and m["correction_validity"] == 1.0


def test_scorer_counts_samples_and_logs_each_call(tmp_path):
    log = tmp_path / "internalize.jsonl"
    scorer = InternalizeScorer(Scripted(TASK), InternalizeConfig(k=2, correct_n=2, correct_rounds=1), first_error_labels,
                               exact=exact, log_file=str(log))
    trajs = [trace(12345, 11111, 3), trace(12345, 11111, None)]
    assert scorer(trajs) == [[1, 1, 0, 0, 0], [1] * 5]
    scorer(trajs)
    first, second = scorer.history
    # search: 2 completions of prefix 2 (3 steps each), 2 of prefix 3 (2 each); correction: 2 of prefix 2
    assert first["search_samples"] == 2 * 3 + 2 * 2 and first["correct_samples"] == 2 * 3
    assert scorer.samples == second["internalize_samples"] == 2 * first["internalize_samples"]
    assert first["first_error_accuracy"] == 1.0 and first["correction_validity"] == 1.0
    assert len(scorer.corrections) == 1 and log.read_text().count("\n") == 2


def test_config_validation():
    for bad in ({"k": 0}, {"max_searched": -1}, {"correct_n": 0}, {"correct_rounds": -1}):
        with pytest.raises(ValueError):
            InternalizeConfig(**bad)


def test_scorer_in_the_rl_trainer_samples_the_trained_model(tiny_model, tmp_path):
    """The trainer takes the scorer unchanged; its searches sample the model being trained (the same object)."""
    model, tok = tiny_model
    fmt = StepFormat()
    policy = LMPolicy(model, tok, TASK, fmt, mode="history", temperature=1.0, max_new_tokens=12)
    scorer = InternalizeScorer(policy, InternalizeConfig(k=1, max_searched=2, correct_n=1, correct_rounds=1),
                               first_error_labels, exact=lambda ts: exact_labels(TASK, "history", ts))
    cfg = RLConfig(output_dir=str(tmp_path), max_steps=2, batch_size=2, group_size=2, learning_rate=1e-3, progress=False,
                   max_new_tokens=12, step_reward="exact", credit="sum", gamma=0.0, outcome_coef=0.0)
    result = train(cfg, task=TASK, scorer=scorer, model=model, tokenizer=tok, fmt=fmt, problems=TASK.sample_range(0, 1, 8))
    assert result.model is model and scorer.policy.model is model
    assert scorer.calls == 2 and scorer.samples == sum(h["search_samples"] + h["correct_samples"] for h in scorer.history)
    assert all(h["searched"] <= 2 for h in scorer.history)
    assert math.isfinite(result.final_metrics["loss"])  # an untrained model fails every sample: rewards all 0


def test_corrections_are_reused_in_the_same_update(tiny_model, tmp_path):
    """train(reuse=) is called after the scorer of the same update, so ``lambda _: scorer.corrections`` hands
    the trainer this update's corrections (their loss term: tests/test_rl_checkpoint.py); a forced correction
    is trained on (``reused`` in the metrics)."""
    model, tok = tiny_model
    fmt = StepFormat()
    policy = LMPolicy(model, tok, TASK, fmt, mode="history", temperature=1.0, max_new_tokens=12)
    scorer = InternalizeScorer(policy, InternalizeConfig(k=1, max_searched=2, correct_n=1, correct_rounds=1),
                               first_error_labels)
    seen = []

    def reuse(trajs):
        seen.append(scorer.calls)
        return [*scorer.corrections, TASK.expert(TASK.problem_of(trajs[0]))]  # one right trace always reused

    cfg = RLConfig(output_dir=str(tmp_path), max_steps=2, batch_size=2, group_size=2, learning_rate=1e-3, progress=False,
                   max_new_tokens=12, step_reward="exact", credit="sum", gamma=0.0, outcome_coef=0.0, reuse_coef=0.5)
    result = train(cfg, task=TASK, scorer=scorer, model=model, tokenizer=tok, fmt=fmt, problems=TASK.sample_range(0, 1, 8),
                   reuse=reuse)
    assert seen == [1, 2]
    assert result.final_metrics["reused"] >= 1 and result.final_metrics["reuse_nll"] > 0
