"""``procsup bench paper``: the synthetic rows of the PAL paper's Table 1, with our tasks.

Kartik & Shah (2025), sections 5.1 and 5.3 and Table 1. Every row trains the same tiny model (same
budget of optimizer steps x rows) with PAL and with a baseline, and tests where the paper tests:

* ``addition``: outcome-only vs PAL-history vs PAL-state, trained on 1-3 digits, tested at 5 digits
  (paper: ~10% vs ~80%). The runs are :func:`procsup.bench.addition.run_one` (with ``lr_grid``:
  :func:`~procsup.bench.addition.validate_one`, then :func:`~procsup.bench.addition.chosen_test`).
* ``grid``: trained on 3x3-4x4 grids, tested on 4x4, 6x6 (and 10x10, 20x20 when not quick). PAL in
  state mode with the move as text (``pal-lm``) and with an action head (``pal-head``), each with the
  ``trail`` view (3x3 window + clipped offset + the cells the agent visited since its last waypoint: what
  it sees and remembers), the ``field`` view (the environment marks which moves shorten the path: the
  planning is done by the executor) and, when not quick, the ``local`` view (the trail view without the
  memory). The paper's own forms (``GRID_FORMS``, marked "paper-faithful" in the table): its PAL,
  whole-path imitation on the grid text without per-step states (``text-history``: one move per step,
  scored on the moves it writes, executed by the environment; the answer line it copies is reported
  beside), and its outcome-only baselines, ``text-outcome`` (the move string alone) and REINFORCE on the
  success reward (``reinforce``, action head, per view) with as many optimizer updates as the supervised
  runs (``grid.reinforce_budget``; the environment steps it used are reported). Its own budget:
  ``grid.steps``, ``grid.batch_size``, ``grid.hidden_size`` (full: 1500 x 32 rows, width 64). Metrics:
  success, SPL, share optimal. Paper: PAL generalizes 4x4 -> 6x6 "with minimal performance loss", the
  baseline "seldom reaches the goal".
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

Learning rates: ``lr_grid`` (factors of each arm's default, the same for every arm) chooses each arm's
learning rate on a validation split separate from test, then tests the chosen runs once
(:func:`run_task`); the default ``(1,)`` runs every arm at its default with no selection.

Each row's settings are a group of :class:`PaperBenchConfig` (``procsup bench paper quick=true
grid.steps=100``). Every (task, method, seed) run is cached in
``<output_dir>/<task>/<method>-seed<k>/eval.json`` with the configuration it ran with; a re-run with the
same settings reads it instead of training (resume).
Writes ``results.json``, one PNG per task, and prints our figure beside the paper's.
"""

from __future__ import annotations

