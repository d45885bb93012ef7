"""The grid task: expert paths are shortest and pass every checker (in every view), the checkers find
exactly the wrong move (but accept any shortest-path move), the executor reproduces the expert, the state ->
action map is deterministic in the default view, the trail view's rendering and memory on hand-made
walks, metrics on hand-made paths, and generation is deterministic."""

from __future__ import annotations

import pytest

from procsup.tasks.grid import (
    MOVES,
    TRAIL,
    VIEWS,
    GridTask,
    grid_metrics,
    parse_grid,
    render_grid,
    state_ambiguity,
    toward_first,
)

SIZES = {3: 40, 4: 60, 6: 40, 10: 20, 20: 8}  # grid side -> problems per test

# S at (0,0), waypoint 1 at (0,2), goal 2 at (2,2); shortest path RRDD (4 moves).
HAND = "S.1\n.#.\n..2"


def problems(task: GridTask, seed: int = 0):
    return [p for size, n in SIZES.items() for p in task.sample(seed, size, n)]


@pytest.mark.parametrize("view", VIEWS)
def test_expert_paths_are_shortest_and_pass_the_checkers(view):
    task = GridTask(view=view)
    for p in problems(task):
        traj = task.expert(p)
        actions = [s.action for s in traj.steps]
        assert traj.target == "".join(actions) and len(actions) == p.shortest_len
        assert task.check_answer(p, traj.target) and task.check_steps(p, actions) == [True] * len(actions)
        assert grid_metrics(p, traj.target) == {"success": 1.0, "spl": 1.0, "optimal": 1.0}
        assert traj.input == render_grid(p) and task.problem_of(traj) == p


@pytest.mark.parametrize("view", ["field", "trail"])  # the trail view's expert breaks ties differently
def test_check_steps_finds_exactly_the_corrupted_step(view):
    task = GridTask(view=view)
    for p in problems(task, seed=1)[::3]:
        actions = [s.action for s in task.expert(p).steps]
        state = task.initial_state(p)
        for t, expert_move in enumerate(actions):
            for other in [*MOVES, "X", "", "UD"]:
                if other == expert_move:
                    continue
                bad = actions[:t] + [other] + actions[t + 1 :]
                ok = task.check_steps(p, bad)
                if task.check_state_step(state, other):  # another shortest-path move: right, not a tie-break error
                    assert ok[t] and ok[:t] == [True] * t
                    continue
                assert ok[: t + 1] == [True] * t + [False]
                assert not task.check_answer(p, "".join(bad))  # the path ends off the goal
                if task.execute(state, other) is None:  # an illegal move is wrong and moves nothing
                    inserted = actions[:t] + [other] + actions[t:]
                    assert task.check_steps(p, inserted) == [i != t for i in range(len(inserted))]
            state = task.execute(state, expert_move)


def test_missing_and_extra_moves_are_wrong():
    task = GridTask()
    p = parse_grid(HAND)
    assert task.check_steps(p, ["R", "R"]) == [True, True, False, False]  # two moves short
    assert task.check_steps(p, ["R", "R", "D", "D", "U"]) == [True] * 4 + [False]  # a move after the goal
    assert task.check_steps(p, ["R", "L", "R", "R", "D", "D"]) == [True, False, True, True, True, True]
    # a detour (3 moves from waypoint 1 instead of 2), then a wall: 5 moves still missing
    assert task.check_steps(p, ["D", "R"]) == [False] * 7


def test_executor_driven_by_the_expert_reproduces_it():
    for view in VIEWS:
        task = GridTask(view=view)
        for p in problems(task, seed=2):
            traj = task.state_trajectory(p)
            state = task.initial_state(p)
            for step in traj.steps:
                assert not task.is_done(state)
                assert task.render_state(state) == step.state == step.key
                assert task.check_state_step(state, step.action)
                state = task.execute(state, step.action)
                assert state is not None
            assert task.is_done(state) and task.answer(state) == traj.target
            assert task.check_answer(p, task.answer(state))


def test_executor_rejects_illegal_moves_and_stops_at_the_step_limit():
    task = GridTask(step_limit=2)
    p = parse_grid(HAND)
    s = task.initial_state(p)
    assert task.execute(s, "U") is None and task.execute(s, "L") is None and task.execute(s, "go") is None
    assert task.execute(task.execute(s, "D"), "R") is None  # into the wall
    for move in "RLRLRLRL":  # 8 = 2 x shortest moves, never reaching waypoint 1
        assert not task.is_done(s)
        s = task.execute(s, move)
    assert task.is_done(s) and not task.check_answer(p, task.answer(s))


def test_field_state_determines_the_expert_action():
    """Default view: the expert move is the first '+' in U D L R order, so equal states never disagree."""
    task = GridTask()
    ps = [p for size in (4, 6) for p in task.sample(3, size, 150)]
    assert state_ambiguity(task, ps) == 0.0
    for p in ps:
        for step in task.state_trajectory(p).steps:
            marks = dict(mark for mark in step.state.split())  # "U+" -> ("U", "+")
            assert list(marks) == list(MOVES) and step.action == next(m for m, v in marks.items() if v == "+")
    # the local view cannot see around walls: the same window and offset can call for different moves
    assert state_ambiguity(GridTask(view="local"), ps) > 0.01


