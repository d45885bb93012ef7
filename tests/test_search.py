"""Search with a step scorer: best-of-N picks the highest aggregated score; beam search keeps its budget.

Scorers are plain lambdas and scripted policies are small LMPolicy subclasses: no monkeypatching."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from transformers import AutoModelForTokenClassification

from procsup.data.tokenize import StepFormat
from procsup.evaluation import prm_metrics
from procsup.models.factory import tiny_hf_config
from procsup.rollout import LMPolicy
from procsup.scorers import prm_scorer
from procsup.search import beam_search, best_of_n, solution_score
from procsup.tasks.addition import AdditionProblem, AdditionTask

from tests.conftest import TINY

TASK = AdditionTask()
FMT = StepFormat()


@pytest.fixture
def tiny_prm(char_tok):
    config = tiny_hf_config(TINY, char_tok)
    config.num_labels = 2
    return AutoModelForTokenClassification.from_config(config)


def _policy(tiny_model, task=TASK, mode="history", **kw) -> LMPolicy:
    model, tok = tiny_model
    return LMPolicy(model, tok, task, FMT, mode=mode, temperature=1.0, **kw)


def test_solution_score_gives_a_stepless_trace_the_lowest_score():
    assert solution_score([], "min") == ([0.0], 0.0)
    assert solution_score([0.9, 0.2, 0.5], "min") == ([0.9, 0.2, 0.5], 0.2)


def test_best_of_n_picks_the_highest_aggregated_score(tiny_model):
    problems = TASK.sample(seed=0, size=2, count=3)
    values = iter([0.3, 0.8, 0.5, 0.8, 0.1, 0.2, 0.4, 0.6, 0.7, 0.9, 0.05, 0.2])  # one per candidate

    def scorer(trajectories):  # step 0 gets the candidate's value, later steps 1.0
        return [[next(values)] + [1.0] * (len(t.steps) - 1) if t.steps else [] for t in trajectories]

    out = best_of_n(_policy(tiny_model, max_new_tokens=8), scorer, problems, n=4, how="min", seed=3)
    assert len(out.results) == 3
    for r in out.results:
        assert len(r.candidates) == 4
        expected = [c.meta["step_scores"][0] if c.steps else 0.0 for c in r.candidates]
        assert [c.meta["score"] for c in r.candidates] == expected
        assert r.chosen is r.candidates[max(range(4), key=expected.__getitem__)]
        assert r.samples == sum(len(c.steps) + (c.meta["answer"] is not None) for c in r.candidates)
    assert out.accuracy == prm_metrics.best_of_n(out.candidates_scores, out.candidates_correct, "min")
    assert out.accuracy == sum(bool(r.chosen.meta["correct"]) for r in out.results) / 3
    curve = out.curve(ns=(1, 4))
    assert curve[4]["best_of_n"] == out.accuracy and set(curve[1]) >= {"oracle", "majority_vote"}


def test_best_of_n_with_a_real_prm(tiny_model, tiny_prm, char_tok):
    problems = TASK.sample(seed=1, size=1, count=2)
    out = best_of_n(_policy(tiny_model, max_new_tokens=6), prm_scorer(tiny_prm, char_tok, FMT), problems, n=2, seed=0)
    for r in out.results:
        assert all(0.0 <= s <= 1.0 for c in r.candidates for s in c.meta["step_scores"])
        assert r.chosen.meta["score"] == max(c.meta["score"] for c in r.candidates)


def test_best_of_n_score_answer_scores_the_answer_as_a_last_step(tiny_model):
    problems = TASK.sample(seed=0, size=2, count=2)
    seen = []

    def scorer(trajectories):  # every step 1.0 but the answer step, which scores 0.25
        seen.extend(trajectories)
        return [[1.0] * (len(t.steps) - 1) + [0.25] for t in trajectories]

    out = best_of_n(_policy(tiny_model, max_new_tokens=8), scorer, problems, n=3, how="min", seed=1, score_answer=True)
    assert len(seen) == 6
    for t in seen:
        assert t.steps[-1].action == FMT.answer_prefix + (t.meta["answer"] or "")
    for r in out.results:
        assert all(c.meta["score"] == 0.25 and len(c.meta["step_scores"]) == len(c.steps) + 1 for c in r.candidates)


# A scripted history policy: the continuations each prefix (the steps so far) samples, `expand` = 2 of them.
SCRIPT = {
    (): ["1\n", "2\n"],
    ("1",): ["A:", "3\n"],  # answers (a finished copy of "1") and branches to "1","3"
    ("2",): ["4\n", "4\n"],  # a duplicate: one proposal
}
STEP_SCORE = {"1": 0.9, "2": 0.8, "3": 0.5, "4": 0.7, "9": 0.6, "8": 0.2}


@dataclass
class ScriptedText(LMPolicy):
    """Samples from SCRIPT (keyed by the prompt's steps); the greedy answer line is real generation."""

    seen: list = field(default_factory=list)

    def generate(self, prompts, n, max_new_tokens, stop_strings=None):
        if self.temperature is None:  # beam search's greedy answer after answer_prefix
            return super().generate(prompts, n, max_new_tokens, stop_strings)
        assert stop_strings == [FMT.step_sep] and n == 2
        out = []
        for p in prompts:
            steps = tuple(self.tokenizer.decode(list(p)).split("\n")[1:-1])  # addition inputs have no newline
            self.seen.append(steps)
            out.append([self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in SCRIPT.get(steps, ["9\n", "8\n"])])
        return out


def _step_scores(trajectories):
    return [[STEP_SCORE[s.action] for s in t.steps] for t in trajectories]


def test_beam_search_hand_traced(tiny_model):
    model, tok = tiny_model
    policy = ScriptedText(model, tok, TASK, FMT, temperature=1.0)
    problem = TASK.sample(seed=0, size=1, count=1)
    (r,) = beam_search(policy, _step_scores, problem, beam_width=2, expand=2, max_steps=3)
    # round 1: () -> "1" (0.9), "2" (0.8); round 2: "1" finishes (0.9), "1","3" (min 0.5), "2","4" (0.7):
    # one slot left, "2","4" keeps it; round 3: "2","4","9" (0.6) beats "2","4","8" (0.2); out of rounds.
    assert policy.seen == [(), ("1",), ("2",), ("2", "4")]
    assert [[s.action for s in c.steps] for c in r.candidates] == [["1"], ["2", "4", "9"]]
    assert [c.meta["score"] for c in r.candidates] == [0.9, 0.6]
    assert r.candidates[1].meta["step_scores"] == [0.8, 0.7, 0.6]
    assert r.chosen is r.candidates[0]
    assert r.samples == 2 + 4 + 2 + 2  # sampled continuations per round, then one greedy answer per beam
    assert r.chosen.meta["correct"] == TASK.check_answer(problem[0], r.chosen.meta["answer"])


def test_beam_search_max_steps_one_finishes_every_beam_after_one_step(tiny_model):
    model, tok = tiny_model
    problem = TASK.sample(seed=0, size=1, count=1)
    (r,) = beam_search(ScriptedText(model, tok, TASK, FMT, temperature=1.0), _step_scores, problem, beam_width=2,
                       expand=2, max_steps=1)
    assert [[s.action for s in c.steps] for c in r.candidates] == [["1"], ["2"]]
    assert r.samples == 2 + 2


@pytest.mark.parametrize("how", ["min", "last"])
def test_beam_search_with_real_models_keeps_its_limits(tiny_model, tiny_prm, char_tok, how):
    problems = TASK.sample(seed=2, size=1, count=2)
    policy, scorer = _policy(tiny_model, max_new_tokens=3), prm_scorer(tiny_prm, char_tok, FMT)
    kwargs = dict(beam_width=2, expand=2, max_steps=2, how=how, seed=0)
    results = beam_search(policy, scorer, problems, **kwargs)
    again = beam_search(policy, scorer, problems, **kwargs)
    assert len(results) == 2
    for r, r2 in zip(results, again):
        assert 1 <= len(r.candidates) <= 2
        scores = [c.meta["score"] for c in r.candidates]
        assert scores == sorted(scores, reverse=True) and r.chosen is r.candidates[0]
        assert all(len(c.steps) <= 2 for c in r.candidates)
        # at most: 2 samples in round 1, 2 beams x 2 in round 2, one greedy answer per finished beam
        assert len(r.candidates) < r.samples <= 2 + 4 + 2
        assert [c.to_dict() for c in r.candidates] == [c.to_dict() for c in r2.candidates]


def test_beam_search_rejects_empty_budgets(tiny_model):
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(_policy(tiny_model), _step_scores, [], beam_width=0, expand=1, max_steps=1)


# 27 + 15 in state mode: the policy proposes actions for a rendered column state; the scorer scores each
# action in its state (as a PRM reading the "step" view would)
STATE_SCRIPT = {"7+5+0": ["2,1", "3,1"], "2+1+1": ["4,0", "4,0"]}
STATE_SCORES = {("7+5+0", "2,1"): 0.9, ("7+5+0", "3,1"): 0.4, ("7+5+0", "x"): 0.95, ("2+1+1", "4,0"): 0.8}


@dataclass
class ScriptedStates(LMPolicy):
    script: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)

    def propose(self, states, n=1):
        self.seen.extend(states)
        return [self.script[s][:n] for s in states]


