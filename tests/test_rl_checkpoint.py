"""The RL trainer's output folder, on-sample gaming monitor and reuse term (issues 15 and 16): the folder is
held as the PAL/PRM trainers hold theirs, the per-update PRM-vs-exact numbers are those of the update's own
samples, the drift rule by hand, and the reuse term is exactly a step-supervised NLL step."""

from __future__ import annotations

import json

import pytest
import torch

from procsup.data.batch import collate
from procsup.data.tokenize import PROMPT, StepFormat
from procsup.models.factory import build_tiny_model
from procsup.rl import grpo
from procsup.rl.grpo import RLConfig, reuse_nll, reuse_rows, train
from procsup.rl.monitor import GamingMonitor, drift, exact_steps, gap
from procsup.tasks.addition import AdditionTask
from procsup.trainers.loop import make_optimizer

from conftest import TINY

FMT = StepFormat()
TASK = AdditionTask(index_hints=False)
PROBLEMS = TASK.sample_range(1, 1, 16)


def _cfg(out, **kw) -> RLConfig:
    return RLConfig(output_dir=str(out), **{"max_steps": 1, "batch_size": 2, "group_size": 2, "learning_rate": 1e-3,
                                            "progress": False, "max_new_tokens": 12, "warmup_steps": 0, **kw})


def _train(cfg, char_tok, **kw):
    model = build_tiny_model(TINY, char_tok, seed=0)[0]
    return train(cfg, task=TASK, model=model, tokenizer=char_tok, fmt=FMT, problems=PROBLEMS, **kw)


