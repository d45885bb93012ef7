"""PRM-guided search: best-of-N picks the highest aggregated score; beam search keeps its budget."""

from __future__ import annotations

import pytest
from transformers import AutoModelForTokenClassification

import procsup.models.prm as prm_models
import procsup.search as search
from procsup.data.tokenize import StepFormat
from procsup.evaluation import prm_metrics
from procsup.models.factory import tiny_hf_config
from procsup.search import beam_search, best_of_n, solution_score, state_beam_search
from procsup.tasks.addition import AdditionProblem, AdditionTask
from tests.conftest import TINY

TASK = AdditionTask()
FMT = StepFormat()


@pytest.fixture
def tiny_prm(char_tok):
    config = tiny_hf_config(TINY, char_tok)
    config.num_labels = 2
    return AutoModelForTokenClassification.from_config(config)


def test_solution_score_gives_a_stepless_trace_the_lowest_score():
    assert solution_score([], "min") == ([0.0], 0.0)
    assert solution_score([0.9, 0.2, 0.5], "min") == ([0.9, 0.2, 0.5], 0.2)


def test_best_of_n_picks_the_highest_aggregated_score(tiny_model, tiny_prm, char_tok, monkeypatch):
    model, tok = tiny_model
    problems = TASK.sample(seed=0, size=2, count=3)
    values = iter([0.3, 0.8, 0.5, 0.8, 0.1, 0.2, 0.4, 0.6, 0.7, 0.9, 0.05, 0.2])  # one per candidate

    def fake_score(prm, prm_tok, trajectories, fmt):  # step 0 gets the candidate's value, later steps 1.0
        return [[next(values)] + [1.0] * (len(t.steps) - 1) if t.steps else [] for t in trajectories]

    monkeypatch.setattr(prm_models, "score", fake_score)
    out = best_of_n(model, tok, tiny_prm, char_tok, TASK, problems, FMT, n=4, how="min", seed=3, max_new_tokens=8)
    assert len(out.results) == 3
    for r in out.results:
        assert len(r.candidates) == 4
        expected = [c.step_scores[0] if c.trajectory.steps else 0.0 for c in r.candidates]
        assert [c.score for c in r.candidates] == expected
        assert r.chosen is r.candidates[max(range(4), key=expected.__getitem__)]
        assert r.samples == sum(len(c.trajectory.steps) + (c.answer is not None) for c in r.candidates)
    assert out.accuracy == prm_metrics.best_of_n(out.candidates_scores, out.candidates_correct, "min")
    assert out.accuracy == sum(r.chosen.correct for r in out.results) / 3
    curve = out.curve(ns=(1, 4))
    assert curve[4]["best_of_n"] == out.accuracy and set(curve[1]) >= {"oracle", "majority_vote"}


def test_best_of_n_with_a_real_prm(tiny_model, tiny_prm, char_tok):
    model, tok = tiny_model
    problems = TASK.sample(seed=1, size=1, count=2)
    out = best_of_n(model, tok, tiny_prm, char_tok, TASK, problems, FMT, n=2, seed=0, max_new_tokens=6)
    for r in out.results:
        assert all(0.0 <= s <= 1.0 for c in r.candidates for s in c.step_scores)
        assert r.chosen.score == max(c.score for c in r.candidates)


# A scripted policy: the continuations each prefix (the steps so far) samples, `expand` = 2 of them.
SCRIPT = {
    (): ["1\n", "2\n"],
    ("1",): ["A:", "3\n"],  # answers (a finished copy of "1") and branches to "1","3"
    ("2",): ["4\n", "4\n"],  # a duplicate: one proposal
}
STEP_SCORE = {"1": 0.9, "2": 0.8, "3": 0.5, "4": 0.7, "9": 0.6, "8": 0.2}