def test_trail_view_on_a_hand_made_walk():
    """Each move with the cell it leads to (# blocked, . open, o visited since the last waypoint, * the next
    waypoint), the four diagonal cells, then the offset."""
    task = GridTask(view="trail")
    p = parse_grid(HAND)  # S.1 / .#. / ..2
    s = task.initial_state(p)
    assert GridTask(view="local").render_state(s) == "###/#@./#.# +2,+0"
    assert task.render_state(s) == "U# D. L# R. #### +2,+0"  # the same window, laid out by action
    assert task.render_state(task.execute(s, "R")) == "U# D# Lo R* ##.. +1,+0"  # local: ###/o@*/.#.
    leg2 = task.execute(task.execute(s, "R"), "R")  # waypoint 1 reached: a new leg, the memory starts afresh
    assert task.render_state(leg2) == "U# D. L. R# #### +0,+2"
    assert [st.action for st in task.expert(p).steps] == list("RRDD")

    # a detour into the bottom-left corner: D, D, R, then back L
    walk = s
    for move in "DDR":
        walk = task.execute(walk, move)
    assert task.render_state(walk) == "U# D# Lo R. o.## +1,-2"  # the open cell to the right is new: trail shown
    walk = task.execute(walk, "L")  # boxed in: both open neighbours visited; the way back (up) is shown open
    assert task.render_state(walk) == "U. D# L# Ro #### +2,-2"
    walk = task.execute(walk, "U")  # boxed in again: the way back is the start, above
    assert task.render_state(walk) == "U. Do L# R# #.#o +2,-1"
    walk = task.execute(walk, "U")  # at the start: the free cell to the right was never visited
    assert task.render_state(walk) == "U# Do L# R. #### +2,+0"


def test_trail_expert_never_steps_on_its_trail_and_breaks_ties_toward_the_waypoint():
    """In the trail view the expert never moves onto an 'o' cell and is never boxed in (a shortest path does not
    revisit a cell within a leg), it takes the first shortest-path move of toward_first, and the memory makes
    the view much less ambiguous than the local one."""
    task, local = GridTask(view="trail"), GridTask(view="local")
    ps = [p for size in (4, 6) for p in task.sample(5, size, 150)]
    for p in ps:
        state = task.initial_state(p)
        for step in task.state_trajectory(p).steps:
            near = dict(mark for mark in step.state.split()[:4])  # "Lo" -> ("L", "o")
            assert list(near) == list(MOVES) and near[step.action] in ".*"
            ok = [m for m in toward_first(state.pos, p.waypoints[state.target]) if task.check_state_step(state, m)]
            assert step.action == ok[0]
            state = task.execute(state, step.action)
    assert toward_first((0, 0), (3, 1)) == ["D", "R", "U", "L"] and toward_first((2, 2), (2, 0)) == ["L", "U", "D", "R"]
    assert state_ambiguity(task, ps) < state_ambiguity(local, ps) / 2
    assert TRAIL not in {ch for p in ps for s in local.expert(p).steps for ch in s.state}


def test_state_rendering_is_size_independent():
    task = GridTask()
    small = {s.state for p in task.sample(4, 4, 200) for s in task.expert(p).steps}
    large = [s.state for p in task.sample(4, 20, 20) for s in task.expert(p).steps]
    assert all(len(s) == len("U+ D# L- R+") for s in small | set(large))
    # 4x4 grids show nearly every state; the rest (e.g. U and D both closer) are rare on big grids too
    assert sum(s not in small for s in large) / len(large) < 0.02


def test_grid_metrics_on_hand_made_paths():
    p = parse_grid(HAND)
    assert p.shortest_len == 4
    assert grid_metrics(p, "RRDD") == {"success": 1.0, "spl": 1.0, "optimal": 1.0}
    assert grid_metrics(p, "RRLRDD") == {"success": 1.0, "spl": pytest.approx(4 / 6), "optimal": 0.0}
    assert grid_metrics(p, "RLRRDD") == grid_metrics(p, "RRLRDD")
    for failed in ("DDRR", "DR", "RRDDU", "RRD", "", None, "RRDX"):  # goal first, wall, past the goal, short, junk
        assert grid_metrics(p, failed) == {"success": 0.0, "spl": 0.0, "optimal": 0.0}
    task = GridTask()
    assert task.check_answer(p, " RRDD\n") and not task.check_answer(p, "DDRR") and not task.check_answer(p, None)


def test_generation_is_deterministic_and_solvable():
    task = GridTask()
    for size in (3, 4, 6, 10, 20):
        a = task.sample(7, size, 20)
        assert a == task.sample(7, size, 20) and a != task.sample(8, size, 20)
        for p in a:
            cells = [p.start, *p.waypoints]
            assert p.size == size and 2 <= len(p.waypoints) <= 3 and len(set(cells)) == len(cells)
            assert all(p.is_free(c) for c in cells) and p.solvable and p.shortest_len >= len(p.waypoints)
            assert parse_grid(render_grid(p)) == p
    train = task.sample_range(0, max_size=4, count=100)
    assert {p.size for p in train} == {3, 4} and train == task.sample_range(0, max_size=4, count=100)
    dense = GridTask(wall_density=0.5, num_waypoints=(4, 4)).sample(0, 6, 20)
    assert all(p.solvable and len(p.waypoints) == 4 for p in dense)


@pytest.mark.parametrize(
    "kwargs",
    [{"wall_density": 0.9}, {"num_waypoints": (0, 2)}, {"num_waypoints": (3, 2)}, {"view": "full"}, {"step_limit": 0}],
)
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError):
        GridTask(**kwargs)


def test_parse_grid_rejects_bad_grids():
    for text in ("S.\n.", "S.\n..", "S1\n.x", "S2\n.."):
        with pytest.raises(ValueError):
            parse_grid(text)
