"""Grid navigation with ordered waypoints (Kartik & Shah, 2025, section 5.3: "trained on 4x4 mazes,
generalizes to 6x6").

A problem is an N x N grid with walls, a start cell and k ordered waypoints (the last is the goal). The
agent moves one cell per step (``U``/``D``/``L``/``R``); it must visit the waypoints in order (passing over
a later waypoint early does not count) and the episode ends on reaching the last one. Problems are
solvable by construction (resampled until BFS connects start and every waypoint).

Expert: at every step, the first move in the fixed order ``U, D, L, R`` that lowers the BFS distance to
the next waypoint by one. Descending the distance field is a shortest path for each leg, so the expert's
path is a shortest path through the waypoints; the fixed order is its tie-break.

Renderings:

* history mode: ``x`` is the whole grid, one text row per grid row (``#`` wall, ``.`` free, ``S`` start,
  ``1``..``k`` the waypoints in order); each step is one move letter; ``y`` is the whole move string::

      S.1
      .#.        steps R, R, D, D        y = "RRDD"
      ..2

* state mode (``view="field"``, the default): for each of the four moves, in the order U D L R, one
  mark: ``#`` blocked (a wall or outside the grid), ``+`` the move lowers the distance to the next
  waypoint (it lies on a shortest path), ``-`` the move is free but raises it. The four states of the
  grid above: ``"U# D- L# R+"``, ``"U# D# L- R+"``, ``"U# D+ L- R#"``, ``"U- D+ L# R#"``.

  What this state reveals: the executor acts as a GPS. It computes the BFS distance field of the next
  waypoint over the whole grid and tells the agent which neighbours are closer; nothing about the
  waypoint's position, the grid size, or anything beyond the four neighbours. With a fixed tie-break the
  expert action is a function of the rendered state (the first ``+`` in U D L R order), so state-mode
  imitation has no ambiguity at all, and the state looks the same on a 4x4 and a 20x20 grid. Walls and
  the grid's edge get the same mark on purpose: they mean the same for the action, and edge cells are
  more frequent on small grids, a difference the model need not learn. The price is candour: with this
  state the planning is done by the executor, and state-mode imitation is a lookup over at most 65
  states (about 55 occur on 4x4 grids; the rest, such as U and D both closer, are rare on any size).

* state mode, ``view="local"`` (an ablation without the distance field): the 3x3 window around the agent
  (``#`` blocked, ``.`` free, ``@`` the agent, ``*`` the next waypoint) and the offset to the next waypoint
  (columns, rows), each clipped to [-3, 3]; the first state above is ``"###/#@./#.# +2,+0"``.
  Size-independent, but shortest paths around walls need more than a local view, so the same rendering
  can call for different expert moves (see :func:`state_ambiguity`).

* state mode, ``view="trail"``: the local view plus the agent's memory of its own trail. Cells it has
  entered since it last reached a waypoint (or since the start) are drawn ``o`` instead of ``.``; reaching
  a waypoint starts a fresh trail. One exception: when every open neighbour is already on the trail (the
  agent is boxed in), the cell it first came from into its current cell is drawn ``.``, the way back, as
  a thread unwound. The window is laid out by action, as in the field view: each move letter with the
  cell it leads to, in U D L R order, then the four diagonal cells (up-left, up-right, down-left,
  down-right), then the offset. The start of the grid above is ``"U# D. L# R. #### +2,+0"``; one move R
  later, ``"U# D# Lo R* ##.. +1,+0"``. (The same window as ``###/o@*/.#.``; laid out by action, a tiny
  model trained on 3x3-4x4 grids generalized better to 10x10 and 20x20 in our trials.)

  What this state reveals: what the agent sees around itself (the 3x3 window, the grid's edge drawn as a
  wall), the clipped direction to the next waypoint, and where it has been on this leg. Nothing is
  computed over the grid: no distance, no path. Its expert is the shortest-path expert with a tie-break
  the view can read (:func:`toward_first`: toward the waypoint first, the axis with the larger clipped
  distance first); the field and local views keep U D L R. The expert never steps on its trail and is
  never boxed in (a shortest path does not revisit a cell within a leg), so its data shows ``o`` only
  behind it, and a policy that learned to avoid ``o`` like a wall cannot cycle forever; the boxed-in rule
  lets it back out of a dead end through a cell that looks open, as in the expert's data.
  :func:`state_ambiguity` on 1,000 4x4 and 6x6, 300 10x10 and 20x20 problems: 0.9%, 2.5%, 3.1%, 15.8% of
  expert steps (local view: 6.6%, 15.9%, 21.6%, 45.5%). A rule over this view alone ("go toward the
  waypoint through a cell drawn ``.`` or ``*``") succeeds on 100% of 6x6 problems, 98% of 10x10 and 90% of
  20x20 within the step limit; trained numbers are in ``benchmarks/results/paper/grid_views.md``.

Checkers accept any shortest-path move, not just the expert's tie-break.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

from procsup.data.trajectory import Step, Trajectory
from procsup.tasks.base import corrupt_digit

Cell = tuple[int, int]  # (row, column); row 0 is the top
MOVES: dict[str, Cell] = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
"""Move letters and their (row, column) deltas; the order is the expert's tie-break."""
VIEWS = ("field", "local", "trail")
OFFSET_CLIP = 3  # local and trail views: offsets beyond +-3 (the largest on a 4x4 grid) all look the same
WALL, FREE, START = "#", ".", "S"
AGENT, GOAL, TRAIL = "@", "*", "o"  # local and trail views