import random
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from procsup.bench.addition import AdditionBenchConfig, chosen_test, run_one, validate_one
from procsup.bench.addition import trivial_rows as addition_trivial
from procsup.bench.cache import cached_run
from procsup.bench.report import cached_note, fit_table, quiet_transformers, render, reused_runs, run_facts, stat
from procsup.bench.report import pct as _pct
from procsup.bench.select import choose, selection_record
from procsup.data.io import write_json
from procsup.evaluation.metrics import evaluate
from procsup.models.action_head import ActionHeadModel
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rl.reinforce import ReinforceConfig, train_reinforce
from procsup.rollout import ActionHeadPolicy, LMPolicy, complete, load_policy, start
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
    """REINFORCE's (constant) learning rate (ReinforceConfig's default); with ``lr_grid`` the default the
    grid's factors multiply."""
    reinforce_budget: str = "updates"
    """updates: REINFORCE makes as many optimizer updates as the supervised runs (``grid.steps`` updates of
    ``grid.batch_size`` episodes each; the environment steps it used are reported); env_steps: as many
    environment steps as the PAL demonstrations contain (the budget before 2026-12-07: 39 updates in quick
    mode against PAL's 300)."""

    def __post_init__(self) -> None:
        _check_row(self, ("train_size", "steps", "batch_size", "hidden_size"), ("test_sizes", "views", "methods"))
        if self.reinforce_budget not in ("updates", "env_steps"):
            raise ValueError(f"grid.reinforce_budget must be updates or env_steps, got {self.reinforce_budget!r}")
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
    lr_grid: tuple[float, ...] = (1.0,)
    """Learning-rate factors, the same for every arm (PAL and every baseline): each multiplies the arm's
    default (``learning_rate``; REINFORCE: ``grid.reinforce_learning_rate``). ``(1,)``: no selection, each
    run trained at its default and tested (the runs as before, read from the same cache). Otherwise every
    (arm, factor, seed) is trained and scored on a validation split (``val_size`` fresh problems of the
    training distribution, none in training or test); per arm the factor with the best validation score
    (mean over seeds; a tie goes to the factor nearest 1) is chosen, and only then is each seed's run of that
    factor tested, once. The choice is recorded in results.json (``selection``)."""
    train_only: bool = False
    """With ``lr_grid``: train and score on the validation split every (arm, factor, seed) of ``tasks``, then
    stop: no choice, no test problem read. For running tasks or seeds as separate processes (lanes) before
    one call, without it, chooses and tests from the cached runs."""
    val_size: int | None = None
    """Validation problems per seed and task when ``lr_grid`` selects (default: ``test_size``): grid 4x4,
    logic 5 letters, word problems 5 operations clean, addition 3 digits (the largest training size)."""
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
        self.lr_grid = tuple(float(f) for f in self.lr_grid)
        if not self.lr_grid or min(self.lr_grid) <= 0 or len(set(self.lr_grid)) != len(self.lr_grid):
            raise ValueError(f"lr_grid must be distinct factors > 0, got {self.lr_grid}")
        if self.train_only and not self.selecting:
            raise ValueError("train_only needs an lr_grid to choose from (without one every run is tested)")
        if self.val_size is None:
            self.val_size = self.test_size
        if self.val_size < 1:
            raise ValueError(f"val_size must be >= 1, got {self.val_size}")

    @property
    def selecting(self) -> bool:
        """Whether the learning rate is chosen on a validation split (any ``lr_grid`` but ``(1,)``)."""
        return self.lr_grid != (1.0,)

    def model_config(self, hidden_size: int) -> TinyModelConfig:
        return TinyModelConfig(arch=self.arch, hidden_size=hidden_size, num_layers=self.num_layers,
                               num_heads=self.num_heads)

    def addition_config(self, selecting: bool = False) -> AdditionBenchConfig:
        """The addition row's config; ``selecting``: with ``lr_grid`` and a validation split at the training
        length (3 digits), its runs in ``addition/<method>-lr<factor>-seed<k>`` (validation) and their
        ``test/`` (the chosen factor's test)."""
        add = self.addition
        extra: dict[str, Any] = {}
        folder = Path(self.output_dir) / "addition"
        if selecting:
            extra = dict(val_digits=(3,), val_size=self.val_size, lr_grid=self.lr_grid)
        return AdditionBenchConfig(
            output_dir=str(folder), seeds=self.seeds, train_size=add.train_size,
            test_digits=add.test_digits, test_size=self.test_size, steps=add.steps,
            batch_size=add.batch_size, learning_rate=self.learning_rate, lam=self.lam,
            arch=self.arch, hidden_size=add.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
            progress=self.progress, **extra,
        )


