"""``procsup bench addition``: the length-generalization claim of PAL (seed 000, section 5.3).

Trains the same tiny model, with the same budget (optimizer steps x batch rows), three ways on
problems with 1..3-digit operands, and tests on fresh problems of 3, 5, 10 and 20 digits:

* ``outcome``: x -> y only (the baseline);
* ``history``: PAL with the column-by-column chain of thought as one sequence;
* ``state``: PAL with ``M(s_t) -> a_t``; the task's executor applies each action at test time.

With ``coupling=true`` the history and outcome arms train and generate with column-coupled position ids
(Cho et al., 2024; :meth:`~procsup.tasks.addition.AdditionTask.coupled_positions`), a random start offset
per training row drawn from a range that covers the ids of the longest evaluated problem, and optionally a
random stride; test problems are generated with the rule at offset 0 and the base stride. Coupling reads
the hint-free layout with a padded answer (``index_hints=false pad_answer=true``); running the uncoupled
arms with the same two flags compares like with like (docs/positions.md). ``val_digits`` adds a validation
split (fresh problems of another seed) on which settings are chosen; the test split is never used for that.

Each (method, seed) run writes its own ``eval.json``; a re-run skips finished runs (resume), so an
interrupted benchmark loses at most one run. Results: ``results.json``, ``accuracy.png`` and a table.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from procsup.bench.report import run_facts
from procsup.data.io import write_json
from procsup.data.positions import randomized_rows
from procsup.data.tokenize import StepFormat
from procsup.evaluation.metrics import evaluate
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rollout import LMPolicy
from procsup.tasks.addition import AdditionTask
from procsup.trainers.pal import PALConfig, train

METHODS = ("outcome", "history", "state")
#: Kartik & Shah (2025), section 5.3: trained on 3-digit, tested on 5-digit addition.
PAPER_5_DIGITS = {"outcome": 0.10, "history": 0.80}


@dataclass
class AdditionBenchConfig:
    """The addition benchmark: methods x seeds, trained on short problems, tested on long ones."""

    output_dir: str = "runs/bench-addition"
    """Folder for per-run results, results.json and accuracy.png."""
    methods: tuple[str, ...] = METHODS
    """Any of outcome, history, state."""
    seeds: tuple[int, ...] = (0,)
    """One run per method and seed (model init, training data and data order all follow the seed). The
    default is one seed so that the default run fits in 10 minutes on 2 cores; the recorded results use
    seeds=0,1,2."""
    train_max_digits: int = 3
    """Training operands have 1..train_max_digits digits."""
    train_size: int = 20000
    """Training problems per seed."""
    carry_heavy: float = 0.3
    """Share of training problems where every column carries."""
    test_digits: tuple[int, ...] = (3, 5, 10, 20)
    """Test operand lengths (both operands have this many digits)."""
    test_size: int = 500
    """Fresh test problems per length."""
    steps: int = 500
    """Optimizer steps per run (the same for every method)."""
    batch_size: int = 64
    """Rows per optimizer step (a row is a trajectory, or a step in state mode)."""
    learning_rate: float = 2e-3
    """Peak learning rate."""
    lam: float = 1.0
    """PAL's lambda."""
    mu: float = 0.0
    """Behavior consistency weight of the PAL runs (hidden states of steps with equal keys; 0: off)."""
    arch: str = "llama"
    """Model family: llama, qwen2, gpt2 (learned absolute positions) or neox."""
    hidden_size: int = 128
    """Model width."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    progress: bool = True
    """Progress bars."""
    index_hints: bool = True
    """Column letters in the history layout (the demo's); coupling needs false."""
    pad_answer: bool = False
    """Answer zero-padded to columns + 1 digits (what the coupled rule numbers); true with coupling."""
    coupling: bool = False
    """Column-coupled position ids for the history and outcome arms (the state arm has no history to couple)."""
    stride: int = 10
    """Ids per column block with coupling (a step line and its separator take 10)."""
    spread: float = 0.0
    """Share of coupled training rows whose column blocks sit at a random increasing choice of slots in
    [1, max_columns + 1] (randomized positions, Ruoss et al., 2023; the rest, and test rows, one apart)."""
    offset_max: int | None = None
    """Largest random start offset of a training row with coupling (test: 0). Default: the first id of the
    answer block of the longest evaluated problem, so that every id a test row uses is seen in training."""
    val_digits: tuple[int, ...] = ()
    """Validation lengths: fresh problems of another seed, evaluated like the test ones; settings are chosen
    on them (empty: none)."""
    val_size: int = 200
    """Validation problems per length."""
    trivial: bool = False
    """Also the trivial rows: each seed's untrained model through the same generation, positions and checks
    (per text method), and the majority training answer, on the first ``trivial_size`` test problems."""
    trivial_size: int = 100
    """Test problems per length of the trivial rows."""

    def __post_init__(self) -> None:
        self.methods, self.seeds, self.test_digits = tuple(self.methods), tuple(self.seeds), tuple(self.test_digits)
        self.val_digits = tuple(self.val_digits)
        if self.coupling and (self.index_hints or not self.pad_answer):
            raise ValueError("coupling reads the hint-free layout with a padded answer: set index_hints=false "
                             "pad_answer=true")
        if self.stride < 10 or not 0.0 <= self.spread <= 1.0:
            raise ValueError(f"need stride >= 10 and spread in [0, 1], got {self.stride}, {self.spread}")
        if self.offset_max is not None and self.offset_max < 0:
            raise ValueError(f"offset_max must be >= 0, got {self.offset_max}")
        bad = set(self.methods) - set(METHODS)
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.train_max_digits < 1 or min(self.test_digits, default=0) < 1:
            raise ValueError("digit counts must be >= 1")
        if self.max_columns > 26:
            raise ValueError("at most 26 columns: the column index hints are the 26 letters a..z")
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        for name in ("train_size", "test_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def max_columns(self) -> int:
        return max(self.train_max_digits, *self.test_digits, *self.val_digits)

    @property
    def start_offsets(self) -> int:
        """The largest training start offset (:attr:`offset_max`, or its default)."""
        return self.offset_max if self.offset_max is not None else self.stride * (self.max_columns + 1)

    @property
    def model_config(self) -> TinyModelConfig:
        return TinyModelConfig(arch=self.arch, hidden_size=self.hidden_size, num_layers=self.num_layers,
                               num_heads=self.num_heads)


#: Config fields that do not change a (method, seed) run: a cached run is reused across them.
_NOT_IN_KEY = ("output_dir", "methods", "seeds", "progress", "trivial", "trivial_size")


def _run_key(config: dict) -> dict:
    # tuples -> lists, as read back from disk
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _NOT_IN_KEY}))