def _state_scores(trajectories):
    return [[STATE_SCORES[(s.state, s.action)] for s in t.steps] for t in trajectories]


def _state_policy(tiny_model, script=STATE_SCRIPT, **kw):
    model, tok = tiny_model
    return ScriptedStates(model, tok, AdditionTask(index_hints=False), FMT, mode="state", temperature=1.0,
                          script=script, **kw)


def test_state_beam_search_hand_traced(tiny_model):
    policy = _state_policy(tiny_model)
    (r,) = beam_search(policy, _state_scores, [AdditionProblem(27, 15)], beam_width=2, expand=2)
    # round 1: "2,1" (0.9) and "3,1" (0.4) both live; round 2: each proposes "4,0" twice (one proposal),
    # both finish: 42 with min 0.8, 43 with min 0.4
    assert policy.seen == ["7+5+0", "2+1+1", "2+1+1"]
    assert [[(s.state, s.action) for s in c.steps] for c in r.candidates] == [
        [("7+5+0", "2,1"), ("2+1+1", "4,0")], [("7+5+0", "3,1"), ("2+1+1", "4,0")]]
    assert [c.meta["score"] for c in r.candidates] == [0.8, 0.4] and r.candidates[0].meta["step_scores"] == [0.9, 0.8]
    assert [(c.meta["answer"], c.meta["correct"]) for c in r.candidates] == [("42", True), ("43", False)]
    assert r.chosen is r.candidates[0] and r.samples == 2 + 2 * 2