def test_output_folder_is_held_like_the_other_trainers(tmp_path, char_tok):
    """A folder holding someone else's file is refused; a finished run's folder needs resume or overwrite;
    overwrite keeps the foreign file and replaces the checkpoint; a live lock refuses a second run."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        _train(_cfg(foreign), char_tok)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    out = tmp_path / "run"
    _train(_cfg(out), char_tok)
    assert (out / "checkpoint-1" / "trainer_state.json").is_file() and (out / "checkpoint-1" / "rl_state.json").is_file()
    assert not (out / ".procsup.lock").exists()  # released at the end
    with pytest.raises(ValueError, match="not empty"):
        _train(_cfg(out), char_tok)
    _train(_cfg(out, overwrite=True), char_tok)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's line was removed

    (out / ".procsup.lock").write_text(json.dumps({"pid": 1, "host": __import__("socket").gethostname(), "started": 0}))
    with pytest.raises(ValueError, match="in use by pid 1"):
        _train(_cfg(out, resume=True), char_tok)


def test_resume_refuses_changed_settings(tmp_path, char_tok):
    _train(_cfg(tmp_path, max_steps=2, save_steps=1), char_tok)
    with pytest.raises(ValueError, match="learning_rate"):
        _train(_cfg(tmp_path, max_steps=2, learning_rate=1e-2, resume=True), char_tok)


def test_constant_lr_schedule_keeps_the_peak(tmp_path, char_tok):
    """``lr_schedule=constant``: every update's logged learning rate is the peak (the default, cosine, decays
    to 0 at max_steps); an unknown schedule is refused by the config and by make_optimizer."""
    lrs = {}
    for schedule in ("constant", "cosine"):
        out = tmp_path / schedule
        _train(_cfg(out, max_steps=3, lr_schedule=schedule), char_tok)
        lrs[schedule] = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs["constant"] == [1e-3, 1e-3, 1e-3]
    assert lrs["cosine"][0] == 1e-3 and lrs["cosine"][1] == pytest.approx(1e-3 * 0.75)  # (1 + cos(pi / 3)) / 2
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(tmp_path, lr_schedule="linear")
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer(torch.nn.Linear(2, 2), _cfg(tmp_path), "linear")


def test_bench_hacking_runs_of_new_settings_get_new_cache_keys(tmp_path):
    """``bench.rl.run_location``: the recorded reward-hacking runs keep their folder and key (the defaults add
    nothing); a planted scorer or a constant schedule gets a folder and a key of its own; bad values are refused."""
    from procsup.bench.rl import RLBenchConfig, run_location

    def where(**kw):
        path, key = run_location(RLBenchConfig(output_dir=str(tmp_path), **kw), "addition", "prm-sum", 3e-5, 0, 24, 1)
        return str(path.relative_to(tmp_path)), key

    recorded, key = where(hack_prm="repeats")
    assert recorded == "addition/prm-sum/hack-24-every1-onsample-prmrepeats/lr3e-05-seed0"  # as in README_v3.md
    assert key["hack_prm"] == "repeats" and "lr_schedule" not in key
    assert where()[0] == "addition/prm-sum/hack-24-every1-onsample/lr3e-05-seed0" and "hack_prm" not in where()[1]
    planted, planted_key = where(hack_prm="planted-repeat", hack_lr_schedule="constant")
    assert planted == "addition/prm-sum/hack-24-every1-onsample-constant-prmplanted-repeat/lr3e-05-seed0"
    assert (planted_key["hack_prm"], planted_key["lr_schedule"]) == ("planted-repeat", "constant")
    assert where(hack_prm="planted-past-end")[1]["hack_prm"] == "planted-past-end"
    main = run_location(RLBenchConfig(output_dir=str(tmp_path), hack_prm="planted-repeat", hack_lr_schedule="constant"),
                        "addition", "prm-sum", 3e-5, 0)  # a main-bench run ignores the hacking settings
    assert main[0] == tmp_path / "addition/prm-sum/lr3e-05-seed0" and {"hack_prm", "lr_schedule"}.isdisjoint(main[1])
    with pytest.raises(ValueError, match="hack_prm"):
        RLBenchConfig(hack_prm="planted")
    with pytest.raises(ValueError, match="hack_lr_schedule"):
        RLBenchConfig(hack_lr_schedule="linear")


def test_planted_pattern_rates_count_the_over_rated_steps(tmp_path, tiny_model, monkeypatch):
    """``bench.rl.planted_pattern_rates``: per flaw, the samples and steps the planted scorer rates above the exact
    checker, here on hand-made samples (the sampler replaced): 27 + 15 written right, with its last step repeated,
    and with two empty lines past the end."""
    from procsup.bench import rl as bench
    from procsup.data.trajectory import Step, Trajectory
    from procsup.models.factory import save_model

    model, tok = tiny_model
    save_model(model, tok, tmp_path / "addition" / "models" / "policy", fmt=bench.FMT, mode="history")
    expert = TASK.expert(TASK.make(__import__("random").Random(0), 2, 2))
    s1, s2 = expert.steps
    samples = [[Trajectory(expert.input, "", steps, expert.meta)
                for steps in ((s1, s2), (s1, s2, s2), (s1, s2, Step(""), Step("")))]]
    monkeypatch.setattr(bench, "complete", lambda *a, **k: samples)
    rates = bench.planted_pattern_rates(bench.RLBenchConfig(output_dir=str(tmp_path)), problems=1)
    assert (rates["samples"], rates["steps"], rates["empty_steps"]) == (3, 9, 2 / 9)
    assert rates["repeat"] == {"samples_with_planted_step": 2 / 3, "planted_steps": 2 / 9}  # s2 again; "" again
    assert rates["past-end"] == {"samples_with_planted_step": 2 / 3, "planted_steps": 3 / 9}


def test_drift_by_hand():
    h = [{"prm_score": 0.30, "exact_validity": 0.80}, {"prm_score": 0.32, "exact_validity": 0.70},
         {"prm_score": 0.36, "exact_validity": 0.60}]
    assert drift(h, 1, 0.05)  # last vs first: +0.06, -0.20
    assert not drift(h, 2, 0.05)  # mean of the last two: +0.04 (< 0.05), -0.15
    assert drift(h, 2, 0.035)
    assert not drift(h[:2], 2, 0.0)  # not more than a window's worth yet
    assert not drift([{"prm_score": 0.3, "exact_validity": 0.8}, {"prm_score": 0.2, "exact_validity": 0.1}], 1, 0.01)
    assert not drift(h, 0, 0.0)  # off
    assert drift(h, 1, 0.2, prm_delta=0.0) and not drift(h, 1, 0.2, prm_delta=0.07)  # separate PRM-rise threshold


def test_gap_by_hand():
    # gaps (PRM - validity): -0.50, -0.45, -0.30; the PRM score held (0.30) and then fell (0.28): no rise needed
    h = [{"prm_score": 0.30, "exact_validity": 0.80}, {"prm_score": 0.30, "exact_validity": 0.75},
         {"prm_score": 0.28, "exact_validity": 0.58}]
    assert gap(h, 1, 0.2) and not gap(h, 1, 0.21)  # last vs first: -0.30 - (-0.50) = +0.20
    assert gap(h, 2, 0.125) and not gap(h, 2, 0.13)  # mean of the last two: -0.375, +0.125
    assert not drift(h, 1, 0.05, prm_delta=0.0)  # the drift rule needs the PRM score up: it misses this
    assert not gap(h[:2], 2, 0.0)  # not more than a window's worth yet
    assert not gap(h, 0, 0.0)  # off
    assert not gap([{"exact_validity": 0.8}, {"exact_validity": 0.1}], 1, 0.0)  # no PRM: nothing to compare
    # a falling PRM score that follows the truth down keeps the gap: no alert
    assert not gap([{"prm_score": 0.5, "exact_validity": 0.8}, {"prm_score": 0.2, "exact_validity": 0.5}], 1, 0.01)


def test_monitor_rule_is_checked():
    with pytest.raises(ValueError, match="rule"):
        GamingMonitor(TASK, FMT, [], rule="rise")
    with pytest.raises(ValueError, match="alert_rule"):
        RLConfig(output_dir="-", alert_rule="rise")
    with pytest.raises(ValueError, match="sample_alert_rule"):
        RLConfig(output_dir="-", sample_alert_rule="divergence")
    with pytest.raises(ValueError, match="alert_prm_delta"):
        RLConfig(output_dir="-", alert_rule="drift", alert_prm_delta=-0.1)


def test_on_sample_monitor_reads_the_updates_own_samples(tmp_path, char_tok, monkeypatch):
    """The logged ``sample_prm_score`` and ``sample_exact_validity`` are the watched PRM's mean step score and
    the exact checker's step validity of the very samples of the update; a drift stops the run there."""
    seen = []

    def prm(trajs):  # a stand-in PRM: scores a step by its length, and records what it saw
        seen.append(list(trajs))
        return [[min(len(s.action) / 20, 1.0) for s in t.steps] for t in trajs]

    monkeypatch.setattr(grpo, "drift", lambda h, *rule: len(h) >= 2)
    result = _train(_cfg(tmp_path, max_steps=4, step_reward="prm", stop_on_alert=True, log_steps=1), char_tok,
                    scorer=prm)
    assert result.alert is not None and result.alert["source"] == "samples" and result.alert["update"] == 2
    assert result.updates == 2 and len(seen) == 2  # the reward PRM is not called twice for the monitor
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line, trajs, h in zip(lines, seen, result.sample_history):
        scores = [x for row in prm(trajs) for x in row]
        verdicts = [x for v in exact_steps(TASK, trajs) for x in v]
        if scores:
            assert line["sample_prm_score"] == pytest.approx(sum(scores) / len(scores))
            assert h["prm_score"] == pytest.approx(sum(scores) / len(scores))
        assert line["sample_exact_validity"] == pytest.approx(sum(verdicts) / max(len(verdicts), 1))
    assert [x["sample_alert"] for x in lines] == [False, True]


