"""The RL trainer end to end on tiny models: the tokens trained on are the tokens sampled, a resumed run
equals an uninterrupted one, RL raises accuracy on a trivial task (and fails with the advantage's sign
flipped), and the gaming monitor's numbers, alert and stop."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from procsup.data.batch import collate
from procsup.data.tokenize import PROMPT, StepFormat, tokenize_many
from procsup.data.trajectory import Step, Trajectory
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rl import grpo
from procsup.rl.grpo import RLConfig, token_logps, trace_rows, train
from procsup.rl.monitor import GamingMonitor, divergence, trace_metrics
from procsup.rollout import LMPolicy, complete, start
from procsup.rollout.generate import seeded
from procsup.scorers import exact_scorer
from procsup.tasks.addition import AdditionTask
from procsup.trainers.pal import PALConfig
from procsup.trainers.pal import train as pal_train

from conftest import TINY

FMT = StepFormat()
TASK = AdditionTask(index_hints=False)


@pytest.fixture(scope="module")
def weak_policy(tmp_path_factory):
    """A tiny history-mode policy fitted for a few steps on 1-digit addition: it writes well-formed traces,
    right about a third of the time (greedy), and less when sampled."""
    torch.manual_seed(0)
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                                  max_positions=128), seed=0)
    problems = TASK.sample_range(0, 1, 200)
    cfg = PALConfig(output_dir=str(tmp_path_factory.mktemp("pal") / "run"), mode="history", max_steps=200, batch_size=32,
                    learning_rate=1e-2, warmup_steps=5, progress=False, save_total_limit=1)
    model = pal_train(cfg, model=model, tokenizer=tok, trajectories=[TASK.expert(p) for p in problems]).model
    return model, tok


def _accuracy(model, tok, problems) -> float:
    return GamingMonitor(TASK, FMT, problems).evaluate(model, tok, update=0, samples=0)["accuracy"]


def test_trained_tokens_are_the_sampled_tokens(weak_policy):
    """Re-tokenizing the parsed traces (trace_rows) gives back exactly the ids the policy sampled, and the
    loss mask covers exactly those ids (and the EOS of an answered trace); the log-probs trained on are those
    of a forward pass over prompt + sampled ids."""
    model, tok = weak_policy
    problems = TASK.sample(3, 2, 6)
    policy = LMPolicy(model, tok, TASK, FMT, mode="history", temperature=1.5, max_new_tokens=14)
    trajs = [t for g in complete(policy, start(TASK, problems), n=8, seed=11) for t in g]
    # the same call's raw ids: the prompts and budget complete() uses, under the same seed
    prompts = [list(r.input_ids) for r in tokenize_many(start(TASK, problems), tok, FMT, "steps")]
    with seeded(11, policy.device):
        raw = [ids for row in policy.generate(prompts, 8, 14) for ids in row]
    rows, kept, cut = trace_rows(trajs, tok, FMT)
    answered = [t.meta["answer"] is not None for t in trajs]
    assert any(answered) and not all(answered) and any(cut)  # both layouts and a cut last step are exercised
    assert sum(kept) > len(kept) // 2
    batch = collate(rows, tok.pad_token_id)
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"], 1.5)  # (B, T - 1)
    for i, (row, ids) in enumerate(zip(rows, raw)):
        gen = [x for x, s in zip(row.input_ids, row.segment_ids) if s != PROMPT]
        n_prompt = len(row.input_ids) - len(gen)
        assert list(row.input_ids[:n_prompt]) == prompts[i // 8]
        trained = gen[:-1] if answered[i] or cut[i] else gen  # EOS (answered) or the unsampled separator
        if not kept[i]:  # dropped only when the parsed trace is not what was written
            assert trained != ids
            continue
        assert trained == ids, (i, tok.decode(gen), tok.decode(ids))
        if answered[i]:
            assert gen[-1] == tok.eos_token_id
        full = torch.tensor([prompts[i // 8] + ids])
        with torch.no_grad():
            ref = torch.log_softmax(model(input_ids=full).logits[0, :-1] / 1.5, -1)
        want = ref[torch.arange(n_prompt - 1, full.size(1) - 1), torch.tensor(ids, dtype=torch.long)]
        torch.testing.assert_close(logps[i, n_prompt - 1 : n_prompt - 1 + len(ids)], want, rtol=1e-4, atol=1e-5)


def test_trace_rows_drop_what_was_not_generated(char_tok):
    """A sample whose parsed trace does not give back its generated token count is not trained on."""
    traj = Trajectory("1+2 | 1,2", "3", (Step("1+2+0=3,0"),), {"answer": "3", "tokens": 99})
    _, kept, _ = trace_rows([traj], char_tok, FMT)
    assert kept == [False]
    ok = Trajectory("1+2 | 1,2", "3", (Step("1+2+0=3,0"),), {"answer": "3", "tokens": len("1+2+0=3,0\nA:3")})
    assert trace_rows([ok], char_tok, FMT)[1] == [True]


def _run(tmp, model, tok, problems, eval_problems=None, **kw) -> grpo.RLResult:
    cfg = RLConfig(output_dir=str(tmp), **{"max_steps": 4, "batch_size": 4, "group_size": 4, "learning_rate": 1e-3,
                                           "progress": False, "seed": 3, "max_new_tokens": 16, **kw})
    return train(cfg, task=TASK, scorer=exact_scorer(TASK, "history"), model=model, tokenizer=tok, fmt=FMT,
                 problems=problems, eval_problems=eval_problems)


def _copy(model):
    fresh = type(model)(model.config)
    fresh.load_state_dict(model.state_dict())
    return fresh


def test_resume_equals_an_uninterrupted_run(weak_policy, tmp_path):
    """Killed in update 3 of 4 (after the checkpoint of update 2) and resumed: the same weights, bit for bit,
    the same sample count and the same last metrics as a run never interrupted (clipping, minibatches and
    the KL to the starting policy all on)."""
    model, tok = weak_policy
    problems = TASK.sample_range(1, 1, 40)
    kw = dict(step_reward="exact", credit="sum", outcome_coef=0.5, kl_coef=0.1, ppo_epochs=2, minibatches=2)
    whole = _run(tmp_path / "whole", _copy(model), tok, problems, **kw)
    first = RLConfig(output_dir=str(tmp_path / "cut"), max_steps=4, batch_size=4, group_size=4, learning_rate=1e-3,
                     progress=False, seed=3, max_new_tokens=16, save_steps=2, **kw)
    with pytest.raises(KillAfter.Killed):
        train(first, task=TASK, scorer=KillAfter(2).scorer, model=_copy(model), tokenizer=tok, fmt=FMT, problems=problems)
    resumed = _run(tmp_path / "cut", _copy(model), tok, problems, resume=True, **kw)
    assert resumed.updates == 2 and resumed.samples == whole.samples
    a = load_file(tmp_path / "whole" / "checkpoint-4" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoint-4" / "model.safetensors")
    start_w = model.state_dict()
    assert any(not torch.equal(a[k], start_w[k]) for k in a)  # it did train
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final_metrics == {**whole.final_metrics, "seconds": resumed.final_metrics["seconds"]}


class KillAfter:
    """An exact scorer that raises on its (n + 1)-th call: the run dies in update n + 1, after the checkpoint
    of update n."""

    class Killed(Exception):
        pass

    def __init__(self, n: int) -> None:
        self.n, self.calls, self.exact = n, 0, exact_scorer(TASK, "history")

    def scorer(self, trajs):
        self.calls += 1
        if self.calls > self.n:
            raise KillAfter.Killed
        return self.exact(trajs)


def _sampled_accuracy(model, tok, problems) -> float:
    policy = LMPolicy(model, tok, TASK, FMT, mode="history", temperature=1.0, max_new_tokens=16)
    return sum(t.meta["correct"] for g in complete(policy, start(TASK, problems), n=32, seed=0) for t in g) / (32 * len(problems))


@pytest.mark.parametrize("flip", [False, True])
def test_rl_raises_accuracy_and_a_flipped_sign_does_not(weak_policy, tmp_path, monkeypatch, flip):
    """A trivial task: outcome GRPO on 8 fixed 1-digit additions (every update samples all 8, G = 8), from
    a weak policy. The share of right samples (32 per problem, T = 1) rises by a margin in 20 updates; with
    the advantages' sign flipped (a broken loss) it falls instead."""
    model, tok = _copy(weak_policy[0]), weak_policy[1]
    problems = TASK.sample_range(5, 1, 8)
    before = _sampled_accuracy(model, tok, problems)
    if flip:
        original = grpo.token_advantages
        monkeypatch.setattr(grpo, "token_advantages", lambda *a: (lambda adv, p: (-adv, p))(*original(*a)))
    result = _run(tmp_path, model, tok, problems, max_steps=20, batch_size=8, group_size=8, learning_rate=1e-3)
    after = _sampled_accuracy(result.model, tok, problems)
    print(f"sampled accuracy {before:.3f} -> {after:.3f} (flip={flip})")
    if flip:
        assert after < before - 0.1
    else:
        assert after > before + 0.2