def test_state_beam_search_a_failed_action_finishes_its_beam_unanswered(tiny_model):
    policy = _state_policy(tiny_model, {**STATE_SCRIPT, "7+5+0": ["x", "2,1"]})
    (r,) = beam_search(policy, _state_scores, [AdditionProblem(27, 15)], beam_width=2, expand=2)
    # the scorer likes the unexecutable "x" best (0.95): it finishes at once with no answer and takes one of
    # the two slots; "2,1" goes on alone and finishes with 42 (min 0.8)
    assert [(c.meta["answer"], c.meta["correct"], c.meta["score"]) for c in r.candidates] == [
        (None, False, 0.95), ("42", True, 0.8)]
    assert r.chosen.meta["correct"] is False and r.samples == 2 + 2


def test_state_beam_search_out_of_rounds_finishes_unanswered(tiny_model):
    (r,) = beam_search(_state_policy(tiny_model), _state_scores, [AdditionProblem(27, 15)], beam_width=1, expand=2,
                       max_steps=1)
    assert [(c.meta["answer"], c.meta["score"]) for c in r.candidates] == [(None, 0.9)] and r.samples == 2


@pytest.mark.parametrize("layout", ["trace", "step"])
def test_state_beam_search_with_a_real_prm_in_either_layout(tiny_model, tiny_prm, char_tok, layout):
    policy = _policy(tiny_model, task=AdditionTask(index_hints=False), mode="state")
    (r,) = beam_search(policy, prm_scorer(tiny_prm, char_tok, FMT, layout), [AdditionProblem(27, 15)], beam_width=2,
                       expand=2, max_steps=3, seed=0)
    assert 1 <= len(r.candidates) <= 2
    assert all(len(c.meta["step_scores"]) == len(c.steps) for c in r.candidates)
