"""rollout.complete: counts, determinism under a seed, KV reuse, both modes, the state loop by hand."""

from __future__ import annotations

import pytest
import torch

from procsup.data.tokenize import StepFormat
from procsup.rollout import LMPolicy, complete, generate, seeded, start
from procsup.tasks.addition import AdditionProblem, AdditionTask

TASK = AdditionTask()
STATE_TASK = AdditionTask(index_hints=False)


def _dicts(out):
    return [[t.to_dict() for t in ts] for ts in out]


@pytest.mark.parametrize("mode, task", [("history", TASK), ("state", STATE_TASK)])
@pytest.mark.parametrize("until", ["step", "answer"])
def test_complete_counts_and_seed(tiny_model, mode, task, until):
    model, tok = tiny_model
    policy = LMPolicy(model, tok, task, StepFormat(), mode=mode, temperature=1.0, max_new_tokens=6)
    prefixes = start(task, task.sample(seed=0, size=2, count=3))
    before = torch.get_rng_state()
    a = complete(policy, prefixes, 4, until, seed=7)
    assert torch.equal(before, torch.get_rng_state())  # the caller's random state is untouched
    assert [len(ts) for ts in a] == [4, 4, 4]
    assert _dicts(a) == _dicts(complete(policy, prefixes, 4, until, seed=7))
    assert _dicts(a) != _dicts(complete(policy, prefixes, 4, until, seed=8))
    for prefix, ts in zip(prefixes, a):
        problem = task.problem_of(prefix)
        for t in ts:
            assert t.input == prefix.input and t.meta["a"] == problem.a
            assert t.meta["correct"] == task.check_answer(problem, t.meta["answer"])
            if until == "step":  # one step more, or (history) the answer line and no step
                assert len(t.steps) == 1 or (mode == "history" and t.meta["finished"] and not t.steps)
                assert t.meta["samples"] == 1
            elif mode == "history":
                assert t.meta["samples"] == len(t.steps) + (t.meta["answer"] is not None)
            else:
                assert t.meta["samples"] == len(t.steps) and all(s.state for s in t.steps)


def test_kv_reuse_gives_the_same_samples(tiny_model, char_tok):
    model, tok = tiny_model
    prompts = [tok(x, add_special_tokens=False)["input_ids"] for x in ("12+34\n", "7+8\n", "123+4\n")]
    outs = []
    for kv in (True, False):
        with seeded(3):
            outs.append(generate(model, tok, prompts, n=5, max_new_tokens=10, temperature=1.0, kv_reuse=kv))
    assert outs[0] == outs[1]
    assert [len(row) for row in outs[0]] == [5, 5, 5]


def test_greedy_generation_is_the_argmax_continuation(tiny_model):
    model, tok = tiny_model
    prompt = tok("5+6\n", add_special_tokens=False)["input_ids"]
    (out,) = generate(model, tok, [prompt], max_new_tokens=5)
    ids = list(prompt)
    for _ in range(len(out[0])):  # teacher-forced argmax, one token at a time
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert out[0] == ids[len(prompt):]
    with pytest.raises(ValueError, match="greedy"):
        generate(model, tok, [prompt], n=2, max_new_tokens=5)


def test_history_prefixes_are_continued_from_their_steps(tiny_model):
    model, tok = tiny_model
    policy = LMPolicy(model, tok, TASK, StepFormat(), temperature=1.0, max_new_tokens=4)
    expert = TASK.expert(AdditionProblem(57, 68, hints=("k", "d")))
    prefix = type(expert)(expert.input, "", expert.steps[:1], expert.meta)
    (ts,) = complete(policy, [prefix], 3, "step", seed=0)
    assert all(t.steps[:1] == expert.steps[:1] for t in ts)


class Fixed:
    """A state-mode policy that always proposes the same actions, for the loop's bookkeeping."""

    mode, device = "state", "cpu"

    def __init__(self, actions, task=STATE_TASK, max_steps=None):
        self.actions, self.task, self.max_steps = actions, task, max_steps

    def propose(self, states, n=1):
        return [[self.actions.get(s, "x")] * n for s in states]


def test_state_loop_by_hand_budget_failure_and_replay():
    # 27 + 15: "7+5+0" -> "2,1", then "2+1+1" -> "4,0": answer 42
    right = Fixed({"7+5+0": "2,1", "2+1+1": "4,0"})
    (ts,) = complete(right, start(STATE_TASK, [AdditionProblem(27, 15)]), 2)
    ends = [(t.meta["answer"], t.meta["correct"], t.meta["finished"], t.meta["failed"]) for t in ts]
    assert ends == [("42", True, True, False)] * 2
    (cut,) = complete(right, start(STATE_TASK, [AdditionProblem(27, 15)]), 2, max_env_steps=3)
    assert [len(t.steps) for t in cut] == [2, 1] and cut[1].meta["answer"] is None  # the budget ran out
    (bad,) = complete(Fixed({}), start(STATE_TASK, [AdditionProblem(27, 15)]), 1)
    assert bad[0].meta["failed"] and [s.action for s in bad[0].steps] == ["x"]
    # a prefix is replayed by the executor: continuing after the first action reaches the same answer
    (more,) = complete(right, [ts[0].__class__(ts[0].input, "", ts[0].steps[:1], ts[0].meta)], 1, "step")
    assert more[0].meta["answer"] == "42" and [s.state for s in more[0].steps] == ["7+5+0", "2+1+1"]
    with pytest.raises(ValueError, match="state-mode"):
        complete(LMPolicy(None, None, TASK), start(TASK, [AdditionProblem(1, 2)]), max_env_steps=1)


def test_stop_strings_end_a_trace_and_are_cut_before_parsing(tiny_model):
    """A few-shot-prompted model writes the next example after its answer, or instead of one: with
    ``stop_strings`` generation is asked to stop there and nothing after it is read into the trace."""
    model, tok = tiny_model
    asked = []

    class Scripted(LMPolicy):
        text = ""

        def generate(self, prompts, n, max_new_tokens, stop_strings=None):
            asked.append(stop_strings)
            return [[tok(self.text, add_special_tokens=False)["input_ids"]] * n for _ in prompts]

    def run(text, stops=(), until="answer"):
        policy = Scripted(model, tok, TASK, StepFormat(), stop_strings=stops)
        policy.text = text
        return complete(policy, start(TASK, [AdditionProblem(57, 70)]), 1, until)[0][0]

    answered = "7,0\n2,1\n1\nA: 127\nQuestion: 3+4\n7,0\nA: 7\n"
    cut = run(answered, ("Question:",))
    assert asked == [["Question:"]]
    assert cut.target == "127" and cut.meta["correct"] and [s.action for s in cut.steps] == ["7,0", "2,1", "1"]
    unanswered = "7,0\nQuestion: 3+4\n7,0\nA: 7\n"  # the next example's steps and answer would be read as this one's
    plain = run(unanswered)
    assert plain.target == "7" and [s.action for s in plain.steps] == ["7,0", "Question: 3+4", "7,0"]
    cut = run(unanswered, ("Question:",))
    assert cut.meta["answer"] is None and [s.action for s in cut.steps] == ["7,0"]
    run(answered, ("Question:",), "step")
    assert asked[-1] == ["\n", "Question:"]
    with pytest.raises(ValueError, match="stop_strings"):
        LMPolicy(model, tok, TASK, stop_strings="Question:")
