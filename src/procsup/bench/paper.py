"""``procsup bench paper``: the synthetic rows of the PAL paper's Table 1, with our tasks.

Kartik & Shah (2025), sections 5.1 and 5.3 and Table 1. Every row trains the same tiny model (same
budget of optimizer steps x rows) with PAL and with a baseline, and tests where the paper tests:

* ``addition``: outcome-only vs PAL-history vs PAL-state, trained on 1-3 digits, tested at 5 digits
  (paper: ~10% vs ~80%). The runs are :func:`procsup.bench.addition.run_one`.
* ``grid``: trained on 3x3-4x4 grids, tested on 4x4, 6x6 (and 10x10, 20x20 when not quick). PAL in
  state mode with the move as text (``pal-lm``) and with an action head (``pal-head``), each with the
  ``trail`` view (3x3 window + clipped offset + the cells the agent visited since its last waypoint: what
  it sees and remembers), the ``field`` view (the environment marks which moves shorten the path: the
  planning is done by the executor) and, when not quick, the ``local`` view (the trail view without the
  memory). Baselines: whole-path imitation on the grid
  text without per-step states (``text-history``: one move per step; ``text-outcome``: the move string
  alone) and REINFORCE on the success reward given as many environment steps as the PAL demonstrations
  contain (``reinforce``, action head, per view). Its own budget: ``grid.steps``, ``grid.batch_size``,
  ``grid.hidden_size`` (full: 1500 x 32 rows, width 64). Metrics: success, SPL, share optimal. Paper: PAL
  generalizes 4x4 -> 6x6 "with minimal performance loss", the baseline "seldom reaches the goal".
* ``logic``: outcome-only vs PAL-history vs PAL-state on chains of 2..5 letters, tested at 5 and at
  twice that; exact match (the answer is ``<`` or ``>``: chance is 50%) and trace validity. Its own
  budget: ``logic.steps``, ``logic.batch_size``, ``logic.hidden_size``.
* ``word_problems``: outcome-only vs PAL-history vs PAL-state trained on stories of 2..5 operations
  (every quantity below ``word_problems.max_value``), tested on held-out 5-operation stories, clean and
  with ``word_problems.test_noise`` irrelevant sentences (paper: ~80% vs ~60%; accuracy lost to noise ~5%
  vs ~15%). Its own budget: ``word_problems.steps``, ``word_problems.hidden_size`` and
  ``word_problems.batch_size`` stories per step in every method (state mode takes the rows of those
  stories' steps, ~4 per story).
* ``consistency``: the word-problem row's PAL-state run with mu = 0 vs the same run with mu > 0, one arm
  per ``consistency.kinds`` (hidden: squared L2 of hidden states; action: symmetric KL of next-token
  distributions) over steps with equal keys ``q op n`` (the same sub-problem in differently worded
  stories), reported as it comes out (the paper gives no figure).

Each row's settings are a group of :class:`PaperBenchConfig` (``procsup bench paper quick=true
grid.steps=100``). Every (task, method, seed) run is cached in
``<output_dir>/<task>/<method>-seed<k>/eval.json`` with the configuration it ran with; a re-run with the
same settings reads it instead of training (resume).
Writes ``results.json``, one PNG per task, and prints our figure beside the paper's.
"""

from __future__ import annotations

import json
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from procsup.bench.addition import AdditionBenchConfig, run_one
from procsup.bench.cache import cached_run
from procsup.bench.report import cached_note, fit_table, quiet_transformers, render, reused_runs, stat
from procsup.bench.report import pct as _pct
from procsup.evaluation.metrics import evaluate
from procsup.models.action_head import ActionHeadModel
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rl.reinforce import ReinforceConfig, train_reinforce
from procsup.rollout import ActionHeadPolicy, LMPolicy, complete, start
from procsup.tasks.grid import MOVES, VIEWS, GridTask, grid_metrics
from procsup.tasks.logic import LogicTask
from procsup.tasks.word_problems import WordProblemTask
from procsup.trainers.action_head import ActionHeadConfig, train_action_head
from procsup.trainers.pal import PALConfig, train

TASKS = ("addition", "grid", "logic", "word_problems", "consistency")
GRID_METHODS = ("pal-lm", "pal-head", "text-history", "text-outcome", "reinforce")
#: Grid methods whose model sees a rendered state, so that they run once per view.
VIEWED = ("pal-lm", "pal-head", "reinforce")
LM_METHODS = ("outcome", "history", "state")