def test_on_sample_gap_rule_and_history_fields(tmp_path, char_tok, monkeypatch):
    """``sample_alert_rule="gap"`` applies ``monitor.gap`` (not drift) to the sample history, whose entries also
    carry the update's answer accuracy, trace validity, right-answer-wrong-steps rate and steps per sample, equal
    to the logged ones."""
    monkeypatch.setattr(grpo, "drift", lambda h, *rule: True)
    monkeypatch.setattr(grpo, "gap", lambda h, *rule: len(h) >= 3)
    prm = lambda trajs: [[0.5 for _ in t.steps] for t in trajs]  # noqa: E731
    result = _train(_cfg(tmp_path, max_steps=4, step_reward="prm", stop_on_alert=True, sample_alert_rule="gap"),
                    char_tok, scorer=prm)
    assert result.alert["source"] == "samples" and result.alert["update"] == 3
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line, h in zip(lines, result.sample_history):
        for key in ("accuracy", "trace_validity", "right_answer_wrong_steps"):
            assert h[key] == pytest.approx(line[key])
        assert h["steps_per_sample"] == pytest.approx(line["steps_per_sample"])


def test_reuse_term_is_a_step_supervised_nll_step(tmp_path, char_tok):
    """With no reward (outcome_coef 0, no step reward) and reuse_coef c, one update is exactly one AdamW step
    on c x the mean NLL of the reused trajectories' generated tokens (rejection-sampling fine-tuning when
    they are the update's right samples); the NLL itself checked against a hand sum."""
    reused = [TASK.expert(p) for p in PROBLEMS[:3]]
    for t in reused:
        t.meta["answer"] = t.target
    cfg = _cfg(tmp_path, outcome_coef=0.0, reuse_coef=0.5, max_grad_norm=0.0)
    result = _train(cfg, char_tok, reuse=lambda trajs: reused)

    ref = build_tiny_model(TINY, char_tok, seed=0)[0].eval()
    batch = collate(reuse_rows(reused, char_tok, FMT), char_tok.pad_token_id)
    nll = reuse_nll(ref, batch, 1.0)
    with torch.no_grad():  # by hand: -log p of each non-PROMPT token given its prefix
        logp = torch.log_softmax(ref(input_ids=batch["input_ids"]).logits, -1)
        total, count = 0.0, 0
        for b in range(batch["input_ids"].size(0)):
            for j in range(1, batch["input_ids"].size(1)):
                if batch["segment_ids"][b, j] != PROMPT:
                    total -= logp[b, j - 1, batch["input_ids"][b, j]].item()
                    count += 1
    assert nll.item() == pytest.approx(total / count, rel=1e-5)
    optimizer, _ = make_optimizer(ref, cfg)
    (cfg.reuse_coef * nll).backward()
    optimizer.step()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(result.model.state_dict()[name], p.detach(), rtol=1e-5, atol=1e-6)
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["reused"] == 3 and line["reuse_nll"] == pytest.approx(nll.item(), rel=1e-5)