def _traj(steps, answer, correct):
    return Trajectory("x", answer or "", tuple(Step(s) for s in steps),
                      {"a": 3, "b": 4, "answer": answer, "correct": correct})


def test_monitor_numbers_by_hand():
    # 3 + 4: the expert writes one step, "3+4+0=7,0"
    trajs = [_traj(["3+4+0=7,0"], "7", True), _traj(["3+4+0=8,0"], "7", True), _traj(["3+4+0=7,0", "x"], "9", False)]
    m = trace_metrics(TASK, trajs, [[0.9], [0.8], [0.7, 0.6]])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["exact_validity"] == pytest.approx(2 / 4)  # steps: right; wrong; right, beyond the expert's
    assert m["trace_validity"] == pytest.approx(1 / 3)
    assert m["right_answer_wrong_steps"] == pytest.approx(1 / 3)
    assert m["steps_per_trace"] == pytest.approx(4 / 3)
    assert m["prm_score"] == pytest.approx(0.75)


def test_divergence_over_a_window():
    h = [{"prm_score": 0.5, "exact_validity": 0.9}, {"prm_score": 0.6, "exact_validity": 0.9},
         {"prm_score": 0.7, "exact_validity": 0.8}]
    assert divergence(h, 2, 0.05)  # +0.2 PRM, -0.1 validity over 2 evaluations
    assert not divergence(h, 1, 0.15)  # +0.1, -0.1 over 1: below 0.15
    assert not divergence(h[:2], 2, 0.05)  # not a window's worth of history yet
    assert not divergence([{"exact_validity": 1.0}] * 4, 1, 0.0)  # no PRM: nothing to compare