#: What the paper reports (Kartik & Shah 2025, Table 1, sections 5.1 and 5.3); text where it gives no number.
PAPER = {
    "addition": {"outcome": "~10%", "history": "~80%", "state": "~80%"},
    "grid": {"pal": "minimal loss 4x4 -> 6x6", "baseline": "seldom reaches the goal"},
    "logic": {"pal": "generalizes to longer chains", "outcome": "cannot solve longer ones"},
    "word_problems": {"outcome": ("~60%", "~15% lost"), "pal": ("~80%", "~5% lost")},  # (clean, noise gap)
    "consistency": {"any": "no figure"},
}

# Budgets left at None are filled from one of these (quick: the whole benchmark in <= 15 min on 2 cores):
# ``test_size`` for every row, then one mapping per row's group of fields.
QUICK = {
    "test_size": 100,
    "addition": dict(train_size=2000, test_digits=(3, 5), steps=300, batch_size=32, hidden_size=64),
    "grid": dict(train_size=500, test_sizes=(4, 6), steps=300, batch_size=32, hidden_size=64, views=("trail", "field")),
    "logic": dict(train_size=2000, steps=300, batch_size=32, hidden_size=64),
    "word_problems": dict(train_size=2000, batch_size=8, steps=300, hidden_size=64, max_value=100),
}
FULL = {
    "test_size": 300,
    "addition": dict(train_size=20000, test_digits=(3, 5, 10, 20), steps=500, batch_size=64, hidden_size=128),
    "grid": dict(train_size=2000, test_sizes=(4, 6, 10, 20), steps=1500, batch_size=32, hidden_size=64,
                 views=("trail", "local", "field")),
    "logic": dict(train_size=5000, steps=1000, batch_size=64, hidden_size=64),
    "word_problems": dict(train_size=5000, batch_size=16, steps=3000, hidden_size=64, max_value=100),
}


def _check_row(row, positive: tuple[str, ...], tuples: tuple[str, ...]) -> None:
    """Tuples from any sequence; budgets already given must be >= 1 (None: filled by quick or full later)."""
    for name in tuples:
        if getattr(row, name) is not None:
            setattr(row, name, tuple(getattr(row, name)))
    for name in positive:
        value = getattr(row, name)
        if value is not None and value < 1:
            raise ValueError(f"{row.task}.{name} must be >= 1, got {value}")


@dataclass
class AdditionRowConfig:
    """The addition row (:func:`procsup.bench.addition.run_one`): outcome vs PAL-history vs PAL-state."""

    task: ClassVar[str] = "addition"
    train_size: int | None = None
    """Training problems (1-3 digits, 30% carry-heavy) (quick 2000, full 20000)."""
    test_digits: tuple[int, ...] | None = None
    """Test lengths (quick 3,5; full 3,5,10,20)."""
    steps: int | None = None
    """Optimizer steps of every run (quick 300, full 500)."""
    batch_size: int | None = None
    """Rows per optimizer step (a row is a trajectory, or a step in state mode) (quick 32, full 64)."""
    hidden_size: int | None = None
    """Model width (quick 64, full 128)."""

    def __post_init__(self) -> None:
        _check_row(self, ("train_size", "steps", "batch_size", "hidden_size"), ("test_digits",))
        if self.test_digits is not None and min(self.test_digits, default=0) < 1:
            raise ValueError(f"addition.test_digits must be >= 1, got {self.test_digits}")