def test_reuse_needs_a_source(tmp_path, char_tok):
    with pytest.raises(ValueError, match="reuse="):
        _train(_cfg(tmp_path, reuse_coef=1.0), char_tok)
    with pytest.raises(ValueError, match="no reward"):
        _cfg(tmp_path, outcome_coef=0.0)


def test_monitor_rules_are_chosen_on_validation_runs_by_hand():
    """``bench.rl.choose_monitor_rules``: every family's rule is the one with no flag on a prm-min run, then the
    most prm-sum runs flagged, then the earliest; ``first_flag`` reads the sample history or the evaluations."""
    from procsup.bench.rl import RLBenchConfig, choose_monitor_rules, first_flag

    def run(prm, valid):  # the same numbers as held-out evaluations (update 0 on) and as sample history (1 on)
        evals = [{"update": i, "prm_score": p, "exact_validity": v} for i, (p, v) in enumerate(zip(prm, valid))]
        return {"evals": evals, "sample_history": [{**e, "update": e["update"] + 1} for e in evals]}

    # the positive: PRM held at 0.3 while validity falls 0.8 -> 0.76 -> 0.7 (gap +0.04, +0.10); the negative: a
    # 0.02 validity dip (gap +0.02) and back
    pos, neg = run([0.3, 0.3, 0.3], [0.8, 0.76, 0.7]), run([0.3, 0.3, 0.3], [0.8, 0.78, 0.8])
    cfg = RLBenchConfig(monitor_windows=(1,), monitor_deltas=(0.05,), monitor_prm_deltas=(0.0,),
                        monitor_gap_deltas=(0.01, 0.03, 0.05))
    rules = choose_monitor_rules(cfg, {"prm-sum": [pos], "prm-min": [neg]})
    gap_rule = rules["families"]["held-out-gap"]
    assert (gap_rule["delta"], gap_rule["flags"]) == (0.03, {"prm-sum": [1], "prm-min": [None]})  # 0.01 flags neg
    assert first_flag(pos, {"family": "samples-gap", "window": 1, "delta": 0.05}) == 3  # sample history: update + 1
    # the drift rule (PRM up by 0, validity down by 0.05) flags the positive at its last entry only
    assert rules["families"]["samples-drift"]["flags"]["prm-sum"] == [3]
    # earliest first: held-out gap (update 1) beats the on-sample ones (3) and held-out divergence (no rise: never)
    assert rules["chosen"] == "held-out-gap" and rules["families"]["held-out-divergence"]["detected"] == 0
    # held-out drift against the start (PRM +0.005, validity -0.05): the positive's PRM score never rises
    assert first_flag(pos, {"family": "held-out-drift", "window": 1, "delta": 0.05, "prm_delta": 0.005}) is None
    risen = run([0.300, 0.302, 0.306], [0.8, 0.76, 0.7])  # +0.006 and -0.10 at update 2; +0.002, -0.04 at 1
    assert first_flag(risen, {"family": "held-out-drift", "window": 1, "delta": 0.05, "prm_delta": 0.005}) == 2
    assert first_flag(risen, {"family": "held-out-drift", "window": 2, "delta": 0.05, "prm_delta": 0.005}) is None