def _scripted(monkeypatch):
    prompts_seen = []

    def fake_generate(policy, tokenizer, prompts, n, budget, temperature, *, stop_strings, batch_size):
        assert stop_strings == [FMT.step_sep] and n == 2
        out = []
        for p in prompts:
            steps = tuple(tokenizer.decode(list(p)).split("\n")[1:-1])  # addition inputs have no newline
            prompts_seen.append(steps)
            texts = SCRIPT.get(steps, ["9\n", "8\n"])
            out.append([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
        return out

    def fake_score(prm, prm_tok, trajectories, fmt):
        return [[STEP_SCORE[s.action] for s in t.steps] for t in trajectories]

    monkeypatch.setattr(search, "sample_generate", fake_generate)
    monkeypatch.setattr(prm_models, "score", fake_score)
    return prompts_seen


def test_beam_search_hand_traced(tiny_model, tiny_prm, char_tok, monkeypatch):
    prompts_seen = _scripted(monkeypatch)
    model, tok = tiny_model
    problem = TASK.sample(seed=0, size=1, count=1)
    (r,) = beam_search(model, tok, tiny_prm, char_tok, TASK, problem, FMT, beam_width=2, expand=2, max_steps=3)
    # round 1: () -> "1" (0.9), "2" (0.8); round 2: "1" finishes (0.9), "1","3" (min 0.5), "2","4" (0.7):
    # one slot left, "2","4" keeps it; round 3: "2","4","9" (0.6) beats "2","4","8" (0.2); out of rounds.
    assert prompts_seen == [(), ("1",), ("2",), ("2", "4")]
    assert [[s.action for s in c.trajectory.steps] for c in r.candidates] == [["1"], ["2", "4", "9"]]
    assert [c.score for c in r.candidates] == [0.9, 0.6]
    assert r.candidates[1].step_scores == [0.8, 0.7, 0.6]
    assert r.chosen is r.candidates[0]
    assert r.samples == 2 + 4 + 2 + 2  # sampled continuations per round, then one greedy answer per beam
    assert r.chosen.correct == TASK.check_answer(problem[0], r.chosen.answer)


def test_beam_search_max_steps_one_finishes_every_beam_after_one_step(tiny_model, tiny_prm, char_tok, monkeypatch):
    _scripted(monkeypatch)
    model, tok = tiny_model
    problem = TASK.sample(seed=0, size=1, count=1)
    (r,) = beam_search(model, tok, tiny_prm, char_tok, TASK, problem, FMT, beam_width=2, expand=2, max_steps=1)
    assert [[s.action for s in c.trajectory.steps] for c in r.candidates] == [["1"], ["2"]]
    assert r.samples == 2 + 2


@pytest.mark.parametrize("how", ["min", "last"])
def test_beam_search_with_real_models_keeps_its_limits(tiny_model, tiny_prm, char_tok, how):
    model, tok = tiny_model
    problems = TASK.sample(seed=2, size=1, count=2)
    kwargs = dict(beam_width=2, expand=2, max_steps=2, how=how, seed=0, max_step_tokens=3)
    results = beam_search(model, tok, tiny_prm, char_tok, TASK, problems, FMT, **kwargs)
    again = beam_search(model, tok, tiny_prm, char_tok, TASK, problems, FMT, **kwargs)
    assert len(results) == 2
    for r, r2 in zip(results, again):
        assert 1 <= len(r.candidates) <= 2
        scores = [c.score for c in r.candidates]
        assert scores == sorted(scores, reverse=True) and r.chosen is r.candidates[0]
        assert all(len(c.trajectory.steps) <= 2 for c in r.candidates)
        # at most: 2 samples in round 1, 2 beams x 2 in round 2, one greedy answer per finished beam
        assert len(r.candidates) < r.samples <= 2 + 4 + 2
        assert [c.trajectory.to_dict() for c in r.candidates] == [c.trajectory.to_dict() for c in r2.candidates]


def test_beam_search_rejects_empty_budgets(tiny_model, tiny_prm, char_tok):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, tok, tiny_prm, char_tok, TASK, [], FMT, beam_width=0, expand=1, max_steps=1)


def test_best_of_n_score_answer_scores_the_answer_as_a_last_step(tiny_model, tiny_prm, char_tok, monkeypatch):
    model, tok = tiny_model
    problems = TASK.sample(seed=0, size=2, count=2)
    seen = []

    def fake_score(prm, prm_tok, trajectories, fmt):  # every step 1.0 but the answer step, which scores 0.25
        seen.extend(trajectories)
        return [[1.0] * (len(t.steps) - 1) + [0.25] for t in trajectories]

    monkeypatch.setattr(prm_models, "score", fake_score)
    out = best_of_n(model, tok, tiny_prm, char_tok, TASK, problems, FMT, n=3, how="min", seed=1, max_new_tokens=8,
                    score_answer=True)
    assert len(seen) == 6
    for t in seen:
        assert t.steps[-1].action == FMT.answer_prefix + (t.meta["answer"] or "")
    for r in out.results:
        assert all(c.score == 0.25 and len(c.step_scores) == len(c.trajectory.steps) + 1 for c in r.candidates)


# 27 + 15 in state mode: the policy proposes actions for a rendered column state; the PRM scores step texts
STATE_SCRIPT = {"7+5+0": ["2,1", "3,1"], "2+1+1": ["4,0", "4,0"]}
STATE_SCORES = {"7+5+0 -> 2,1": 0.9, "7+5+0 -> 3,1": 0.4, "7+5+0 -> x": 0.95, "2+1+1 -> 4,0": 0.8}


def _scripted_states(monkeypatch, script):
    seen = []

    def fake_generate(policy, tokenizer, prompts, n, budget, temperature, *, batch_size):
        states = [tokenizer.decode(list(p), skip_special_tokens=True).strip() for p in prompts]
        seen.extend(states)
        return [[tokenizer(a, add_special_tokens=False)["input_ids"] for a in script[s][:n]] for s in states]

    def fake_score(prm, prm_tok, rows, fmt, batch_size=32):
        # trace rows carry "state -> action" steps; step rows carry the state as input and one action
        return [[STATE_SCORES[s.action if " -> " in s.action else f"{r.input} -> {s.action}"] for s in r.steps]
                for r in rows]

    monkeypatch.setattr(search, "sample_generate", fake_generate)
    monkeypatch.setattr(prm_models, "score", fake_score)
    return seen


@pytest.mark.parametrize("layout", ["trace", "step"])
def test_state_beam_search_hand_traced(tiny_model, tiny_prm, char_tok, monkeypatch, layout):
    seen = _scripted_states(monkeypatch, STATE_SCRIPT)
    model, tok = tiny_model
    task = AdditionTask(index_hints=False)
    problem = AdditionProblem(27, 15)
    (r,) = state_beam_search(model, tok, tiny_prm, char_tok, task, [problem], FMT, beam_width=2, expand=2, layout=layout)
    # round 1: "2,1" (0.9) and "3,1" (0.4) both live; round 2: each proposes "4,0" twice (one proposal),
    # both finish: 42 with min 0.8, 43 with min 0.4
    assert seen == ["7+5+0", "2+1+1", "2+1+1"]
    assert [[(s.state, s.action) for s in c.trajectory.steps] for c in r.candidates] == [
        [("7+5+0", "2,1"), ("2+1+1", "4,0")], [("7+5+0", "3,1"), ("2+1+1", "4,0")]]
    assert [c.score for c in r.candidates] == [0.8, 0.4] and r.candidates[0].step_scores == [0.9, 0.8]
    assert [(c.answer, c.correct) for c in r.candidates] == [("42", True), ("43", False)]
    assert r.chosen is r.candidates[0] and r.samples == 2 + 2 * 2


def test_state_beam_search_a_failed_action_finishes_its_beam_unanswered(tiny_model, tiny_prm, char_tok, monkeypatch):
    _scripted_states(monkeypatch, {**STATE_SCRIPT, "7+5+0": ["x", "2,1"]})
    model, tok = tiny_model
    task = AdditionTask(index_hints=False)
    (r,) = state_beam_search(model, tok, tiny_prm, char_tok, task, [AdditionProblem(27, 15)], FMT, beam_width=2,
                             expand=2)
    # the PRM likes the unexecutable "x" best (0.95): it finishes at once with no answer and takes one of
    # the two slots; "2,1" goes on alone and finishes with 42 (min 0.8)
    assert [(c.answer, c.correct, c.score) for c in r.candidates] == [(None, False, 0.95), ("42", True, 0.8)]
    assert r.chosen.correct is False and r.samples == 2 + 2


def test_state_beam_search_out_of_rounds_finishes_unanswered(tiny_model, tiny_prm, char_tok, monkeypatch):
    _scripted_states(monkeypatch, STATE_SCRIPT)
    model, tok = tiny_model
    task = AdditionTask(index_hints=False)
    (r,) = state_beam_search(model, tok, tiny_prm, char_tok, task, [AdditionProblem(27, 15)], FMT, beam_width=1,
                             expand=2, max_steps=1)
    assert [(c.answer, c.score) for c in r.candidates] == [(None, 0.9)] and r.samples == 2
