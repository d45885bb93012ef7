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