def test_monitor_alert_stops_the_run(tmp_path, char_tok, monkeypatch):
    monkeypatch.setattr("procsup.rl.monitor.divergence", lambda *a: True)
    problems = TASK.sample_range(1, 2, 40)
    result = _run(tmp_path, build_tiny_model(TINY, char_tok, seed=1)[0], char_tok, problems, problems[:4], max_steps=6,
                  eval_steps=2, stop_on_alert=True)
    assert result.alert is not None and result.alert["update"] == 2
    assert result.updates == 2
    assert (tmp_path / "checkpoint-2" / "rl_state.json").is_file()
    assert [e["update"] for e in result.evals] == [0, 2]
    assert (tmp_path / "monitor.jsonl").read_text().count("\n") == 2


def test_rl_with_the_lora_option_trains_the_adapters_and_saves_a_plain_model(weak_policy, tmp_path):
    """``lora.r > 0`` through RLConfig (the trainers' shared option): sampling, the clipped loss and the KL to
    the starting policy run on the adapted model, only the adapters train, and the checkpoint is a plain model
    whose changed tensors are the adapted projections."""
    pytest.importorskip("peft")
    from procsup.models.factory import load_model
    from procsup.models.lora import LoRAConfig

    model, tok = weak_policy
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    result = _run(tmp_path / "lora", _copy(model), tok, TASK.sample_range(0, 1, 8), lora=LoRAConfig(r=4, alpha=8),
                  kl_coef=0.1, learning_rate=1e-2)
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    loaded, _, saved = load_model(tmp_path / "lora" / "checkpoint-4")
    state = loaded.state_dict()
    assert saved.kind == "policy" and set(state) == set(start_state)
    changed = {k for k in start_state if not torch.equal(start_state[k], state[k])}
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")) for k in changed)