# --- one PAL training run ---------------------------------------------------------------------------
def train_lm(cfg: PaperBenchConfig, run_dir: Path, mode: str, seed: int, trajs, batch_size: int, steps: int,
             hidden_size: int, mu: float = 0.0, consistency: str = "hidden", learning_rate: float | None = None):
    """Train a fresh tiny LM with PAL (or outcome-only) on ``trajs`` (at ``learning_rate``, default
    ``cfg.learning_rate``); returns (model, tokenizer, PALConfig, TrainResult)."""
    model, tok = build_tiny_model(cfg.model_config(hidden_size), seed=seed)
    pal = PALConfig(
        output_dir=str(run_dir), mode=mode, lam=cfg.lam, mu=mu, consistency=consistency,
        learning_rate=learning_rate or cfg.learning_rate, batch_size=batch_size, max_steps=steps,
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


# --- one arm: trained and tested, or trained, validated, chosen, then tested ---------------------------
def fresh_problems(draw, count: int, exclude: set) -> list:
    """The first ``count`` problems of ``draw`` (a list) not in ``exclude``."""
    return [p for p in draw if p not in exclude][:count]


def _saved_policy(run_dir: Path, task, mode: str):
    """The policy a run of this module left in ``run_dir``: an action head (``model/``, written by the
    action-head trainer and by REINFORCE) or the PAL trainer's last checkpoint, read back from disk."""
    if (run_dir / "model").is_dir():
        return ActionHeadPolicy(ActionHeadModel.load(run_dir / "model"), task)
    last = max(run_dir.glob("checkpoint-*"), key=lambda d: int(d.name.rsplit("-", 1)[1]), default=None)
    if last is None:
        raise FileNotFoundError(f"{run_dir}: no saved model to test (model/ or checkpoint-*)")
    return load_policy(last, task, mode=mode)


def _arm(cfg: PaperBenchConfig, folder: str, name: str, seed: int, key: dict, default_lr: float,
         lr_factor: float | None, test: bool, train, evaluate_on, mode: str) -> dict:
    """One run of an arm. ``train(run_dir, lr) -> (policy, info, task)``; ``evaluate_on(policy, task, split)
    -> {condition: metrics}`` for split ``test`` or ``val``.

    ``lr_factor`` None: train at ``default_lr`` and test, one cached run in ``<folder>/<name>-seed<k>`` (the
    runs as before). Else: train at ``lr_factor x default_lr`` and score the validation split only, cached
    in ``<folder>/<name>-lr<factor>-seed<k>`` with the model kept; ``test=True`` then tests that model once,
    read back from disk (cached in the run's ``test/``). The validation run is the same either way (read
    from the cache when the selection ran first)."""
    slug = name.replace(" ", "-")
    if lr_factor is None:
        def run(run_dir: Path) -> dict:
            policy, info, task = train(run_dir, default_lr)
            return {"method": name, "seed": seed, "eval": evaluate_on(policy, task, "test"), **info}

        return cached_run(Path(cfg.output_dir) / folder / f"{slug}-seed{seed}", key, run)
    lr = lr_factor * default_lr
    run_dir = Path(cfg.output_dir) / folder / f"{slug}-lr{lr_factor:g}-seed{seed}"
    key = {**key, "lr_factor": lr_factor, "arm_learning_rate": lr, "val_size": cfg.val_size}

    def validate(run_dir: Path) -> dict:
        policy, info, task = train(run_dir, lr)
        return {"method": name, "seed": seed, "learning_rate": lr, "lr_factor": lr_factor,
                "val": evaluate_on(policy, task, "val"), **info}

    trained = cached_run(run_dir, key, validate)
    if not test:
        return trained

    def tested(test_dir: Path) -> dict:
        _, _, task = train(None, lr)  # the task only: train(None, ...) builds it without training
        return {"eval": evaluate_on(_saved_policy(run_dir, task, mode), task, "test")}

    result = cached_run(run_dir / "test", {**key, "split": "test"}, tested)
    return {**{k: v for k, v in trained.items() if k not in ("cached", "cached_from_other_source")},
            "eval": result["eval"], "test_seconds": result["seconds"]}


# --- addition ------------------------------------------------------------------------------------------
def addition_run(cfg: PaperBenchConfig, method: str, seed: int, lr_factor: float | None = None,
                 test: bool = True) -> dict:
    """One addition run. ``lr_factor`` None: trained at the default and tested
    (:func:`procsup.bench.addition.run_one`). Else trained at that factor of the learning rate and scored on
    3-digit validation problems only (:func:`~procsup.bench.addition.validate_one`: no test problem is
    evaluated); ``test=True`` then tests that trained model once (:func:`~procsup.bench.addition.chosen_test`),
    which :func:`run_task` asks for the chosen factor only."""
    if lr_factor is None:
        return run_one(cfg.addition_config(), method, seed)
    add = cfg.addition_config(selecting=True)
    return (chosen_test if test else validate_one)(add, method, seed, lr_factor)


# --- grid ----------------------------------------------------------------------------------------------
#: What each grid arm is, beside the paper's setup (section 5.2: PAL "training on full action sequences" vs
#: outcome-only "training only with a reward for reaching the goal, or imitation on final state").
GRID_FORMS = {
    "text-history": "paper-faithful PAL (imitates the whole move sequence; scored on the moves it writes)",
    "text-outcome": "paper-faithful outcome baseline (imitates the final move string)",
    "reinforce": "paper-faithful reward baseline (REINFORCE on reaching the goal)",
    "pal-lm": "state-mode PAL (ours: executor-rendered view, move as text)",
    "pal-head": "state-mode PAL (ours: executor-rendered view, action head)",
}


def written_moves(task: GridTask, problem, steps) -> str | None:
    """The moves a history-mode model wrote, executed by the environment from the start as a state-mode
    episode would be: it stops at the goal or at the step limit (moves written after that are not run) and
    an illegal move ends it. The moves executed if the episode reached its end (done), else None."""
    state = task.initial_state(problem)
    for step in steps:
        if task.is_done(state):
            break
        state = task.execute(state, step.action)
        if state is None:
            return None
    return task.answer(state) if task.is_done(state) else None


def grid_eval(task: GridTask, method: str, policy, probs) -> dict:
    """Success, SPL and share optimal of one greedy rollout per problem. ``text-history`` is scored on the
    moves it writes (:func:`written_moves`); its copied answer line is reported as ``answer_line_success``."""
    outs = complete(policy, start(task, probs))
    if method == "text-history":
        answers = [written_moves(task, p, ts[0].steps) for p, ts in zip(probs, outs)]
    else:
        answers = [ts[0].meta["answer"] for ts in outs]
    per = [grid_metrics(p, a) for p, a in zip(probs, answers)]
    out = {m: statistics.fmean(x[m] for x in per) for m in ("success", "spl", "optimal")}
    if method == "text-history":
        out["answer_line_success"] = statistics.fmean(
            grid_metrics(p, ts[0].meta["answer"])["success"] for p, ts in zip(probs, outs))
    return {**out, "n": len(per)}


def grid_test_sets(cfg: PaperBenchConfig, task: GridTask, seed: int, seen: set) -> dict:
    """``{side: the first test_size problems of that side not in seen}`` for every ``grid.test_sizes``."""
    return {size: fresh_problems(task.sample(10_000 + seed, size, 2 * cfg.test_size), cfg.test_size, seen)
            for size in cfg.grid.test_sizes}


def grid_run(cfg: PaperBenchConfig, method: str, view: str | None, seed: int, lr_factor: float | None = None,
             test: bool = True) -> dict:
    """One grid method (``view`` for the state-based ones), trained on sides 3..4, tested at every side
    (``lr_factor``, ``test``: :func:`_arm`; validation: fresh 4x4 problems)."""
    name = f"{method}-{view}" if view else method
    g = cfg.grid
    key = {"method": name, "seed": seed, **_run_key(cfg, g, "train_size", "test_sizes", "steps", "batch_size", "hidden_size"),
           "reinforce_learning_rate": g.reinforce_learning_rate}
    if method == "reinforce" and g.reinforce_budget != "env_steps":
        key.update(reinforce_budget=g.reinforce_budget, reinforce_episodes=g.batch_size)
    if method == "text-history":
        key["text_history_score"] = "moves"
    budget = dict(steps=g.steps, batch_size=g.batch_size, hidden_size=g.hidden_size)
    model_config = cfg.model_config(g.hidden_size)
    task = GridTask(view=view or "field")  # the text methods never render a state
    problems = task.sample_range(seed, 4, g.train_size, min_size=3)

    def train(run_dir: Path | None, lr: float):
        if run_dir is None:
            return None, {}, task
        trajs = [task.state_trajectory(p) for p in problems]
        demo_steps = sum(len(t.steps) for t in trajs)
        info: dict[str, Any] = {"demonstration_steps": demo_steps}
        if method == "pal-lm":
            model, tok, pal, res = train_lm(cfg, run_dir, "state", seed, trajs, **budget, learning_rate=lr)
            policy = LMPolicy(model, tok, task, pal.step_format, mode="state")
        elif method in ("text-history", "text-outcome"):
            mode = method.split("-")[1]
            model, tok, pal, res = train_lm(cfg, run_dir, mode, seed, trajs, **budget, learning_rate=lr)
            policy = LMPolicy(model, tok, task, pal.step_format, mode=mode)
        elif method == "pal-head":
            backbone, tok = build_tiny_model(model_config, seed=seed)
            head = ActionHeadConfig(
                output_dir=str(run_dir), actions=tuple(MOVES), lam=cfg.lam, learning_rate=lr,
                batch_size=g.batch_size, max_steps=g.steps, warmup_steps=min(50, g.steps // 10),
                seed=seed, progress=cfg.progress,
            )
            res = train_action_head(head, model=backbone, tokenizer=tok, trajectories=trajs)
            policy = ActionHeadPolicy(res.model, task)
        else:  # reinforce: the same policy class as pal-head
            backbone, tok = build_tiny_model(model_config, seed=seed)
            policy = ActionHeadModel(backbone, tok, tuple(MOVES), seed=seed)
            if g.reinforce_budget == "updates":  # PAL's optimizer updates; the env-step cap is never reached
                longest = max(len(t.steps) for t in trajs)
                budget_rl = dict(max_updates=g.steps, episodes_per_update=g.batch_size,
                                 env_steps=g.steps * g.batch_size * 4 * longest)
            else:  # as many environment steps as PAL's demonstrations
                budget_rl = dict(env_steps=demo_steps)
            rl = ReinforceConfig(output_dir=str(run_dir), learning_rate=lr, seed=seed, progress=cfg.progress,
                                 **budget_rl)
            res = train_reinforce(rl, policy=policy, task=task, problems=problems)
            info.update(env_steps=res.env_steps, updates=res.updates, episodes=res.episodes)
            policy = ActionHeadPolicy(res.policy, task)
        info["final_train_metrics"] = res.final_metrics
        return policy, info, task

    def evaluate_on(policy, task, split: str) -> dict:
        seen = set(problems)
        test = grid_test_sets(cfg, task, seed, seen)
        if split == "val":
            val = fresh_problems(task.sample(20_000 + seed, 4, 3 * cfg.val_size), cfg.val_size, seen | set(test.get(4, ())))
            return {"4": grid_eval(task, method, policy, val)}
        return {str(size): grid_eval(task, method, policy, probs) for size, probs in test.items()}

    default_lr = g.reinforce_learning_rate if method == "reinforce" else cfg.learning_rate
    mode = "state" if method.startswith("pal") or method == "reinforce" else method.split("-")[1]
    return _arm(cfg, "grid", name, seed, key, default_lr, lr_factor, test, train, evaluate_on, mode)


# --- logic -----------------------------------------------------------------------------------------------
def logic_test_sets(cfg: PaperBenchConfig, task: LogicTask, seed: int, seen: set, train_max: int = 5) -> dict:
    """``{n: the first test_size chains of n letters not in seen}`` for n = train_max and 2 x train_max."""
    return {n: fresh_problems(task.sample(10_000 + seed, n, 2 * cfg.test_size), cfg.test_size, seen)
            for n in (train_max, 2 * train_max)}


def logic_run(cfg: PaperBenchConfig, method: str, seed: int, train_max: int = 5, lr_factor: float | None = None,
              test: bool = True) -> dict:
    """Chains of 2..train_max letters in training; tested at train_max and 2 x train_max letters
    (validation: fresh chains of train_max letters)."""
    lg = cfg.logic
    key = {"method": method, "seed": seed, **_run_key(cfg, lg, "train_size", "steps"), "hidden_size": lg.hidden_size,
           "batch_size": lg.batch_size}
    task = LogicTask()
    problems = task.sample_range(seed, train_max, lg.train_size)

    def train(run_dir: Path | None, lr: float):
        if run_dir is None:
            return None, {}, task
        trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
        model, tok, pal, res = train_lm(cfg, run_dir, method, seed, trajs, batch_size=lg.batch_size, steps=lg.steps,
                                    hidden_size=lg.hidden_size, learning_rate=lr)
        return LMPolicy(model, tok, task, pal.step_format, mode=method), {"final_train_metrics": res.final_metrics}, task

    def evaluate_on(policy, task, split: str) -> dict:
        seen = set(problems)
        test = logic_test_sets(cfg, task, seed, seen, train_max)
        if split == "val":
            val = fresh_problems(task.sample(20_000 + seed, train_max, 3 * cfg.val_size), cfg.val_size,
                         seen | set(test[train_max]))
            return {str(train_max): evaluate(policy, val)}
        return {str(size): evaluate(policy, probs) for size, probs in test.items()}

    return _arm(cfg, "logic", method, seed, key, cfg.learning_rate, lr_factor, test, train, evaluate_on, method)


# --- word problems ------------------------------------------------------------------------------------------
def word_train_problems(w: WordProblemsRowConfig, seed: int, train_ops: int = 5) -> list:
    """The training stories of ``seed``: 2..train_ops operations, split evenly over ``w.train_noise``."""
    per_level = -(-w.train_size // len(w.train_noise))
    return [p for i, n in enumerate(w.train_noise)
            for p in WordProblemTask(n, w.max_value).sample_range(seed * 100 + i, train_ops, per_level)]


def word_test_sets(cfg: PaperBenchConfig, task: WordProblemTask, seed: int, train_ops: int = 5) -> dict:
    """``{"clean": stories, "noisy": the same with word_problems.test_noise irrelevant sentences}``."""
    return {label: task.sample(10_000 + seed, train_ops, cfg.test_size, noise=noise)
            for label, noise in (("clean", 0), ("noisy", cfg.word_problems.test_noise))}


def word_run(cfg: PaperBenchConfig, method: str, seed: int, train_ops: int = 5, mu: float = 0.0,
             consistency: str = "hidden", lr_factor: float | None = None, test: bool = True) -> dict:
    """Stories of 2..train_ops operations in training; tested on fresh train_ops-operation stories, clean
    and with ``word_problems.test_noise`` irrelevant sentences (the same stories otherwise); validation:
    fresh clean train_ops-operation stories. ``mu > 0``: the consistency arm, cached under ``consistency/``."""
    w = cfg.word_problems
    key = {"method": method, "seed": seed,
           **_run_key(cfg, w, "train_size", "batch_size", "steps", "max_value", "train_noise", "test_noise"),
           "hidden_size": w.hidden_size}
    name, folder = method, "word_problems"
    if mu > 0:
        key.update(mu=mu, consistency=consistency)
        name, folder = f"{method} mu={mu:g} {consistency}", "consistency"
    problems = word_train_problems(w, seed, train_ops)
    task = WordProblemTask(max_value=w.max_value)

    def train(run_dir: Path | None, lr: float):
        if run_dir is None:
            return None, {}, task
        trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
        # the same stories per optimizer step in every method: a state-mode row is one step of a story
        rows_per_story = sum(len(t.steps) for t in trajs) / len(trajs) if method == "state" else 1
        batch = max(1, round(w.batch_size * rows_per_story))
        model, tok, pal, res = train_lm(cfg, run_dir, method, seed, trajs, batch_size=batch,
                                    steps=w.steps, hidden_size=w.hidden_size, mu=mu,
                                    consistency=consistency, learning_rate=lr)
        info = {"batch_size": pal.batch_size, "final_train_metrics": res.final_metrics}
        return LMPolicy(model, tok, task, pal.step_format, mode=method), info, task

    def evaluate_on(policy, task, split: str) -> dict:
        if split == "val":
            clean = set(word_test_sets(cfg, task, seed, train_ops)["clean"])
            val = fresh_problems(task.sample(20_000 + seed, train_ops, 2 * cfg.val_size, noise=0), cfg.val_size,
                         set(problems) | clean)
            return {"clean": evaluate(policy, val)}
        return {label: evaluate(policy, probs) for label, probs in word_test_sets(cfg, task, seed, train_ops).items()}

    return _arm(cfg, folder, name, seed, key, cfg.learning_rate, lr_factor, test, train, evaluate_on, method)


# --- consistency ----------------------------------------------------------------------------------------------
def consistency_run(cfg: PaperBenchConfig, kind: str, seed: int, lr_factor: float | None = None,
                    test: bool = True) -> dict:
    """PAL-state on word problems with mu = consistency.mu and the ``kind`` loss over steps with equal
    ``q op n`` keys (the same sub-problem in differently worded stories): the word-problem row's PAL-state
    run, everything equal but mu. (A state's own rendering would be a useless key in state mode: rows
    with equal states are equal inputs, so their hidden states are already equal.)"""
    return word_run(cfg, "state", seed, mu=cfg.consistency.mu, consistency=kind, lr_factor=lr_factor, test=test)


# --- trivial rows --------------------------------------------------------------------------------------------
@dataclass
class RandomMoves:
    """A state-mode policy that draws every move uniformly at random (seeded): the grid's trivial row, run
    through the same environment, step limit and test problems as the trained policies."""

    task: Any
    seed: int
    mode: str = "state"
    max_steps: int | None = None
    device: ClassVar[torch.device] = torch.device("cpu")

    def __post_init__(self) -> None:
        self.rng = random.Random(f"random-moves/{self.seed}")

    def propose(self, states: list[str], n: int = 1) -> list[list[str]]:
        return [[self.rng.choice(tuple(MOVES)) for _ in range(n)] for _ in states]


def majority_answer(task, problems, sets: dict) -> dict:
    """Exact match of the most common training answer on each test set."""
    answer = statistics.mode(task.expert(p).target for p in problems)
    return {cond: {"exact_match": statistics.fmean(task.check_answer(p, answer) for p in probs), "n": len(probs)}
            for cond, probs in sets.items()}


def trivial_runs(cfg: PaperBenchConfig, task: str) -> list[dict]:
    """The trivial rows of a task, per seed, on that seed's test problems (no training): grid, uniformly
    random moves (``random moves``); logic and word problems, the most common training answer
    (``majority``); addition, :func:`procsup.bench.addition.trivial_rows`' majority answer. Consistency
    has none (its rows are word problems')."""
    out = []
    for seed in cfg.seeds:
        if task == "addition":
            t = addition_trivial(cfg.addition_config(), seed)
            out.append({"method": "majority", "seed": seed,
                        "eval": {d: {"exact_match": v} for d, v in t["majority"].items()}})
        elif task == "grid":
            g, gt = cfg.grid, GridTask(view="field")
            key = {"trivial": "random moves", "seed": seed, "train_size": g.train_size, "test_sizes": g.test_sizes,
                   "test_size": cfg.test_size}

            def grid_random(_: Path, gt=gt, seed=seed) -> dict:
                sets = grid_test_sets(cfg, gt, seed, set(gt.sample_range(seed, 4, g.train_size, min_size=3)))
                return {"method": "random moves", "seed": seed,
                        "eval": {str(s): grid_eval(gt, "random", RandomMoves(gt, seed), p) for s, p in sets.items()}}

            out.append(cached_run(Path(cfg.output_dir) / "grid" / f"trivial-seed{seed}", key, grid_random))
        elif task == "logic":
            lt = LogicTask()
            problems = lt.sample_range(seed, 5, cfg.logic.train_size)
            sets = {str(n): probs for n, probs in logic_test_sets(cfg, lt, seed, set(problems)).items()}
            out.append({"method": "majority", "seed": seed, "eval": majority_answer(lt, problems, sets)})
        elif task == "word_problems":
            wt = WordProblemTask(max_value=cfg.word_problems.max_value)
            problems = word_train_problems(cfg.word_problems, seed)
            out.append({"method": "majority", "seed": seed, "eval": majority_answer(wt, problems, word_test_sets(cfg, wt, seed))})
    return out


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
            paper = add_paper.get(method, "") if cond in ("5", 5) else ""
            rows.append(["addition", method, f"{cond} digits", "exact", _pct(m["exact_match"]), also, paper])
    for method, conds in tables.get("grid", {}).items():
        for cond, m in conds.items():
            paper = ""
            if cond == "6" and method != "random moves":
                paper = PAPER["grid"]["pal" if method.startswith(("pal", "text-history")) else "baseline"]
            also = f"SPL {_pct(m['spl'])}; optimal {_pct(m['optimal'])}"
            if m.get("answer_line_success"):
                also += f"; answer line {_pct(m['answer_line_success'])}"
            form = next((f for k, f in GRID_FORMS.items() if method.startswith(k)), "")
            if form.startswith("paper-faithful"):
                also = f"paper-faithful; {also}"
            rows.append(["grid", method, f"{cond}x{cond}", "success", _pct(m["success"]), also, paper])
    for method, conds in tables.get("logic", {}).items():
        for cond, m in conds.items():
            also = f"trace valid {_pct(m.get('trace_valid'))}" if m.get("trace_valid") else "chance 50"
            paper = (PAPER["logic"]["outcome" if method == "outcome" else "pal"]) if cond == "10" else ""
            paper = "" if method == "majority" else paper
            rows.append(["logic", method, f"{cond} letters", "exact", _pct(m["exact_match"]), also, paper])
    word = tables.get("word_problems", {})
    for method, conds in word.items():
        paper_clean, paper_gap = PAPER["word_problems"]["outcome" if method == "outcome" else "pal"]
        if method == "majority":
            paper_clean, paper_gap = "", ""
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
def task_arms(cfg: PaperBenchConfig, task: str) -> list[tuple[str, Any]]:
    """The arms of one task, in table order: ``(name, fn)`` with ``fn(seed, lr_factor, test)`` one run."""
    if task == "addition":
        return [(m, lambda s, f, t, m=m: addition_run(cfg, m, s, f, t)) for m in cfg.addition_config().methods]
    if task == "grid":
        return [(f"{m}-{v}" if v else m, lambda s, f, t, m=m, v=v: grid_run(cfg, m, v, s, f, t))
                for m in cfg.grid.methods for v in (cfg.grid.views if m in VIEWED else (None,))]
    if task == "logic":
        return [(m, lambda s, f, t, m=m: logic_run(cfg, m, s, lr_factor=f, test=t)) for m in LM_METHODS]
    if task == "word_problems":
        return [(m, lambda s, f, t, m=m: word_run(cfg, m, s, lr_factor=f, test=t)) for m in LM_METHODS]
    # consistency: mu = 0 is the word-problem row's PAL-state run (cached, shared)
    base = ("state mu=0", lambda s, f, t: {**word_run(cfg, "state", s, lr_factor=f, test=t), "method": "state mu=0"})
    return [base] + [(f"state mu={cfg.consistency.mu:g} {k}",
                      lambda s, f, t, k=k: consistency_run(cfg, k, s, lr_factor=f, test=t))
                     for k in cfg.consistency.kinds]


#: The validation score the learning rate is chosen on: (condition, metric) of a run's ``val``.
VAL_METRIC = {"addition": ("3", "exact_match"), "grid": ("4", "success"), "logic": ("5", "exact_match"),
              "word_problems": ("clean", "exact_match"), "consistency": ("clean", "exact_match")}


def run_task(cfg: PaperBenchConfig, task: str, selection: dict | None = None) -> list[dict]:
    """Every (method, seed) run of one task (cached). With ``cfg.lr_grid`` selecting: every (arm, factor,
    seed) validated first, one factor chosen per arm (recorded in ``selection[arm]`` when given), then each
    seed's run of that factor tested."""
    arms = task_arms(cfg, task)
    if not cfg.selecting:
        return [fn(s, None, True) for s in cfg.seeds for _, fn in arms]
    cond, metric = VAL_METRIC[task]
    scores = {name: {f: [fn(s, f, False)["val"][cond][metric] for s in cfg.seeds] for f in cfg.lr_grid}
              for name, fn in arms}
    if cfg.train_only:  # a lane: the validation runs above, no choice and no test
        return []
    chosen = {}
    for name, _ in arms:
        default = cfg.grid.reinforce_learning_rate if name.startswith("reinforce") else cfg.learning_rate
        record = selection_record(scores[name], default, f"{metric} at {cond} (validation)")
        chosen[name] = record["chosen_factor"]
        if selection is not None:
            selection[name] = record
    return [fn(s, chosen[name], True) for s in cfg.seeds for name, fn in arms]


def main(cfg: PaperBenchConfig) -> dict:
    """Run (or read from the cache) every task of ``cfg.tasks``; write results.json and <task>.png; print
    the table of our figures beside the paper's. Returns the results with ``rows`` (the printed table)."""
    torch.set_num_threads(cfg.threads)
    quiet_transformers(cfg.progress)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables, runs, seconds, selection = {}, {}, {}, {}
    if cfg.train_only:
        for task in cfg.tasks:
            run_task(cfg, task)
        print(f"trained and validated {', '.join(cfg.tasks)} (seeds {list(cfg.seeds)}, learning-rate factors "
              f"{list(cfg.lr_grid)}) in {time.perf_counter() - t0:.0f}s; nothing tested (train_only)")
        return {"train_only": True}
    for task in cfg.tasks:
        t_task = time.perf_counter()
        runs[task] = run_task(cfg, task, selection.setdefault(task, {}) if cfg.selecting else None)
        runs[task] += trivial_runs(cfg, task)
        seconds[task] = time.perf_counter() - t_task
        tables[task] = aggregate(runs[task])
        plot_task(task, tables[task], cfg, out / f"{task}.png")
    if "word_problems" in tables:
        tables["word_gaps"] = {
            m: stat([r["eval"]["clean"]["exact_match"] - r["eval"]["noisy"]["exact_match"]
                     for r in runs["word_problems"] if r["method"] == m])
            for m in tables["word_problems"]
        }
    rows = format_rows(tables, cfg)
    result = {
        "config": asdict(cfg), "tables": tables, "runs": runs, "paper": PAPER, "task_seconds": seconds,
        **({"selection": selection} if cfg.selecting else {}), "grid_forms": GRID_FORMS,
        "wall_seconds": time.perf_counter() - t0, **run_facts(), "rows": rows,
    }
    write_json(out / "results.json", result)
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


__all__ = ["PaperBenchConfig", "main", "QUICK", "FULL", "PAPER", "TASKS", "GRID_METHODS", "GRID_FORMS", "render",
           "format_rows", "grid_run", "logic_run", "word_run", "consistency_run", "addition_run", "run_task",
           "task_arms", "choose", "written_moves", "grid_eval", "trivial_runs", "RandomMoves",
           "grid_test_sets", "logic_test_sets", "word_test_sets", "word_train_problems", "train_lm", "fresh_problems",
           "majority_answer"]