@dataclass(frozen=True)
class GridProblem:
    size: int
    walls: frozenset[Cell]
    start: Cell
    waypoints: tuple[Cell, ...]
    """Ordered; the last one is the goal."""

    def is_free(self, cell: Cell) -> bool:
        r, c = cell
        return 0 <= r < self.size and 0 <= c < self.size and cell not in self.walls

    @cached_property
    def fields(self) -> tuple[dict[Cell, int], ...]:
        """BFS distance to each waypoint, for every cell connected to it."""
        return tuple(_bfs(self, w) for w in self.waypoints)

    @property
    def solvable(self) -> bool:
        legs = zip((self.start, *self.waypoints[:-1]), self.fields)
        return all(src in field for src, field in legs)

    @property
    def shortest_len(self) -> int:
        """Moves on a shortest path from the start through every waypoint in order (the expert's length)."""
        return remaining(self, self.start, 0)


def _bfs(p: GridProblem, source: Cell) -> dict[Cell, int]:
    dist, queue = {source: 0}, deque([source])
    while queue:
        r, c = cell = queue.popleft()
        for dr, dc in MOVES.values():
            nxt = (r + dr, c + dc)
            if nxt not in dist and p.is_free(nxt):
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def remaining(p: GridProblem, pos: Cell, target: int) -> int:
    """Shortest number of moves from ``pos`` through waypoints ``target..k-1`` in order."""
    total, here = 0, pos
    for i in range(target, len(p.waypoints)):
        total += p.fields[i][here]
        here = p.waypoints[i]
    return total


def _step(p: GridProblem, pos: Cell, target: int, move: str) -> tuple[Cell, int] | None:
    """Apply one move letter: the new (position, next waypoint index), or None if it is not a legal move."""
    if move not in MOVES:
        return None
    dr, dc = MOVES[move]
    nxt = (pos[0] + dr, pos[1] + dc)
    if not p.is_free(nxt):
        return None
    if target < len(p.waypoints) and nxt == p.waypoints[target]:
        target += 1
    return nxt, target


def _on_shortest_path(p: GridProblem, pos: Cell, target: int, move: str) -> bool:
    if target >= len(p.waypoints) or _step(p, pos, target, move) is None:
        return False
    dr, dc = MOVES[move]
    field = p.fields[target]
    return field[(pos[0] + dr, pos[1] + dc)] == field[pos] - 1


@dataclass(frozen=True)
class GridState:
    problem: GridProblem
    pos: Cell
    target: int = 0
    """Index of the next waypoint (== k once the goal is reached)."""
    moves: str = ""
    trail: tuple[tuple[Cell, Cell | None], ...] = ()
    """The agent's memory for the trail view: every cell entered since the last waypoint was reached (or
    since the start), in order, each with the cell it was first entered from (None for the leg's first cell)."""