@dataclass
class GridRowConfig:
    """The grid row: PAL (as text, with an action head) per view vs text imitation vs REINFORCE."""

    task: ClassVar[str] = "grid"
    train_size: int | None = None
    """Training problems, sides 3..4 (quick 500, full 2000)."""
    test_sizes: tuple[int, ...] | None = None
    """Test sides (quick 4,6; full 4,6,10,20)."""
    steps: int | None = None
    """Optimizer steps of the supervised runs (quick 300, full 1500: where the trail view reaches ~95% on
    6x6, benchmarks/results/paper/grid_views.md)."""
    batch_size: int | None = None
    """Rows (states, or whole paths for the text methods) per step (quick 32, full 32)."""
    hidden_size: int | None = None
    """Model width of every grid run, REINFORCE's included (quick 64, full 64)."""
    views: tuple[str, ...] | None = None
    """State renderings for the state-based methods, any of trail, local, field (quick: trail, field; full:
    trail, local, field; the local ablation is left out of quick for time)."""
    methods: tuple[str, ...] = GRID_METHODS
    """Any of pal-lm, pal-head, text-history, text-outcome, reinforce."""
    reinforce_learning_rate: float = 1e-4
    """REINFORCE's (constant) learning rate (ReinforceConfig's default)."""

    def __post_init__(self) -> None:
        _check_row(self, ("train_size", "steps", "batch_size", "hidden_size"), ("test_sizes", "views", "methods"))
        for name, allowed in (("views", VIEWS), ("methods", GRID_METHODS)):
            value = getattr(self, name)
            if value is not None and (not value or set(value) - set(allowed)):
                raise ValueError(f"grid.{name} must be a non-empty subset of {allowed}, got {value}")
        if self.test_sizes is not None and min(self.test_sizes, default=0) < 2:
            raise ValueError(f"grid.test_sizes must be >= 2, got {self.test_sizes}")


@dataclass
class LogicRowConfig:
    """The logic row: outcome vs PAL-history vs PAL-state on letter chains."""

    task: ClassVar[str] = "logic"
    train_size: int | None = None
    """Training problems, chains of 2..5 letters (quick 2000, full 5000)."""
    steps: int | None = None
    """Optimizer steps (quick 300, full 1000)."""
    batch_size: int | None = None
    """Rows per optimizer step (quick 32, full 64)."""
    hidden_size: int | None = None
    """Model width (quick 64, full 64: what the recorded logic numbers used)."""

    def __post_init__(self) -> None:
        _check_row(self, ("train_size", "steps", "batch_size", "hidden_size"), ())


@dataclass
class WordProblemsRowConfig:
    """The word-problem row: outcome vs PAL-history vs PAL-state, clean and noisy test stories; the
    consistency arms train with this budget too."""

    task: ClassVar[str] = "word_problems"
    train_size: int | None = None
    """Training problems, 2..5 operations (quick 2000, full 5000)."""
    batch_size: int | None = None
    """Stories per optimizer step, in every method: a history or outcome row is a story; state mode takes as
    many rows as those stories have steps (~4 per story: one per sentence after the first), so that every
    method sees the same stories per step (quick 8, full 16)."""
    steps: int | None = None
    """Optimizer steps of the runs and of the consistency arms (quick 300, full 3000: with 16 stories per
    step, where PAL-state learns the two-digit + and - of 5-operation stories; at 1000 x 8 it was at ~9%,
    benchmarks/results/paper/paper_tasks.md section 6)."""
    hidden_size: int | None = None
    """Model width of the runs and of the consistency arms (quick 64, full 64)."""
    max_value: int | None = None
    """Every quantity of a story stays below this (quick and full 100: two-digit arithmetic; the task's own
    default is 1000, whose three-digit results the tiny model did not learn at up to 1000 steps x 8 stories;
    not measured at the current full budget)."""
    train_noise: tuple[int, ...] = (0, 1)
    """Irrelevant sentences per training story: the training set is split evenly over these counts (a
    state-mode model must have seen the ``skip`` action to skip anything)."""
    test_noise: int = 2
    """Irrelevant sentences per noisy test story (the clean test has none; same stories otherwise)."""

    def __post_init__(self) -> None:
        _check_row(self, ("train_size", "batch_size", "steps", "hidden_size"), ("train_noise",))
        if self.max_value is not None and self.max_value < 30:
            raise ValueError(f"word_problems.max_value must be >= 30, got {self.max_value}")
        if not self.train_noise or min(self.train_noise) < 0 or self.test_noise < 0:
            raise ValueError("word_problems noise counts must be >= 0 (and train_noise not empty)")


@dataclass
class ConsistencyRowConfig:
    """The consistency ablation: the word-problem row's PAL-state run with mu > 0, one arm per kind."""

    task: ClassVar[str] = "consistency"
    mu: float = 1.0
    """mu of the arms (the mu = 0 arm is the word-problem row's PAL-state run)."""
    kinds: tuple[str, ...] = ("hidden",)
    """Consistency losses to ablate, one arm each: hidden (squared L2 of hidden states) and/or action
    (symmetric KL of next-token distributions), on word-problem steps with equal ``q op n`` keys."""

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        if not self.kinds or set(self.kinds) - {"hidden", "action"}:
            raise ValueError(f"consistency.kinds must be a non-empty subset of ('hidden', 'action'), got {self.kinds}")
        if self.mu <= 0:
            raise ValueError(f"consistency.mu must be > 0 (the mu = 0 arm is always run), got {self.mu}")