def run_one(cfg: AdditionBenchConfig, method: str, seed: int) -> dict:
    """Train one model and evaluate it at every test length; cached in ``<method>-seed<k>/eval.json``."""
    run_dir = Path(cfg.output_dir) / f"{method}-seed{seed}"
    done = run_dir / "eval.json"
    key = _run_key(asdict(cfg))
    if done.is_file():
        cached = json.loads(done.read_text())
        if _run_key(cached.get("config") or {}) == key:
            return cached
    # the trainer resumes from any checkpoint in run_dir: one left by other settings must not be resumed
    marker = run_dir / "key.json"
    if run_dir.exists() and not (marker.is_file() and _run_key(json.loads(marker.read_text())) == key):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(key))
    task = AdditionTask(carry_heavy=cfg.carry_heavy, index_hints=cfg.index_hints, pad_answer=cfg.pad_answer)
    problems = task.sample_range(seed, cfg.train_max_digits, cfg.train_size)
    trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
    coupled = cfg.coupling and method != "state"
    rule = task.coupled_positions(cfg.stride) if coupled else None
    if coupled:
        trajs = coupled_rows(cfg, task, problems, trajs, method, seed)
    model, tok = build_tiny_model(cfg.model_config, seed=seed)
    pal = PALConfig(
        output_dir=str(run_dir), mode=method, lam=cfg.lam, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
        max_steps=cfg.steps, warmup_steps=min(50, cfg.steps // 10), seed=seed, progress=cfg.progress, mu=cfg.mu,
        save_steps=max(cfg.steps // 4, 1), resume=True,
    )
    result = train(pal, model=model, tokenizer=tok, trajectories=trajs)
    policy = LMPolicy(result.model, tok, task, pal.step_format, mode=method, positions=rule)
    seen = {(p.a, p.b) for p in problems}
    t0 = time.perf_counter()
    # fresh problems: a test seed (validation: another) of its own, any problem also seen in training dropped
    evals = {str(d): _evaluate(policy, task, 10_000 + seed, d, cfg.test_size, seen) for d in cfg.test_digits}
    val = {str(d): _evaluate(policy, task, 20_000 + seed, d, cfg.val_size, seen) for d in cfg.val_digits}
    out = {
        "method": method, "seed": seed, "config": key, "eval": evals, **({"val": val} if val else {}),
        "train_seconds": result.seconds, "eval_seconds": time.perf_counter() - t0,
        "train_tokens_per_s": result.tokens / max(result.seconds, 1e-9), "final_train_metrics": result.final_metrics,
        "parameters": sum(p.numel() for p in result.model.parameters()),
    }
    write_json(done, out)
    return out


def trivial_rows(cfg: AdditionBenchConfig, seed: int) -> dict:
    """The untrained model of ``seed`` (history and outcome, with the runs' positions) and the majority
    training answer, exact match per test length on the first ``trivial_size`` test problems of that seed."""
    done = Path(cfg.output_dir) / f"trivial-seed{seed}.json"
    key = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("output_dir", "progress")}))
    if done.is_file() and json.loads(done.read_text()).get("config") == key:
        return json.loads(done.read_text())
    task = AdditionTask(carry_heavy=cfg.carry_heavy, index_hints=cfg.index_hints, pad_answer=cfg.pad_answer)
    problems = task.sample_range(seed, cfg.train_max_digits, cfg.train_size)
    seen = {(p.a, p.b) for p in problems}
    majority = statistics.mode(task.target(p) for p in problems)
    model, tok = build_tiny_model(cfg.model_config, seed=seed)
    rule = task.coupled_positions(cfg.stride) if cfg.coupling else None
    out: dict = {"seed": seed, "config": key, "majority_answer": majority, "majority": {}, "untrained": {}}
    for digits in cfg.test_digits:
        probs = [p for p in task.sample(10_000 + seed, digits, 2 * cfg.test_size) if (p.a, p.b) not in seen]
        probs = probs[: cfg.test_size][: cfg.trivial_size]
        out["majority"][str(digits)] = sum(task.target(p) == majority for p in probs) / len(probs)
        for method in (m for m in cfg.methods if m != "state"):
            policy = LMPolicy(model, tok, task, StepFormat(), mode=method, positions=rule)
            out["untrained"].setdefault(method, {})[str(digits)] = evaluate(policy, probs)
    write_json(done, out)
    return out