def render_grid(p: GridProblem) -> str:
    marks = {p.start: START, **{w: str(i + 1) for i, w in enumerate(p.waypoints)}}
    return "\n".join(
        "".join(WALL if (r, c) in p.walls else marks.get((r, c), FREE) for c in range(p.size)) for r in range(p.size)
    )


def parse_grid(text: str) -> GridProblem:
    """The inverse of :func:`render_grid` (the input x of a trajectory is the whole problem)."""
    rows = text.strip("\n").split("\n")
    if any(len(row) != len(rows) for row in rows):
        raise ValueError(f"not a square grid: {text!r}")
    walls, start, numbered = set(), None, {}
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch == WALL:
                walls.add((r, c))
            elif ch == START:
                start = (r, c)
            elif ch.isdigit():
                numbered[int(ch)] = (r, c)
            elif ch != FREE:
                raise ValueError(f"unknown grid character {ch!r}")
    if start is None or sorted(numbered) != list(range(1, len(numbered) + 1)) or not numbered:
        raise ValueError(f"a grid needs a start S and waypoints 1..k: {text!r}")
    return GridProblem(len(rows), frozenset(walls), start, tuple(numbered[i] for i in sorted(numbered)))


class GridTask:
    """N x N grid navigation through ordered waypoints, one move per step."""

    name = "grid"

    def __init__(
        self, wall_density: float = 0.25, num_waypoints: tuple[int, int] = (2, 3), view: str = "field",
        step_limit: int = 4,
    ):
        if not 0.0 <= wall_density <= 0.5:
            raise ValueError(f"wall_density must be in [0, 0.5], got {wall_density}")
        lo, hi = num_waypoints
        if not 1 <= lo <= hi <= 9:
            raise ValueError(f"num_waypoints must be (lo, hi) with 1 <= lo <= hi <= 9, got {num_waypoints}")
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if step_limit < 1:
            raise ValueError(f"step_limit must be >= 1, got {step_limit}")
        self.wall_density = wall_density
        """Probability that a cell is a wall (before start and waypoints are placed on free cells)."""
        self.num_waypoints = (lo, hi)
        """Waypoints per problem (the goal included), uniform in [lo, hi]."""
        self.view = view
        """State-mode rendering: ``field`` (neighbours marked closer/farther/blocked), ``local`` (3x3 window +
        offset) or ``trail`` (local + the cells visited since the last waypoint)."""
        self.step_limit = step_limit
        """A state-mode episode ends after step_limit x the shortest path's length."""

    # --- problems -------------------------------------------------------------------------------
    def make(self, rng: random.Random, size: int) -> GridProblem:
        k = rng.randint(*self.num_waypoints)
        if size < 2 or k + 1 > size * size:
            raise ValueError(f"a {size}x{size} grid cannot hold a start and {k} waypoints")
        for _ in range(10_000):
            walls = frozenset((r, c) for r in range(size) for c in range(size) if rng.random() < self.wall_density)
            free = [(r, c) for r in range(size) for c in range(size) if (r, c) not in walls]
            if len(free) < k + 1:
                continue
            start, *waypoints = rng.sample(free, k + 1)
            p = GridProblem(size, walls, start, tuple(waypoints))
            if p.solvable:
                return p
        raise RuntimeError(f"no solvable {size}x{size} grid in 10000 draws; lower wall_density")

    def sample(self, seed: int, size: int, count: int) -> list[GridProblem]:
        """``count`` problems on ``size`` x ``size`` grids."""
        rng = random.Random(f"grid/{seed}/{size}")
        return [self.make(rng, size) for _ in range(count)]

    def sample_range(self, seed: int, max_size: int, count: int, min_size: int = 3) -> list[GridProblem]:
        """Training problems: the grid side uniform in [min_size, max_size]."""
        rng = random.Random(f"grid-train/{seed}/{min_size}-{max_size}")
        return [self.make(rng, rng.randint(min_size, max_size)) for _ in range(count)]

    # --- renderings -------------------------------------------------------------------------------
    def render_input(self, p: GridProblem) -> str:
        return render_grid(p)

    def render_state(self, state: GridState) -> str:
        p, (r, c) = state.problem, state.pos
        if self.view == "field":
            marks = []
            for move, (dr, dc) in MOVES.items():
                if not p.is_free((r + dr, c + dc)):
                    marks.append(move + WALL)
                else:
                    marks.append(move + ("+" if _on_shortest_path(p, state.pos, state.target, move) else "-"))
            return " ".join(marks)
        goal = _goal(state)
        remembered = _remembered(state) if self.view == "trail" else frozenset()
        rows = []
        for dr in (-1, 0, 1):
            row = ""
            for dc in (-1, 0, 1):
                cell = (r + dr, c + dc)
                row += (AGENT if cell == state.pos else GOAL if cell == goal else WALL if not p.is_free(cell)
                        else TRAIL if cell in remembered else FREE)
            rows.append(row)
        dx = max(-OFFSET_CLIP, min(OFFSET_CLIP, goal[1] - c))
        dy = max(-OFFSET_CLIP, min(OFFSET_CLIP, goal[0] - r))
        if self.view == "local":
            return f"{'/'.join(rows)} {dx:+d},{dy:+d}"
        # trail: the same window, laid out by action: each move with the cell it leads to, then the diagonals
        near = " ".join(f"{move}{rows[1 + dr][1 + dc]}" for move, (dr, dc) in MOVES.items())
        return f"{near} {rows[0][0]}{rows[0][2]}{rows[2][0]}{rows[2][2]} {dx:+d},{dy:+d}"

    def expert_move(self, state: GridState) -> str:
        """The first move that lies on a shortest path to the next waypoint, in U D L R order; in the trail
        view, in :func:`toward_first` order (a tie-break the view shows: it reads the offset)."""
        p = state.problem
        order = toward_first(state.pos, _goal(state)) if self.view == "trail" else MOVES
        return next(m for m in order if _on_shortest_path(p, state.pos, state.target, m))

    def expert(self, p: GridProblem) -> Trajectory:
        """The expert trajectory: one step per move; ``state``/``key`` are the state-mode rendering."""
        state, steps = self.initial_state(p), []
        while state.target < len(p.waypoints):
            move, seen = self.expert_move(state), self.render_state(state)
            steps.append(Step(action=move, state=seen, key=seen))
            state = self.execute(state, move)
        return Trajectory(
            input=self.render_input(p), target=state.moves, steps=tuple(steps),
            meta={"task": self.name, "size": p.size, "view": self.view},
        )

    def state_trajectory(self, p: GridProblem) -> Trajectory:
        """The same demonstration: in this task a history-mode step and a state-mode action are both the move."""
        return self.expert(p)

    @staticmethod
    def problem_of(traj: Trajectory) -> GridProblem:
        return parse_grid(traj.input)

    # --- checkers -----------------------------------------------------------------------------------
    def corrupt(self, action: str, rng: random.Random) -> str:
        """One digit of the action changed (:func:`~procsup.tasks.base.corrupt_digit`)."""
        return corrupt_digit(action, rng)

    def check_answer(self, p: GridProblem, answer: str | None) -> bool:
        """The moves, executed from the start, are all legal and visit every waypoint in order; the episode
        ends at the last waypoint, so a move after it makes the answer wrong."""
        return answer is not None and _run(p, answer.strip()) is not None

    def check_steps(self, p: GridProblem, actions: Sequence[str]) -> list[bool]:
        """Step t is right if it is a legal move on some shortest path to the next waypoint, from where the
        legal moves before it led (an illegal move is wrong and moves nothing). A trace that stops short
        gets one False per missing move (the shortest remaining distance); a move after the goal is wrong."""
        pos, target, ok = p.start, 0, []
        for action in actions:
            move = action.strip()
            ok.append(_on_shortest_path(p, pos, target, move))
            nxt = _step(p, pos, target, move) if target < len(p.waypoints) else None
            if nxt is not None:
                pos, target = nxt
        return ok + [False] * remaining(p, pos, target)

    def check_state_step(self, state: GridState, action: str) -> bool:
        return _on_shortest_path(state.problem, state.pos, state.target, action.strip())

    # --- executor (state mode) -------------------------------------------------------------------------
    def initial_state(self, p: GridProblem) -> GridState:
        return GridState(p, p.start, trail=((p.start, None),))

    def execute(self, state: GridState, action: str) -> GridState | None:
        move = action.strip()
        nxt = _step(state.problem, state.pos, state.target, move)
        if nxt is None:
            return None
        pos, target = nxt
        if target != state.target:  # a waypoint reached: a new leg, a fresh memory
            trail = ((pos, None),)
        elif any(cell == pos for cell, _ in state.trail):
            trail = state.trail
        else:
            trail = (*state.trail, (pos, state.pos))
        return GridState(state.problem, pos, target, state.moves + move, trail)

    def is_done(self, state: GridState) -> bool:
        p = state.problem
        return state.target >= len(p.waypoints) or len(state.moves) >= self.step_limit * p.shortest_len

    def answer(self, state: GridState) -> str:
        return state.moves