@dataclass
class PaperBenchConfig:
    """Table 1 of the PAL paper on our tasks: tasks x methods x seeds. The shared settings here, each row's
    budget in its own group (``grid.steps=300`` on the command line, ``grid: {steps: 300}`` in YAML).
    Budgets left at None take the ``quick`` or the full value (``QUICK``/``FULL`` in this module); a value
    set here wins."""

    output_dir: str = "runs/bench-paper"
    """Folder for per-run caches, results.json and one PNG per task."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per (task, method, seed); model init, data and data order follow the seed."""
    quick: bool = False
    """Small budgets so that the whole benchmark fits in 15 minutes on 2 cores."""
    tasks: tuple[str, ...] = TASKS
    """Any of addition, grid, logic, word_problems, consistency."""
    arch: str = "llama"
    """Model family of every run: llama, qwen2 or gpt2."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    learning_rate: float = 2e-3
    """Peak learning rate of the supervised runs (cosine, warm-up 10% of the steps up to 50)."""
    lam: float = 1.0
    """PAL's lambda."""
    test_size: int | None = None
    """Fresh test problems per test size/condition, in every row (quick 100, full 300)."""
    addition: AdditionRowConfig = field(default_factory=AdditionRowConfig)
    """The addition row: trained on 1-3 digits, tested on longer operands."""
    grid: GridRowConfig = field(default_factory=GridRowConfig)
    """The grid row: trained on 3x3-4x4 grids, tested on larger ones."""
    logic: LogicRowConfig = field(default_factory=LogicRowConfig)
    """The logic row: trained on chains of 2..5 letters, tested at 5 and 10."""
    word_problems: WordProblemsRowConfig = field(default_factory=WordProblemsRowConfig)
    """The word-problem row: trained on 2..5 operations, tested on 5, clean and noisy."""
    consistency: ConsistencyRowConfig = field(default_factory=ConsistencyRowConfig)
    """The consistency ablation on the word-problem row."""
    progress: bool = False
    """Progress bars."""
    threads: int = 2
    """Torch threads (results of one seed can differ between thread counts: float sums are reordered)."""

    def __post_init__(self) -> None:
        budgets = QUICK if self.quick else FULL
        if self.test_size is None:
            self.test_size = budgets["test_size"]
        for name in ("addition", "grid", "logic", "word_problems"):
            row = getattr(self, name)
            setattr(self, name, replace(row, **{k: v for k, v in budgets[name].items() if getattr(row, k) is None}))
        self.seeds, self.tasks = tuple(self.seeds), tuple(self.tasks)
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.test_size < 1:
            raise ValueError(f"test_size must be >= 1, got {self.test_size}")

    def model_config(self, hidden_size: int) -> TinyModelConfig:
        return TinyModelConfig(arch=self.arch, hidden_size=hidden_size, num_layers=self.num_layers,
                               num_heads=self.num_heads)

    def addition_config(self) -> AdditionBenchConfig:
        add = self.addition
        return AdditionBenchConfig(
            output_dir=str(Path(self.output_dir) / "addition"), seeds=self.seeds, train_size=add.train_size,
            test_digits=add.test_digits, test_size=self.test_size, steps=add.steps,
            batch_size=add.batch_size, learning_rate=self.learning_rate, lam=self.lam, arch=self.arch,
            hidden_size=add.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads, progress=self.progress,
        )


