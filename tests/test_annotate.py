"""Automatic step labels (issue 14): MC, first-error search and consensus against hand-computed labels and
rollout counts with a scripted policy; the append-only runner's sharding, torn-line repair and merge; a
SIGKILL/restart run equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from procsup.annotation import consensus, first_error_labels, label_quality, mc_labels
from procsup.annotation.answer_task import AnswerTask
from procsup.annotation.run import AnnotateConfig, chunks, merge_parts, part_path, read_done, shard
from procsup.data.trajectory import Step, Trajectory
from procsup.tasks.addition import AdditionTask

from conftest import wrong_digit_trace

TASK = AdditionTask(index_hints=False)


@dataclass
class PerfectPolicy:
    """A state-mode policy that always writes the right action: completions of a right prefix succeed, of
    a wrong one fail (addition cannot recover from a wrong digit)."""

    task: AdditionTask
    mode: str = "state"
    device: str = "cpu"
    max_steps: int | None = None
    calls: int = 0

    def propose(self, states, n=1):
        self.calls += 1
        out = []
        for s in states:
            x, y, c = (int(v) for v in s.split("+"))
            out.append([f"{(x + y + c) % 10},{(x + y + c) // 10}"] * n)
        return out


trace = wrong_digit_trace


def test_mc_labels_hand_computed():
    pol = PerfectPolicy(TASK)
    out = mc_labels(pol, [trace(12345, 11111, 3), trace(12345, 11111, None)], n=3, seed=0)
    assert out[0].labels == [True, True, False, False, False]
    note = out[0].meta["annotation"]
    assert note["successes"] == [3, 3, 0, 0, None]  # the last prefix is finished: its answer is checked
    assert note["rollouts"] == 4 * 3
    assert out[1].labels == [True] * 5 and out[1].meta["annotation"]["rollouts"] == 12
    soft = mc_labels(pol, [trace(12345, 11111, 3)], n=3, seed=0, soft=True)[0]
    assert soft.labels == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_first_error_search_hand_computed_and_reuses_rollouts():
    pol = PerfectPolicy(TASK)
    mid, last, right = first_error_labels(pol, [trace(12345, 11111, 3), trace(12345, 11111, 5), trace(12345, 11111, None)],
                                          k=2, seed=0)
    # error at 3 of 5: probe 2 (2 new completions succeed, they leave the trace at step 3), probe 3 (2 new, fail)
    assert mid.labels == [True, True, False, None, None]
    assert mid.meta["annotation"]["first_error"] == 3
    assert mid.meta["annotation"]["probes"] == [[2, 2, 2, 2], [3, 0, 2, 2]]
    assert mid.meta["annotation"]["rollouts"] == 4
    # error at the last step: the successes from prefix 2 pass through 3 and 4, so the search ends after one probe
    assert last.labels == [True, True, True, True, False]
    assert last.meta["annotation"]["rollouts"] == 2 and len(last.meta["annotation"]["probes"]) == 1
    # a right answer: no first error, no rollout
    assert right.labels == [True] * 5 and right.meta["annotation"] == {
        "method": "first-error", "k": 2, "first_error": None, "probes": [], "rollouts": 0, "policy_samples": 0}


def _lab(labels, actions=None):
    actions = actions or [f"a{i}" for i in range(len(labels))]
    return Trajectory("x", "y", tuple(Step(a, label=lab) for a, lab in zip(actions, labels)))


def test_consensus_by_step_and_by_trajectory():
    a = [_lab([True, True, False, False]), _lab([True, 0.9, None])]
    b = [_lab([True, False, False, None]), _lab([True, 0.8, None])]
    kept, report = consensus(a, b, "step")
    assert kept[0].labels == [True, None, False, None] and kept[1].labels == [True, True, None]
    assert (report.kept, report.dropped_disagree, report.dropped_missing, report.labelled_both) == (4, 1, 2, 5)
    kept, report = consensus(a, b, "trajectory")
    assert kept[0].labels == [None] * 4  # first errors at 3 and 2
    assert kept[1].labels == [True, True, None]  # neither has an error
    assert report.trajectories_kept == 1 and report.dropped_disagree == 4
    with pytest.raises(ValueError):
        consensus(a, [_lab([True, True, False, False], ["b0", "a1", "a2", "a3"]), b[1]])


def test_label_quality_hand_computed():
    exact = [[True, False, True], [True, True, True]]
    labelled = [_lab([True, False, False]), _lab([True, None, False])]
    q = label_quality(labelled, exact)
    assert q["step_accuracy"] == pytest.approx(3 / 5)
    assert q["step_accuracy_to_first_error"] == pytest.approx(3 / 4)  # units 1-2 of the first, the labelled ones of the second
    assert q["coverage"] == pytest.approx(5 / 6)
    assert q["first_error_accuracy"] == 0.5 and q["first_error_accuracy_wrong"] == 1.0
    assert q["wrong_precision"] == pytest.approx(1 / 3) and q["wrong_recall"] == 1.0


def test_answer_task_checks_the_file_targets():
    trajs = [Trajectory("q1", "7", (Step("s"),)), Trajectory("q2", "8", (Step("s"),))]
    task = AnswerTask(trajs)
    assert task.check_answer(task.problem_of(trajs[0]), " 7") and not task.check_answer("q2", "7")
    with pytest.raises(ValueError):
        AnswerTask([*trajs, Trajectory("q1", "9", (Step("s"),))])


def test_shards_cover_every_index_once():
    for count, world in ((10, 1), (10, 3), (2, 4)):
        parts = [shard(count, r, world) for r in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(count))
    assert chunks([1, 4, 7, 10, 13], 2) == [[1, 4], [7, 10], [13]]
    with pytest.raises(ValueError):
        shard(5, 2, 2)


def _rec(i):
    return {"input": f"x{i}", "target": "", "steps": [{"action": "a"}], "meta": {"annotation": {"index": i}}}


def test_read_done_cuts_a_torn_line_and_merge_orders_parts(tmp_path):
    out = tmp_path / "labels.jsonl"
    for rank in range(2):
        with part_path(out, rank, 2).open("wb") as f:
            for i in shard(5, rank, 2):
                f.write((json.dumps(_rec(i)) + "\n").encode())
    with part_path(out, 1, 2).open("ab") as f:
        f.write(b'{"input": "torn')  # a kill in mid-write
    assert sorted(read_done(part_path(out, 1, 2))) == [1, 3]
    assert part_path(out, 1, 2).read_bytes().endswith(b"\n")
    merged = merge_parts(out, 2, 5)
    assert [r["input"] for r in merged] == [f"x{i}" for i in range(5)]
    assert not part_path(out, 0, 2).exists() and len(out.read_text().splitlines()) == 5


def test_config_validation():
    with pytest.raises(ValueError):
        AnnotateConfig(output_file="o", method="nope", policy="p", task="addition")
    with pytest.raises(ValueError):
        AnnotateConfig(output_file="o", method="mc")  # no policy
    with pytest.raises(ValueError):
        AnnotateConfig(output_file="o", method="consensus", input_file="a")
    with pytest.raises(ValueError):
        AnnotateConfig(output_file="o", policy="p", task="addition", n=0)


RUN = """
import sys, json
from procsup.annotation.run import AnnotateConfig, main
from procsup.tasks.addition import AdditionTask
main(AnnotateConfig(**json.loads(sys.argv[1])), task=AdditionTask(index_hints=False))
"""


def test_sigkill_and_restart_write_what_an_uninterrupted_run_writes(tmp_path):
    from procsup.models.factory import TinyModelConfig, build_tiny_model, save_model
    from procsup.trainers.pal import PALConfig

    model, tok = build_tiny_model(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2), seed=0)
    policy = save_model(model, tok, tmp_path / "policy", fmt=PALConfig(output_dir="x").step_format, mode="state")
    # 1,200 problems in chunks of 2, each chunk fsynced (~0.3 s of writing, against a kill <= 30 ms after the first
    # chunk), so the kill lands mid-run; with 24 the child could finish inside the poll-and-sleep window on an idle
    # machine, and a CI run saw no kill at all
    base = {"policy": str(policy), "task": "addition", "index_hints": False, "method": "mc", "problems": 1200, "size": 3,
            "n": 2, "chunk_size": 2, "threads": 1, "progress": False, "seed": 3, "batch_size": 16}
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    def launch(out):
        return subprocess.Popen([sys.executable, "-c", RUN, json.dumps({**base, "output_file": str(out)})], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    import torch

    from procsup.annotation.run import main

    threads = torch.get_num_threads()
    whole = tmp_path / "whole.jsonl"  # the uninterrupted run, in this process
    main(AnnotateConfig(**base, output_file=str(whole)), task=AdditionTask(index_hints=False))
    torch.set_num_threads(threads)
    cut = tmp_path / "cut.jsonl"
    part = part_path(cut, 0, 1)
    rng = random.Random(0)
    kills = 0
    for _ in range(2):
        proc = launch(cut)
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline and not (part.exists() and part.stat().st_size):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
    assert kills >= 1
    if not cut.exists():
        assert launch(cut).wait(120) == 0
    assert cut.read_text() == whole.read_text()
    assert len(whole.read_text().splitlines()) == 1200


def test_two_shards_merged_equal_one_process(tmp_path):
    """Each of 2 ranks annotates its share into its part file; the merge equals a 1-process run (the scripted
    policy is deterministic, so chunking cannot change its labels)."""
    from procsup.annotation.run import annotate

    trajs = [trace(12345 + 7 * i, 11111, i % 6 or None) for i in range(7)]
    cfg = lambda out: AnnotateConfig(output_file=str(out), method="first-error", policy="p", task="addition", k=2,  # noqa: E731
                                     chunk_size=2, progress=False)
    for rank in range(2):
        summary = annotate(cfg(tmp_path / "two.jsonl"), PerfectPolicy(TASK), trajs, rank, 2)
        assert summary["written"] == len(shard(7, rank, 2))
    assert sorted(read_done(part_path(tmp_path / "two.jsonl", 1, 2))) == [1, 3, 5]
    two = merge_parts(tmp_path / "two.jsonl", 2, 7)
    annotate(cfg(tmp_path / "one.jsonl"), PerfectPolicy(TASK), trajs, 0, 1)
    assert two == merge_parts(tmp_path / "one.jsonl", 1, 7)
    assert [r["meta"]["annotation"]["first_error"] for r in two] == [None, 1, 2, 3, 4, 5, None]
    # a rerun finds everything written and generates nothing
    policy = PerfectPolicy(TASK)
    assert annotate(cfg(tmp_path / "one.jsonl"), policy, trajs, 0, 1)["written"] == 0 and policy.calls == 0