def _evaluate(policy, task: AdditionTask, seed: int, digits: int, size: int, seen: set) -> dict:
    probs = [p for p in task.sample(seed, digits, 2 * size) if (p.a, p.b) not in seen][:size]
    return evaluate(policy, probs)


def coupled_rows(cfg: AdditionBenchConfig, task: AdditionTask, problems: list, trajs: list, method: str,
                 seed: int) -> list:
    """``trajs`` with their coupled ids (``meta["positions"]``): the rule at ``cfg.stride``, its blocks one
    apart or (a ``spread`` share of rows) at random increasing slots, shifted by a start offset drawn per
    row from ``[0, start_offsets]`` (:func:`~procsup.data.positions.randomized_rows`)."""
    fmt = StepFormat()
    return randomized_rows(trajs, lambda slots: task.coupled_positions(cfg.stride, fmt, slots),
                           [p.columns + 1 for p in problems], cfg.max_columns + 1, cfg.spread, cfg.start_offsets,
                           seed, "addition", fmt, method)


def aggregate(runs: list[dict], cfg: AdditionBenchConfig, split: str = "eval") -> dict:
    """Mean, std (population: the recorded demo's), sample std, min over seeds of each metric, per method and
    test length (``split="val"``: validation length)."""
    table: dict = {}
    for method in cfg.methods:
        table[method] = {}
        for d in cfg.test_digits if split == "eval" else cfg.val_digits:
            rows = [r[split][str(d)] for r in runs if r["method"] == method]
            cell = {}
            for metric in ("exact_match", "trace_valid", "right_answer_wrong_steps"):
                vals = [r[metric] for r in rows if r[metric] is not None]
                if vals:
                    cell[metric] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "min": min(vals),
                                    "per_seed": vals}
                    if len(vals) > 1:
                        cell[metric]["sample_std"] = statistics.stdev(vals)
            table[method][str(d)] = cell
    return table