# --- one PAL training run ---------------------------------------------------------------------------
def _pal(cfg: PaperBenchConfig, run_dir: Path, mode: str, seed: int, trajs, batch_size: int, steps: int,
         hidden_size: int, mu: float = 0.0, consistency: str = "hidden"):
    """Train a fresh tiny LM with PAL (or outcome-only) on ``trajs``; returns (model, tokenizer, PALConfig, TrainResult)."""
    model, tok = build_tiny_model(cfg.model_config(hidden_size), seed=seed)
    pal = PALConfig(
        output_dir=str(run_dir), mode=mode, lam=cfg.lam, mu=mu, consistency=consistency,
        learning_rate=cfg.learning_rate, batch_size=batch_size, max_steps=steps,
        warmup_steps=min(50, steps // 10), seed=seed, progress=cfg.progress, save_total_limit=1,
    )
    result = train(pal, model=model, tokenizer=tok, trajectories=trajs)
    return result.model, tok, pal, result


def _run_key(cfg: PaperBenchConfig, row, *names: str) -> dict:
    """The settings a run is cached under, spelled as in the flat config this benchmark had before the
    per-row groups (``grid_steps`` for ``grid.steps``), so that runs cached then are read back, not trained
    again. That config shared ``hidden_size``, ``steps`` and ``batch_size`` between the rows: here they are
    the addition row's (a row with its own value of one overwrites it in its key)."""
    add = cfg.addition
    shared = {"arch": cfg.arch, "hidden_size": add.hidden_size, "num_layers": cfg.num_layers,
              "num_heads": cfg.num_heads, "steps": add.steps, "batch_size": add.batch_size,
              "learning_rate": cfg.learning_rate, "lam": cfg.lam, "test_size": cfg.test_size}
    prefix = "word" if row.task == "word_problems" else row.task
    return {**shared, **{f"{prefix}_{n}": getattr(row, n) for n in names}}


# --- addition ------------------------------------------------------------------------------------------
# --- grid ----------------------------------------------------------------------------------------------
def grid_run(cfg: PaperBenchConfig, method: str, view: str | None, seed: int) -> dict:
    """One grid method (``view`` for the state-based ones), trained on sides 3..4, tested at every side."""
    name = f"{method}-{view}" if view else method
    g = cfg.grid
    key = {"method": name, "seed": seed, **_run_key(cfg, g, "train_size", "test_sizes", "steps", "batch_size", "hidden_size"),
           "reinforce_learning_rate": g.reinforce_learning_rate}
    budget = dict(steps=g.steps, batch_size=g.batch_size, hidden_size=g.hidden_size)
    model_config = cfg.model_config(g.hidden_size)

    def run(run_dir: Path) -> dict:
        task = GridTask(view=view or "field")  # the text methods never render a state
        problems = task.sample_range(seed, 4, g.train_size, min_size=3)
        trajs = [task.state_trajectory(p) for p in problems]
        demo_steps = sum(len(t.steps) for t in trajs)
        info: dict[str, Any] = {"demonstration_steps": demo_steps}
        if method == "pal-lm":
            model, tok, pal, res = _pal(cfg, run_dir, "state", seed, trajs, **budget)
            policy = LMPolicy(model, tok, task, pal.step_format, mode="state")
        elif method in ("text-history", "text-outcome"):
            mode = method.split("-")[1]
            model, tok, pal, res = _pal(cfg, run_dir, mode, seed, trajs, **budget)
            policy = LMPolicy(model, tok, task, pal.step_format, mode=mode)
        elif method == "pal-head":
            backbone, tok = build_tiny_model(model_config, seed=seed)
            head = ActionHeadConfig(
                output_dir=str(run_dir), actions=tuple(MOVES), lam=cfg.lam, learning_rate=cfg.learning_rate,
                batch_size=g.batch_size, max_steps=g.steps, warmup_steps=min(50, g.steps // 10),
                seed=seed, progress=cfg.progress,
            )
            res = train_action_head(head, model=backbone, tokenizer=tok, trajectories=trajs)
            policy = ActionHeadPolicy(res.model, task)
        else:  # reinforce: the same policy class as pal-head, as many environment steps as PAL's demonstrations
            backbone, tok = build_tiny_model(model_config, seed=seed)
            policy = ActionHeadModel(backbone, tok, tuple(MOVES), seed=seed)
            rl = ReinforceConfig(output_dir=str(run_dir), env_steps=demo_steps,
                                 learning_rate=g.reinforce_learning_rate, seed=seed, progress=cfg.progress)
            res = train_reinforce(rl, policy=policy, task=task, problems=problems)
            info.update(env_steps=res.env_steps, updates=res.updates)
            policy = ActionHeadPolicy(res.policy, task)
        info["final_train_metrics"] = res.final_metrics
        seen = set(problems)
        evals = {}
        for size in g.test_sizes:
            probs = [p for p in task.sample(10_000 + seed, size, 2 * cfg.test_size) if p not in seen][: cfg.test_size]
            outs = complete(policy, start(task, probs))
            per = [grid_metrics(p, ts[0].meta["answer"]) for p, ts in zip(probs, outs)]
            evals[str(size)] = {m: statistics.fmean(x[m] for x in per) for m in ("success", "spl", "optimal")}
            evals[str(size)]["n"] = len(per)
        return {"method": name, "seed": seed, "eval": evals, **info}

    return cached_run(Path(cfg.output_dir) / "grid" / f"{name}-seed{seed}", key, run)


# --- logic -----------------------------------------------------------------------------------------------
def logic_run(cfg: PaperBenchConfig, method: str, seed: int, train_max: int = 5) -> dict:
    """Chains of 2..train_max letters in training; tested at train_max and 2 x train_max letters."""
    lg = cfg.logic
    key = {"method": method, "seed": seed, **_run_key(cfg, lg, "train_size", "steps"), "hidden_size": lg.hidden_size,
           "batch_size": lg.batch_size}

    def run(run_dir: Path) -> dict:
        task = LogicTask()
        problems = task.sample_range(seed, train_max, lg.train_size)
        trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
        model, tok, pal, res = _pal(cfg, run_dir, method, seed, trajs, batch_size=lg.batch_size, steps=lg.steps,
                                    hidden_size=lg.hidden_size)
        seen, evals = set(problems), {}
        for size in (train_max, 2 * train_max):
            probs = [p for p in task.sample(10_000 + seed, size, 2 * cfg.test_size) if p not in seen][: cfg.test_size]
            evals[str(size)] = evaluate(LMPolicy(model, tok, task, pal.step_format, mode=method), probs)
        return {"method": method, "seed": seed, "eval": evals, "final_train_metrics": res.final_metrics}

    return cached_run(Path(cfg.output_dir) / "logic" / f"{method}-seed{seed}", key, run)


# --- word problems ------------------------------------------------------------------------------------------
def word_run(cfg: PaperBenchConfig, method: str, seed: int, train_ops: int = 5, mu: float = 0.0,
             consistency: str = "hidden") -> dict:
    """Stories of 2..train_ops operations in training; tested on fresh train_ops-operation stories, clean
    and with ``word_problems.test_noise`` irrelevant sentences (the same stories otherwise). ``mu > 0``: the
    consistency arm, cached under ``consistency/``."""
    w = cfg.word_problems
    key = {"method": method, "seed": seed,
           **_run_key(cfg, w, "train_size", "batch_size", "steps", "max_value", "train_noise", "test_noise"),
           "hidden_size": w.hidden_size}
    name, folder = method, "word_problems"
    if mu > 0:
        key.update(mu=mu, consistency=consistency)
        name, folder = f"{method} mu={mu:g} {consistency}", "consistency"

    def run(run_dir: Path) -> dict:
        per_level = -(-w.train_size // len(w.train_noise))
        problems = [p for i, n in enumerate(w.train_noise)
                    for p in WordProblemTask(n, w.max_value).sample_range(seed * 100 + i, train_ops, per_level)]
        task = WordProblemTask(max_value=w.max_value)
        trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
        # the same stories per optimizer step in every method: a state-mode row is one step of a story
        rows_per_story = sum(len(t.steps) for t in trajs) / len(trajs) if method == "state" else 1
        batch = max(1, round(w.batch_size * rows_per_story))
        model, tok, pal, res = _pal(cfg, run_dir, method, seed, trajs, batch_size=batch,
                                    steps=w.steps, hidden_size=w.hidden_size, mu=mu,
                                    consistency=consistency)
        evals = {}
        for label, noise in (("clean", 0), ("noisy", w.test_noise)):
            probs = task.sample(10_000 + seed, train_ops, cfg.test_size, noise=noise)
            evals[label] = evaluate(LMPolicy(model, tok, task, pal.step_format, mode=method), probs)
        return {"method": name, "seed": seed, "eval": evals, "batch_size": pal.batch_size,
                "final_train_metrics": res.final_metrics}

    return cached_run(Path(cfg.output_dir) / folder / f"{name.replace(' ', '-')}-seed{seed}", key, run)


# --- consistency ----------------------------------------------------------------------------------------------
def consistency_run(cfg: PaperBenchConfig, kind: str, seed: int) -> dict:
    """PAL-state on word problems with mu = consistency.mu and the ``kind`` loss over steps with equal
    ``q op n`` keys (the same sub-problem in differently worded stories): the word-problem row's PAL-state
    run, everything equal but mu. (A state's own rendering would be a useless key in state mode: rows
    with equal states are equal inputs, so their hidden states are already equal.)"""
    return word_run(cfg, "state", seed, mu=cfg.consistency.mu, consistency=kind)


# --- aggregation, table, plots -------------------------------------------------------------------------------
def aggregate(runs: list[dict]) -> dict:
    """``{method: {condition: {metric: stat}}}`` over the seeds of each method."""
    table: dict = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        table[method] = {
            cond: {m: stat([r["eval"][cond].get(m) for r in mine]) for m in mine[0]["eval"][cond] if m != "n"}
            for cond in mine[0]["eval"]
        }
    return table


def format_rows(tables: dict, cfg: PaperBenchConfig) -> list[list[str]]:
    """One line per (task, method, condition): ours (mean ± std over seeds, %) beside the paper's figure."""
    rows = [["task", "method", "test", "metric", "ours (%)", "also", "paper"]]
    add_paper = PAPER["addition"]
    for method, conds in tables.get("addition", {}).items():
        for cond, m in conds.items():
            also = f"trace valid {_pct(m.get('trace_valid'))}" if m.get("trace_valid") else ""
            paper = add_paper.get(method, "") if cond == "5" else ""
            rows.append(["addition", method, f"{cond} digits", "exact", _pct(m["exact_match"]), also, paper])
    for method, conds in tables.get("grid", {}).items():
        for cond, m in conds.items():
            paper = ""
            if cond == "6":
                paper = PAPER["grid"]["pal" if method.startswith("pal") else "baseline"]
            rows.append(["grid", method, f"{cond}x{cond}", "success", _pct(m["success"]),
                         f"SPL {_pct(m['spl'])}; optimal {_pct(m['optimal'])}", paper])
    for method, conds in tables.get("logic", {}).items():
        for cond, m in conds.items():
            also = f"trace valid {_pct(m.get('trace_valid'))}" if m.get("trace_valid") else "chance 50"
            paper = (PAPER["logic"]["outcome" if method == "outcome" else "pal"]) if cond == "10" else ""
            rows.append(["logic", method, f"{cond} letters", "exact", _pct(m["exact_match"]), also, paper])
    word = tables.get("word_problems", {})
    for method, conds in word.items():
        paper_clean, paper_gap = PAPER["word_problems"]["outcome" if method == "outcome" else "pal"]
        for cond, m in conds.items():
            also = f"trace valid {_pct(m.get('trace_valid'))}" if m.get("trace_valid") else ""
            rows.append(["word_problems", method, f"5 ops, {cond}", "exact", _pct(m["exact_match"]), also,
                         paper_clean if cond == "clean" else ""])
        gap = tables["word_gaps"][method]
        rows.append(["word_problems", method, f"noise gap ({cfg.word_problems.test_noise} sentences)", "clean - noisy",
                     _pct(gap), "points", paper_gap])
    for method, conds in tables.get("consistency", {}).items():
        for cond, m in conds.items():
            rows.append(["consistency", method, f"word 5 ops, {cond}", "exact", _pct(m["exact_match"]),
                         f"trace valid {_pct(m.get('trace_valid'))}", "no figure"])
    return rows


def _plot(path: Path, title: str, xlabels: list[str], series: dict[str, tuple[list[float], list[float]]],
          ylabel: str, note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(series), 1)
    for i, (label, (means, stds)) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(xlabels))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 130)  # room for the legend above 100%
    ax.set_title(title, fontsize=10)
    if note:
        ax.text(0.01, 0.97, note, transform=ax.transAxes, fontsize=7, va="top", color="grey")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_task(task: str, table: dict, cfg: PaperBenchConfig, path: Path) -> None:
    metric = "success" if task == "grid" else "exact_match"
    conds = list(next(iter(table.values())))
    series = {
        m: ([100 * table[m][c][metric]["mean"] for c in conds], [100 * table[m][c][metric]["sample_std"] for c in conds])
        for m in table
    }
    seeds = f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''}, mean ± std"
    titles = {
        "addition": ("Addition, trained on 1-3 digits", [f"{c} digits" for c in conds],
                     "paper at 5 digits: outcome ~10%, PAL ~80%"),
        "grid": ("Grid navigation, trained on 3x3-4x4 (success)", [f"{c}x{c}" for c in conds],
                 "trail: window + offset + own trail; field: the environment marks which moves shorten the path"),
        "logic": ("Logic chains, trained on 2-5 letters", [f"{c} letters" for c in conds], "chance is 50%"),
        "word_problems": ("Word problems, 5 operations", [f"{c}" for c in conds],
                          f"noisy: {cfg.word_problems.test_noise} irrelevant sentences; paper: PAL ~80%, baseline ~60%"),
        "consistency": ("Consistency ablation: PAL-state on word problems, 5 ops", [f"{c}" for c in conds],
                        "mu = 0 vs mu > 0 over steps with equal q op n"),
    }
    title, xlabels, note = titles[task]
    _plot(path, f"{title} ({seeds})", xlabels, series, "success (%)" if task == "grid" else "exact match (%)", note)