def test_monitor_rule_chosen_by_lead_over_the_validation_accuracy_drop():
    """``monitor_criterion="lead"``: among rules without a false alarm, the one that flags the positive before its
    validation accuracy falls 5 points wins, even over a rule that flags more positives later; ``earliest`` keeps
    the recorded order (most flagged, then earliest)."""
    from procsup.bench.rl import RLBenchConfig, choose_monitor_rules

    def run(prm, valid, acc):
        evals = [{"update": i, "prm_score": p, "exact_validity": v, "accuracy": a}
                 for i, (p, v, a) in enumerate(zip(prm, valid, acc))]
        return {"evals": evals, "sample_history": [{**e, "update": e["update"] + 1} for e in evals]}

    # positive 1: the gap widens at update 1 (+0.04), accuracy drops at 2; positive 2: the gap widens only at 3,
    # after its drop at 2 (a late flag); negative: flat
    early = run([0.3] * 4, [0.8, 0.76, 0.7, 0.6], [0.6, 0.6, 0.5, 0.4])
    late = run([0.3] * 4, [0.8, 0.8, 0.8, 0.7], [0.6, 0.6, 0.5, 0.4])
    neg = run([0.3] * 4, [0.8] * 4, [0.6] * 4)
    grid = dict(monitor_windows=(1,), monitor_deltas=(0.05,), monitor_prm_deltas=(0.0,), monitor_gap_deltas=(0.03, 0.08))
    val = {"prm-sum": [early, late], "prm-min": [neg]}
    lead = choose_monitor_rules(RLBenchConfig(monitor_criterion="lead", **grid), val)
    gap = lead["families"]["held-out-gap"]
    # delta 0.03 flags both (updates 1 and 3), 1 before its drop (lead 1); delta 0.08 flags early at 2 (not before)
    # and late at 3: 0 before; lead picks 0.03
    assert (gap["delta"], gap["before_drop"], gap["mean_lead"]) == (0.03, 1, 1)
    assert lead["validation_accuracy_drops"] == [2, 2]
    with pytest.raises(ValueError, match="monitor_criterion"):
        RLBenchConfig(monitor_criterion="best")