def _goal(state: GridState) -> Cell:
    """The next waypoint (the agent's own cell once the goal is reached)."""
    p = state.problem
    return p.waypoints[state.target] if state.target < len(p.waypoints) else state.pos


def _remembered(state: GridState) -> frozenset[Cell]:
    """Trail cells the trail view marks: all of them, except when every open neighbour is on the trail
    (boxed in): then the cell the agent first came from into this one is shown open, the way back."""
    p, (r, c) = state.problem, state.pos
    first_from = dict(state.trail)
    cells = frozenset(first_from)
    opens = [(r + dr, c + dc) for dr, dc in MOVES.values() if p.is_free((r + dr, c + dc))]
    if all(n in cells for n in opens):
        return cells - {first_from.get(state.pos)}
    return cells


def toward_first(pos: Cell, goal: Cell) -> list[str]:
    """Moves toward ``goal`` first (the axis with the larger distance first, vertical on a tie), then the
    others in U D L R order: the trail view's expert tie-break. Distances are clipped to +-OFFSET_CLIP, as
    the view shows them, so that the order is a function of the rendered state."""
    dy, dx = (max(-OFFSET_CLIP, min(OFFSET_CLIP, g - q)) for g, q in zip(goal, pos))
    vertical = "D" if dy > 0 else "U" if dy < 0 else None
    horizontal = "R" if dx > 0 else "L" if dx < 0 else None
    toward = [m for m in ((vertical, horizontal) if abs(dy) >= abs(dx) else (horizontal, vertical)) if m]
    return toward + [m for m in MOVES if m not in toward]