# --- main --------------------------------------------------------------------------------------------------
def run_task(cfg: PaperBenchConfig, task: str) -> list[dict]:
    """Every (method, seed) run of one task (cached)."""
    if task == "addition":
        add = cfg.addition_config()
        return [run_one(add, m, s) for s in cfg.seeds for m in add.methods]
    if task == "grid":
        return [grid_run(cfg, m, v, s) for s in cfg.seeds for m in cfg.grid.methods
                for v in (cfg.grid.views if m in VIEWED else (None,))]
    if task == "logic":
        return [logic_run(cfg, m, s) for s in cfg.seeds for m in LM_METHODS]
    if task == "word_problems":
        return [word_run(cfg, m, s) for s in cfg.seeds for m in LM_METHODS]
    # consistency: mu = 0 is the word-problem row's PAL-state run (cached, shared)
    base = [{**word_run(cfg, "state", s), "method": "state mu=0"} for s in cfg.seeds]
    return base + [consistency_run(cfg, k, s) for k in cfg.consistency.kinds for s in cfg.seeds]


def main(cfg: PaperBenchConfig) -> dict:
    """Run (or read from the cache) every task of ``cfg.tasks``; write results.json and <task>.png; print
    the table of our figures beside the paper's. Returns the results with ``rows`` (the printed table)."""
    torch.set_num_threads(cfg.threads)
    quiet_transformers(cfg.progress)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables, runs, seconds = {}, {}, {}
    for task in cfg.tasks:
        t_task = time.perf_counter()
        runs[task] = run_task(cfg, task)
        seconds[task] = time.perf_counter() - t_task
        tables[task] = aggregate(runs[task])
        plot_task(task, tables[task], cfg, out / f"{task}.png")
    if "word_problems" in tables:
        tables["word_gaps"] = {
            m: stat([r["eval"]["clean"]["exact_match"] - r["eval"]["noisy"]["exact_match"]
                     for r in runs["word_problems"] if r["method"] == m])
            for m in LM_METHODS
        }
    rows = format_rows(tables, cfg)
    result = {
        "config": asdict(cfg), "tables": tables, "runs": runs, "paper": PAPER, "task_seconds": seconds,
        "wall_seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / "results.json")
    print(fit_table(rows, keys=2))
    if "grid" in tables:
        print(textwrap.fill("grid views: trail = 3x3 window + offset to the next waypoint + the cells visited since the "
              "last waypoint (what the agent sees and remembers); local = the same without the memory; field = the "
              "environment computes the distance field and marks which moves shorten the path (the executor plans).",
                            width=80))
    per_task = ", ".join(f"{t} {s:.0f}s" for t, s in seconds.items())
    reused, total = reused_runs(out, time.time() - result["wall_seconds"])
    print(textwrap.fill(f"{cached_note(reused, total, result['wall_seconds'])} ({per_task}); wrote {out}/results.json "
                        "and one PNG per task", width=80))
    return result


__all__ = ["PaperBenchConfig", "main", "QUICK", "FULL", "PAPER", "TASKS", "GRID_METHODS", "render", "format_rows",
           "grid_run", "logic_run", "word_run", "consistency_run", "run_task"]