def plot(table: dict, cfg: AdditionBenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"outcome": "outcome-only", "history": "PAL-history", "state": "PAL-state"}
    for method in cfg.methods:
        means = [100 * table[method][str(d)]["exact_match"]["mean"] for d in cfg.test_digits]
        stds = [100 * table[method][str(d)]["exact_match"]["std"] for d in cfg.test_digits]
        ax.errorbar(cfg.test_digits, means, yerr=stds, marker="o", capsize=3, label=labels[method])
    colors = {m: line.get_color() for m, line in zip(cfg.methods, [c[0] for c in ax.containers])}
    for method, acc in PAPER_5_DIGITS.items():
        if method in colors:
            ax.plot([5], [100 * acc], marker="x", ms=9, ls="none", color=colors[method])
    ax.plot([], [], marker="x", ls="none", color="grey", label="paper, 5 digits")
    ax.axvline(cfg.train_max_digits, color="grey", ls=":", lw=1)
    ax.text(cfg.train_max_digits, 50, " trained up to here", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(cfg.test_digits, [str(d) for d in cfg.test_digits])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("digits per operand (test)")
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(-3, 103)
    seeds = f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''}"
    ax.set_title(f"Addition, trained on 1-{cfg.train_max_digits} digits ({seeds}, mean ± std)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(table: dict, cfg: AdditionBenchConfig) -> list[list[str]]:
    """Exact match per test length (%, mean±std) beside the paper's 5-digit figure; 80 columns for 4 lengths."""
    header = ["method", *[f"{d} digits" for d in cfg.test_digits], f"valid@{max(cfg.test_digits)}", "paper@5"]
    rows = [header]
    for method in cfg.methods:
        cells = []
        for d in cfg.test_digits:
            em = table[method][str(d)]["exact_match"]
            cells.append(f"{100 * em['mean']:.1f}±{100 * em['std']:.1f}")
        tv = table[method][str(max(cfg.test_digits))].get("trace_valid")
        paper = PAPER_5_DIGITS.get(method)
        rows.append([method, *cells, f"{100 * tv['mean']:.1f}" if tv else "n/a", f"~{100 * paper:.0f}" if paper else "-"])
    return rows


def main(cfg: AdditionBenchConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = [run_one(cfg, m, s) for s in cfg.seeds for m in cfg.methods]
    table = aggregate(runs, cfg)
    val = {"val_table": aggregate(runs, cfg, "val")} if cfg.val_digits else {}
    trivial = {"trivial": [trivial_rows(cfg, s) for s in cfg.seeds]} if cfg.trivial else {}
    result = {
        "config": asdict(cfg), "table": table, **val, **trivial, "runs": runs, "paper_5_digits": PAPER_5_DIGITS,
        "wall_seconds": time.perf_counter() - t0, **run_facts(),
    }
    write_json(out / "results.json", result)
    plot(table, cfg, out / "accuracy.png")
    result["rows"] = format_table(table, cfg)
    return result