def _run(p: GridProblem, moves: str) -> Cell | None:
    """Execute a move string; the final cell if every move is legal and the goal is reached exactly at the
    end, else None."""
    pos, target = p.start, 0
    for move in moves:
        if target >= len(p.waypoints):
            return None  # a move after the goal
        nxt = _step(p, pos, target, move)
        if nxt is None:
            return None
        pos, target = nxt
    return pos if target == len(p.waypoints) else None


def grid_metrics(p: GridProblem, moves: str | None) -> dict[str, float]:
    """``success`` (all waypoints in order, legal moves), ``spl`` (success weighted by path length:
    success x shortest / max(shortest, taken)) and ``optimal`` (success with a shortest path)."""
    moves = (moves or "").strip()
    success = _run(p, moves) is not None
    shortest = p.shortest_len
    return {
        "success": float(success),
        "spl": success * shortest / max(shortest, len(moves)),
        "optimal": float(success and len(moves) == shortest),
    }


def state_ambiguity(task, problems: Iterable) -> float:
    """Share of expert state-mode steps whose rendered state also appears (in these problems) with a
    different expert action: the part of the data no state-mode policy can fit."""
    actions: dict[str, set[str]] = {}
    steps = [s for p in problems for s in task.state_trajectory(p).steps]
    for s in steps:
        actions.setdefault(s.state, set()).add(s.action)
    return sum(len(actions[s.state]) > 1 for s in steps) / max(len(steps), 1)
