"""``python -m procsup.bench.positions``: task-given positions on logic and word problems (issue 18).

The arms of ``procsup bench paper``'s logic and word-problem rows that the issue asks for beside each other:
PAL-history and outcome-only, each with the task's coupled position ids and with the model's default ids,
same model, data, budget and settings (``history-coupled``, ``outcome-coupled``, ``history``, ``outcome``).

* logic: step t sits at the ids of the fact it uses (:meth:`~procsup.tasks.logic.LogicTask.coupled_positions`);
  trained on chains of 2..``logic_train_max`` letters, tested at ``logic_test_sizes`` (in distribution and
  twice as long), validated at ``logic_val_sizes``.
* word problems: step t sits in sentence t's block
  (:meth:`~procsup.tasks.word_problems.WordProblemTask.coupled_positions`); trained on clean stories of
  2..``word_train_ops`` operations (the rule couples step t with sentence t, which a story with irrelevant
  sentences breaks), tested on clean stories of ``word_test_ops`` operations, validated at ``word_val_ops``.

Coupled training rows place their blocks at random increasing slots (a ``spread`` share of rows) up to the
longest evaluated problem's block count and shift them by a random start offset up to ``offset_blocks``
strides (:func:`~procsup.data.positions.randomized_rows`, as ``procsup bench addition coupling=true``);
test rows use the rule with blocks one apart and offset 0. Training reuses the paper bench's PAL run
(:func:`procsup.bench.paper.train_lm`); each (task, arm, seed) run is cached in
``<output_dir>/<task>/<arm>-seed<k>/eval.json`` (resume). Trivial rows (``trivial=true``): the majority
training answer and each seed's untrained model through the same generation and ids, on the first
``trivial_size`` test problems (logic's answer is ``<`` or ``>``: chance is 50%).

Writes ``results.json`` (per-run metrics, a table of mean, sample std over seeds and per-seed values) and
prints the table.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from procsup.bench.cache import cached_run
from procsup.bench.paper import PaperBenchConfig, fresh_problems, majority_answer, train_lm
from procsup.bench.report import begin, pct, run_facts, stat
from procsup.data.io import write_json
from procsup.data.positions import randomized_rows
from procsup.data.tokenize import StepFormat
from procsup.evaluation.metrics import evaluate
from procsup.models.factory import build_tiny_model
from procsup.rollout import LMPolicy
from procsup.tasks.logic import LogicTask
from procsup.tasks.word_problems import WordProblemTask

TASKS = ("logic", "word_problems")
ARMS = ("history-coupled", "outcome-coupled", "history", "outcome")
STRIDES = {"logic": 12, "word_problems": 64}
"""Ids per block: a fact's or a sentence's (the tasks' own defaults)."""


@dataclass
class PositionsBenchConfig:
    """History vs outcome, coupled vs default position ids, on logic and word problems: arms x seeds."""

    output_dir: str = "runs/bench-positions"
    """Folder for per-run caches and results.json."""
    tasks: tuple[str, ...] = TASKS
    """Any of logic, word_problems."""
    arms: tuple[str, ...] = ARMS
    """Any of history-coupled, outcome-coupled, history, outcome."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per (task, arm, seed): model init, data, data order and random slots follow the seed."""
    arch: str = "llama"
    """Model family (llama: RoPE; the coupled ids are relative distances to it)."""
    hidden_size: int = 64
    """Model width."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    learning_rate: float = 2e-3
    """Peak learning rate of every arm (the paper bench's)."""
    lam: float = 1.0
    """PAL's lambda."""
    test_size: int = 300
    """Fresh test problems per size (test seed 10000 + seed)."""
    val_size: int = 100
    """Fresh validation problems per size (seed 20000 + seed)."""
    spread: float = 1.0
    """Share of coupled training rows whose blocks sit at random increasing slots (the rest one apart)."""
    offset_blocks: int = 4
    """Largest random start offset of a coupled training row, in strides (test rows: 0)."""
    logic_train_size: int = 5000
    """Logic training problems, chains of 2..logic_train_max letters (the paper bench's full budget)."""
    logic_train_max: int = 5
    """Longest training chain."""
    logic_steps: int = 1000
    """Logic optimizer steps."""
    logic_batch_size: int = 64
    """Logic rows per optimizer step."""
    logic_test_sizes: tuple[int, ...] = (5, 10)
    """Logic test chain lengths."""
    logic_val_sizes: tuple[int, ...] = (8,)
    """Logic validation chain lengths."""
    word_train_size: int = 5000
    """Clean training stories of 2..word_train_ops operations."""
    word_train_ops: int = 5
    """Most operations of a training story."""
    word_steps: int = 1000
    """Word-problem optimizer steps."""
    word_batch_size: int = 16
    """Stories per optimizer step."""
    word_max_value: int = 100
    """Every quantity of a story stays below this (the paper bench's)."""
    word_test_ops: tuple[int, ...] = (5, 8)
    """Operations of the clean test stories."""
    word_val_ops: tuple[int, ...] = (7,)
    """Operations of the clean validation stories."""
    trivial: bool = True
    """Also the trivial rows (majority training answer; each seed's untrained model per arm)."""
    trivial_size: int = 100
    """Test problems per size of the trivial rows."""
    progress: bool = False
    """Progress bars."""
    threads: int = 1
    """Torch threads."""

    def __post_init__(self) -> None:
        self.tasks, self.arms, self.seeds = tuple(self.tasks), tuple(self.arms), tuple(self.seeds)
        self.logic_test_sizes, self.logic_val_sizes = tuple(self.logic_test_sizes), tuple(self.logic_val_sizes)
        self.word_test_ops, self.word_val_ops = tuple(self.word_test_ops), tuple(self.word_val_ops)
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if not self.arms or set(self.arms) - set(ARMS):
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not 0.0 <= self.spread <= 1.0 or self.offset_blocks < 0:
            raise ValueError(f"need spread in [0, 1] and offset_blocks >= 0, got {self.spread}, {self.offset_blocks}")
        if min(self.logic_train_max, *self.logic_test_sizes, *self.logic_val_sizes) < 2:
            raise ValueError("logic chains have >= 2 letters")
        if min(self.word_train_ops, *self.word_test_ops, *self.word_val_ops) < 2:
            raise ValueError("word problems: >= 2 operations (training stories have 2..word_train_ops)")
        for name in ("test_size", "val_size", "trivial_size", "logic_train_size", "logic_steps", "logic_batch_size",
                     "word_train_size", "word_steps", "word_batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def paper(self) -> PaperBenchConfig:
        """The paper bench's shared settings, for its PAL run."""
        return PaperBenchConfig(output_dir=self.output_dir, seeds=self.seeds, arch=self.arch, num_layers=self.num_layers,
                                num_heads=self.num_heads, learning_rate=self.learning_rate, lam=self.lam,
                                progress=self.progress, threads=self.threads)


@dataclass(frozen=True)
class _Setting:
    """One task's problems, sizes, budget and coupling layout."""

    task: LogicTask | WordProblemTask
    train: list
    test_sizes: tuple[int, ...]
    val_sizes: tuple[int, ...]
    steps: int
    batch_size: int
    blocks: object
    """``blocks(problem)``: the number of blocks of its coupled ids."""
    max_slot: int
    """Blocks of the longest training or evaluated problem: training slots are drawn up to it."""
    config: dict
    """The task's fields of the config (the run's cache key)."""


def setting(cfg: PositionsBenchConfig, name: str, seed: int) -> _Setting:
    """The problems and budget of ``name`` for ``seed``."""
    fields = {k: v for k, v in asdict(cfg).items() if k.startswith("logic_" if name == "logic" else "word_")}
    if name == "logic":
        task = LogicTask()
        sizes = (cfg.logic_train_max, *cfg.logic_test_sizes, *cfg.logic_val_sizes)
        return _Setting(task, task.sample_range(seed, cfg.logic_train_max, cfg.logic_train_size), cfg.logic_test_sizes,
                        cfg.logic_val_sizes, cfg.logic_steps, cfg.logic_batch_size,
                        lambda p: len(p.facts) + 1, max(sizes), fields)  # facts and the free block after them
    task = WordProblemTask(max_value=cfg.word_max_value)
    sizes = (cfg.word_train_ops, *cfg.word_test_ops, *cfg.word_val_ops)
    return _Setting(task, task.sample_range(seed, cfg.word_train_ops, cfg.word_train_size), cfg.word_test_ops,
                    cfg.word_val_ops, cfg.word_steps, cfg.word_batch_size,
                    lambda p: len(p.sentences) + 1, max(sizes) + 2, fields)  # sentences and the question


def _test_set(task, seed: int, size: int, count: int, seen: set) -> list:
    """``count`` problems of ``size`` from ``seed``, none seen in training (the paper bench's way)."""
    return fresh_problems(task.sample(seed, size, 2 * count), count, seen)


def run_one(cfg: PositionsBenchConfig, name: str, arm: str, seed: int) -> dict:
    """Train ``arm`` on ``name`` with ``seed`` and evaluate it on the test and validation sizes (cached)."""
    mode, coupled = arm.split("-")[0], arm.endswith("-coupled")
    shared = {k: v for k, v in asdict(cfg).items() if k in ("arch", "hidden_size", "num_layers", "num_heads",
                                                             "learning_rate", "lam", "test_size", "val_size")}
    s0 = setting(cfg, name, seed)
    key = {"task": name, "arm": arm, "seed": seed, **shared, **s0.config,
           **({"spread": cfg.spread, "offset_blocks": cfg.offset_blocks, "stride": STRIDES[name]} if coupled else {})}

    def run(run_dir: Path) -> dict:
        s, fmt, stride = s0, StepFormat(), STRIDES[name]
        trajs = [s.task.expert(p) for p in s.train]
        if coupled:
            trajs = randomized_rows(trajs, lambda slots: s.task.coupled_positions(stride, fmt, slots),
                                    [s.blocks(p) for p in s.train], s.max_slot, cfg.spread,
                                    cfg.offset_blocks * stride, seed, name, fmt, mode)
        model, tok, pal, res = train_lm(cfg.paper(), run_dir, mode, seed, trajs, batch_size=s.batch_size, steps=s.steps,
                                    hidden_size=cfg.hidden_size)
        policy = LMPolicy(model, tok, s.task, pal.step_format, mode=mode,
                          positions=s.task.coupled_positions(stride, fmt) if coupled else None)
        seen, t0 = set(s.train), time.perf_counter()
        evals = {str(n): evaluate(policy, _test_set(s.task, 10_000 + seed, n, cfg.test_size, seen)) for n in s.test_sizes}
        val = {str(n): evaluate(policy, _test_set(s.task, 20_000 + seed, n, cfg.val_size, seen)) for n in s.val_sizes}
        return {"task": name, "arm": arm, "seed": seed, "eval": evals, "val": val, "train_seconds": res.seconds,
                "eval_seconds": time.perf_counter() - t0, "final_train_metrics": res.final_metrics}

    return cached_run(Path(cfg.output_dir) / name / f"{arm}-seed{seed}", key, run)


def trivial_rows(cfg: PositionsBenchConfig, name: str, seed: int) -> dict:
    """The majority training answer and the untrained model of ``seed`` (each arm's generation and ids), on the
    first ``trivial_size`` test problems of every test size (cached)."""
    key = {"task": name, "seed": seed, "arms": list(cfg.arms), "trivial_size": cfg.trivial_size,
           "test_size": cfg.test_size, "model": [cfg.arch, cfg.hidden_size, cfg.num_layers, cfg.num_heads]}
    s = setting(cfg, name, seed)
    key.update(s.config)

    def run(run_dir: Path) -> dict:
        model, tok = build_tiny_model(cfg.paper().model_config(cfg.hidden_size), seed=seed)
        sets = {str(n): _test_set(s.task, 10_000 + seed, n, cfg.test_size, set(s.train))[: cfg.trivial_size]
                for n in s.test_sizes}
        majority = {n: e["exact_match"] for n, e in majority_answer(s.task, s.train, sets).items()}
        out: dict = {"majority": majority, "untrained": {}}
        for n, probs in sets.items():
            for arm in cfg.arms:
                mode, coupled = arm.split("-")[0], arm.endswith("-coupled")
                rule = s.task.coupled_positions(STRIDES[name], StepFormat()) if coupled else None
                policy = LMPolicy(model, tok, s.task, StepFormat(), mode=mode, positions=rule)
                out["untrained"].setdefault(arm, {})[n] = evaluate(policy, probs)
        return out

    return cached_run(Path(cfg.output_dir) / name / f"trivial-seed{seed}", key, run)


def aggregate(runs: list[dict], split: str) -> dict:
    """``{arm: {size: {metric: stat}}}`` over the seeds of each arm (:func:`~procsup.bench.report.stat`)."""
    table: dict = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        table[arm] = {n: {m: stat([r[split][n][m] for r in mine]) for m in ("exact_match", "trace_valid")}
                      for n in mine[0][split]}
    return table


def trivial_table(trivial: list[dict]) -> dict:
    """``{row: {size: stat}}``: the majority answer and each arm's untrained model, over seeds."""
    rows = {"majority training answer": [t["majority"] for t in trivial]}
    for arm in trivial[0]["untrained"]:
        rows[f"untrained {arm}"] = [{n: e["exact_match"] for n, e in t["untrained"][arm].items()} for t in trivial]
    return {row: {n: stat([v[n] for v in vals]) for n in vals[0]} for row, vals in rows.items()}


def format_rows(name: str, result: dict) -> list[list[str]]:
    """Exact match and trace validity per size, % mean ± sample std over seeds."""
    tables = result["tables"][name]
    sizes = [*tables["test"][next(iter(tables["test"]))], *(f"val {n}" for n in tables["val"][next(iter(tables["val"]))])]
    rows = [["arm", *(f"EM@{n}" for n in sizes), *(f"valid@{n}" for n in sizes)]]
    for arm in tables["test"]:
        cells = {**tables["test"][arm], **{f"val {n}": c for n, c in tables["val"][arm].items()}}
        rows.append([arm, *(pct(cells[n]["exact_match"]) for n in sizes),
                     *(pct(cells[n]["trace_valid"]) if cells[n]["trace_valid"] else "-" for n in sizes)])
    for row, cells in tables.get("trivial", {}).items():
        rows.append([row, *(pct(cells[n]) if n in cells else "-" for n in sizes), *("-" for _ in sizes)])
    return rows


def main(cfg: PositionsBenchConfig) -> dict:
    out = begin(cfg.threads, cfg.progress, cfg.output_dir)
    t0 = time.perf_counter()
    runs = [run_one(cfg, name, arm, seed) for name in cfg.tasks for seed in cfg.seeds for arm in cfg.arms]
    tables: dict = {}
    for name in cfg.tasks:
        mine = [r for r in runs if r["task"] == name]
        tables[name] = {"test": aggregate(mine, "eval"), "val": aggregate(mine, "val")}
        if cfg.trivial:
            tables[name]["trivial"] = trivial_table([trivial_rows(cfg, name, s) for s in cfg.seeds])
    result = {"config": asdict(cfg), "tables": tables, "runs": runs, "wall_seconds": time.perf_counter() - t0,
              **run_facts()}
    write_json(out / "results.json", result)
    return result


if __name__ == "__main__":  # was its own entry point; one command line now (procsup.cli imports the benches)
    raise SystemExit("run it as: procsup bench positions [--config file.yaml] [key=value ...]")
