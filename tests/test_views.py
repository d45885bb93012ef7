"""State-mode trajectories laid out for a reward model: one trace, or one row per step."""

from __future__ import annotations

import pytest

from procsup.data.trajectory import Step, Trajectory
from procsup.data.views import in_layout, regroup, step_rows, trace_view
from procsup.tasks.addition import AdditionProblem, AdditionTask

TRAJ = Trajectory("27+15 | 7,5 2,1", "42", (Step("2,1", "7+5+0", True, "k0"), Step("5,0", "2+1+1", False)), {"a": 27})


def test_trace_view_joins_state_and_action_and_keeps_labels():
    view = trace_view(TRAJ)
    assert [s.action for s in view.steps] == ["7+5+0 -> 2,1", "2+1+1 -> 5,0"]
    assert view.labels == [True, False] and view.steps[0].key == "k0" and view.input == TRAJ.input
    assert [s.action for s in trace_view(TRAJ, joiner=" | ").steps] == ["7+5+0 | 2,1", "2+1+1 | 5,0"]


def test_step_rows_put_each_state_in_its_own_row():
    rows = step_rows(TRAJ)
    assert [(r.input, [s.action for s in r.steps], r.labels) for r in rows] == [
        ("7+5+0", ["2,1"], [True]), ("2+1+1", ["5,0"], [False])]


def test_regroup_inverts_the_flattening():
    other = Trajectory("x", "", (Step("a", "s"),))
    trajs = [TRAJ, other, TRAJ]
    rows = in_layout(trajs, "step")
    assert len(rows) == 5
    assert regroup([[0.1], [0.2], [0.3], [0.4], [0.5]], trajs, "step") == [[0.1, 0.2], [0.3], [0.4, 0.5]]
    assert len(in_layout(trajs, "trace")) == 3 and regroup([[1.0, 2.0]], [TRAJ], "trace") == [[1.0, 2.0]]


def test_the_expert_state_trajectory_lays_out_both_ways():
    task = AdditionTask(index_hints=False)
    traj = task.state_trajectory(AdditionProblem(27, 15))
    assert [r.input for r in step_rows(traj)] == ["7+5+0", "2+1+1"]
    assert [s.action for s in trace_view(traj).steps] == ["7+5+0 -> 2,1", "2+1+1 -> 4,0"]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="step 0 has no state"):
        step_rows(Trajectory("x", "", (Step("a"),)))
    with pytest.raises(ValueError, match="layout must be one of"):
        in_layout([TRAJ], "rows")


@pytest.mark.parametrize("layout", ["trace", "step"])
def test_score_in_layout_reads_each_step_where_its_row_puts_it(char_tok, layout):
    import torch
    from transformers import AutoModelForTokenClassification

    from procsup.data.tokenize import StepFormat
    from procsup.models.factory import tiny_hf_config
    from procsup.models.prm import score, score_in_layout

    from tests.conftest import TINY

    torch.manual_seed(0)
    config = tiny_hf_config(TINY, char_tok)
    config.num_labels = 2
    prm = AutoModelForTokenClassification.from_config(config)
    other = Trajectory("9+9 | 9,9", "", (Step("8,1", "9+9+0"),))
    trajs = [TRAJ, other]
    got = score_in_layout(prm, char_tok, trajs, StepFormat(), layout, batch_size=2)
    # each trajectory scored alone, in the layout's own rows
    alone = [[score(prm, char_tok, [r], StepFormat())[0][0] for r in step_rows(t)] if layout == "step"
             else score(prm, char_tok, [trace_view(t)], StepFormat())[0] for t in trajs]
    assert [len(g) for g in got] == [2, 1]
    assert all(a == pytest.approx(b, abs=1e-5) for a, b in zip(got, alone))
