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

``lr_grid`` chooses each method's learning rate on that validation split: every (method, factor, seed) is
trained and scored on validation problems only (:func:`validate_one`), one factor is chosen per method
(:func:`procsup.bench.select.choose`), and only the chosen models are tested, once (:func:`chosen_test`).

Each (method, seed) run writes its own ``eval.json``; a re-run skips finished runs (resume), so an
interrupted benchmark loses at most one run. Results: ``results.json``, ``accuracy.png`` and a table.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from procsup.bench.report import run_facts
from procsup.bench.select import nearest_one, selection_record
from procsup.data.io import write_json
from procsup.data.positions import randomized_rows
from procsup.data.tokenize import StepFormat
from procsup.evaluation.metrics import evaluate
from procsup.models.factory import TinyModelConfig, build_tiny_model
from procsup.rollout import LMPolicy, load_policy
from procsup.tasks.addition import AdditionTask
from procsup.trainers.loop import checkpoints
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
    on them (empty: none; with ``lr_grid`` selecting: the training length, ``train_max_digits``)."""
    val_size: int = 200
    """Validation problems per length."""
    lr_grid: tuple[float, ...] = (1.0,)
    """Learning-rate factors of ``learning_rate``, the same for every method. ``(1,)``: no selection, every run
    trained at ``learning_rate`` and tested. Otherwise every (method, factor, seed) is trained and scored on
    the validation split alone (``val_digits``, lengths of the training distribution; no test problem is
    evaluated); per method the factor with the best validation exact match (mean over seeds and validation
    lengths; a tie goes to the factor nearest 1) is chosen, and only then is each seed's model of that factor
    (the same trained model, read back from its checkpoint) tested, once. results.json records every
    validation score and the choice (``selection``)."""
    trivial: bool = False
    """Also the trivial rows: each seed's untrained model through the same generation, positions and checks
    (per text method), and the majority training answer, on the first ``trivial_size`` test problems."""
    trivial_size: int = 100
    """Test problems per length of the trivial rows."""

    def __post_init__(self) -> None:
        self.methods, self.seeds, self.test_digits = tuple(self.methods), tuple(self.seeds), tuple(self.test_digits)
        self.val_digits = tuple(self.val_digits)
        self.lr_grid = tuple(float(f) for f in self.lr_grid)
        if not self.lr_grid or min(self.lr_grid) <= 0 or len(set(self.lr_grid)) != len(self.lr_grid):
            raise ValueError(f"lr_grid must be distinct factors > 0, got {self.lr_grid}")
        if self.selecting:
            self.val_digits = self.val_digits or (self.train_max_digits,)
            if max(self.val_digits) > self.train_max_digits or min(self.val_digits) < 1:
                raise ValueError(f"lr_grid selects on the training distribution: val_digits must lie in 1.."
                                 f"{self.train_max_digits} (train_max_digits), got {self.val_digits}")
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
        for name in ("train_size", "test_size", "steps", "batch_size", "val_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def selecting(self) -> bool:
        """Whether the learning rate is chosen on the validation split (any ``lr_grid`` but ``(1,)``)."""
        return self.lr_grid != (1.0,)

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
_NOT_IN_KEY = ("output_dir", "methods", "seeds", "progress", "trivial", "trivial_size", "lr_grid")


def _run_key(config: dict) -> dict:
    # tuples -> lists, as read back from disk
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _NOT_IN_KEY}))


def _cached(done: Path, key: dict) -> dict | None:
    """The run recorded in ``done`` if it ran with ``key``, else None."""
    if done.is_file():
        cached = json.loads(done.read_text())
        if _run_key(cached.get("config") or {}) == key:
            return cached
    return None


def _fresh_dir(run_dir: Path, key: dict) -> None:
    """``run_dir`` ready for a run with ``key``: the trainer resumes from any checkpoint in it, so a folder
    left by other settings is cleared first (one of the same settings is resumed)."""
    marker = run_dir / "key.json"
    if run_dir.exists() and not (marker.is_file() and _run_key(json.loads(marker.read_text())) == key):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(key))


def _task(cfg: AdditionBenchConfig) -> AdditionTask:
    return AdditionTask(carry_heavy=cfg.carry_heavy, index_hints=cfg.index_hints, pad_answer=cfg.pad_answer)


def _rule(cfg: AdditionBenchConfig, task: AdditionTask, method: str):
    """The position rule of ``method``'s runs (coupled ids for the text methods with ``coupling``), or None."""
    return task.coupled_positions(cfg.stride) if cfg.coupling and method != "state" else None


def _train(cfg: AdditionBenchConfig, method: str, seed: int, run_dir: Path):
    """Train ``method``'s model of ``seed`` in ``run_dir`` (its checkpoints stay there); returns the policy,
    the TrainResult and the training problems as ``(a, b)`` pairs."""
    task = _task(cfg)
    problems = task.sample_range(seed, cfg.train_max_digits, cfg.train_size)
    trajs = [task.state_trajectory(p) if method == "state" else task.expert(p) for p in problems]
    if cfg.coupling and method != "state":
        trajs = coupled_rows(cfg, task, problems, trajs, method, seed)
    model, tok = build_tiny_model(cfg.model_config, seed=seed)
    pal = PALConfig(
        output_dir=str(run_dir), mode=method, lam=cfg.lam, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
        max_steps=cfg.steps, warmup_steps=min(50, cfg.steps // 10), seed=seed, progress=cfg.progress, mu=cfg.mu,
        save_steps=max(cfg.steps // 4, 1), resume=True,
    )
    result = train(pal, model=model, tokenizer=tok, trajectories=trajs)
    policy = LMPolicy(result.model, tok, task, pal.step_format, mode=method, positions=_rule(cfg, task, method))
    return policy, result, {(p.a, p.b) for p in problems}


def _train_facts(result) -> dict:
    return {"train_seconds": result.seconds, "train_tokens_per_s": result.tokens / max(result.seconds, 1e-9),
            "final_train_metrics": result.final_metrics, "parameters": sum(p.numel() for p in result.model.parameters())}


def run_one(cfg: AdditionBenchConfig, method: str, seed: int) -> dict:
    """Train one model and evaluate it at every test length; cached in ``<method>-seed<k>/eval.json``."""
    run_dir = Path(cfg.output_dir) / f"{method}-seed{seed}"
    key = _run_key(asdict(cfg))
    if (cached := _cached(run_dir / "eval.json", key)) is not None:
        return cached
    _fresh_dir(run_dir, key)
    policy, result, seen = _train(cfg, method, seed, run_dir)
    task = policy.task
    t0 = time.perf_counter()
    evals = {str(d): evaluate(policy, _test_problems(cfg, task, seed, d, seen)) for d in cfg.test_digits}
    val = {str(d): evaluate(policy, val_problems(cfg, task, seed, d, seen)) for d in cfg.val_digits}
    out = {"method": method, "seed": seed, "config": key, "eval": evals, **({"val": val} if val else {}),
           "eval_seconds": time.perf_counter() - t0, **_train_facts(result)}
    write_json(run_dir / "eval.json", out)
    return out


# --- choosing the learning rate on validation, then testing once ----------------------------------------------
def _selection_run(cfg: AdditionBenchConfig, method: str, seed: int, lr_factor: float):
    """The folder, settings and cache key of (method, seed) trained at ``lr_factor`` x ``learning_rate``. The
    validation run does not depend on the test lengths beyond the test problems its validation split drops
    (and, with coupling, the start offsets they set), so its key holds those instead: other test lengths reuse
    the trained and validated runs and test them again."""
    run_dir = Path(cfg.output_dir) / f"{method}-lr{lr_factor:g}-seed{seed}"
    at = replace(cfg, learning_rate=cfg.learning_rate * lr_factor, lr_grid=(1.0,))
    key = {k: v for k, v in _run_key(asdict(at)).items() if k != "test_digits"}
    key.update(lr_factor=lr_factor, split="val", val_drops_test_at=[d for d in at.val_digits if d in at.test_digits])
    if at.coupling:
        key["start_offsets"] = at.start_offsets
    return run_dir, at, key


def _test_problems(cfg: AdditionBenchConfig, task: AdditionTask, seed: int, digits: int, seen: set) -> list:
    """The test problems of ``digits`` digits of ``seed``: ``test_size`` fresh problems of a stream of their
    own (seed 10_000 + seed), any training problem (``seen``, ``(a, b)`` pairs) dropped."""
    return [p for p in task.sample(10_000 + seed, digits, 2 * cfg.test_size) if (p.a, p.b) not in seen][: cfg.test_size]


def val_problems(cfg: AdditionBenchConfig, task: AdditionTask, seed: int, digits: int, seen: set) -> list:
    """The validation problems of the selection: ``val_size`` fresh problems of ``digits`` digits from a
    stream of their own (seed 20_000 + seed; test: 10_000 + seed, training: seed), any training problem and
    any test problem of that length dropped."""
    test = {(p.a, p.b) for p in _test_problems(cfg, task, seed, digits, seen)} if digits in cfg.test_digits else set()
    return [p for p in task.sample(20_000 + seed, digits, 2 * cfg.val_size)
            if (p.a, p.b) not in seen and (p.a, p.b) not in test][: cfg.val_size]


def validate_one(cfg: AdditionBenchConfig, method: str, seed: int, lr_factor: float) -> dict:
    """Train (method, seed) at ``lr_factor`` x ``learning_rate`` and score it on the validation split only
    (:func:`val_problems` at every ``val_digits``; no test problem is evaluated). Cached in
    ``<method>-lr<factor>-seed<k>/eval.json``; the trained model stays there (checkpoints) for
    :func:`chosen_test`."""
    run_dir, at, key = _selection_run(cfg, method, seed, lr_factor)
    if (cached := _cached(run_dir / "eval.json", key)) is not None:
        return cached
    _fresh_dir(run_dir, key)
    policy, result, seen = _train(at, method, seed, run_dir)
    t0 = time.perf_counter()
    val = {str(d): evaluate(policy, val_problems(at, policy.task, seed, d, seen)) for d in at.val_digits}
    out = {"method": method, "seed": seed, "lr_factor": lr_factor, "learning_rate": at.learning_rate, "config": key,
           "val": val, "val_seconds": time.perf_counter() - t0, **_train_facts(result)}
    write_json(run_dir / "eval.json", out)
    return out


def chosen_test(cfg: AdditionBenchConfig, method: str, seed: int, lr_factor: float) -> dict:
    """The model :func:`validate_one` trained for (method, seed, ``lr_factor``) (trained first if it is not
    there), read back from its last checkpoint and tested at every test length, once; cached in the run's
    ``test/eval.json``. Returns the validation run with its test metrics (``eval``), as :func:`run_one` does."""
    trained = validate_one(cfg, method, seed, lr_factor)
    run_dir, at, key = _selection_run(cfg, method, seed, lr_factor)
    key = {**key, "split": "test", "test_digits": list(at.test_digits)}
    done = run_dir / "test" / "eval.json"
    if (tested := _cached(done, key)) is None:
        task = _task(at)
        last = next(reversed(checkpoints(run_dir)), None)
        if last is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to test; delete the folder to train it again")
        policy = load_policy(last, task, mode=method, positions=_rule(at, task, method))
        seen = {(p.a, p.b) for p in task.sample_range(seed, at.train_max_digits, at.train_size)}
        t0 = time.perf_counter()
        evals = {str(d): evaluate(policy, _test_problems(at, task, seed, d, seen)) for d in at.test_digits}
        tested = {"config": key, "checkpoint": last.name, "eval": evals, "eval_seconds": time.perf_counter() - t0}
        done.parent.mkdir(exist_ok=True)
        write_json(done, tested)
    return {**trained, "eval": tested["eval"], "checkpoint": tested["checkpoint"], "eval_seconds": tested["eval_seconds"]}


def val_score(run: dict) -> float:
    """The score the learning rate is chosen on: validation exact match, mean over the validation lengths."""
    return statistics.fmean(m["exact_match"] for m in run["val"].values())


def select(cfg: AdditionBenchConfig) -> tuple[list[dict], dict]:
    """Every (method, factor, seed) of ``cfg.lr_grid`` trained and validated; per method the factor of the
    best mean validation score (:func:`~procsup.bench.select.choose`); then each seed's model of that factor
    tested once. Returns the tested runs (in :func:`run_one`'s order) and ``{method: the selection record}``."""
    # factor 1 first (then outward): an interrupted grid has the default runs, which any other grid shares
    order = sorted(cfg.lr_grid, key=nearest_one)
    vals = {(m, f, s): val_score(validate_one(cfg, m, s, f)) for f in order for s in cfg.seeds for m in cfg.methods}
    scores = {m: {f: [vals[m, f, s] for s in cfg.seeds] for f in cfg.lr_grid} for m in cfg.methods}
    metric = f"exact_match (validation, {','.join(map(str, cfg.val_digits))} digits)"
    selection = {m: selection_record(by_factor, cfg.learning_rate, metric) for m, by_factor in scores.items()}
    runs = [chosen_test(cfg, m, s, selection[m]["chosen_factor"]) for s in cfg.seeds for m in cfg.methods]
    return runs, selection


def trivial_rows(cfg: AdditionBenchConfig, seed: int) -> dict:
    """The untrained model of ``seed`` (history and outcome, with the runs' positions) and the majority
    training answer, exact match per test length on the first ``trivial_size`` test problems of that seed."""
    done = Path(cfg.output_dir) / f"trivial-seed{seed}.json"
    key = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("output_dir", "progress", "lr_grid")}))
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
        probs = _test_problems(cfg, task, seed, digits, seen)[: cfg.trivial_size]
        out["majority"][str(digits)] = sum(task.target(p) == majority for p in probs) / len(probs)
        for method in (m for m in cfg.methods if m != "state"):
            policy = LMPolicy(model, tok, task, StepFormat(), mode=method, positions=rule)
            out["untrained"].setdefault(method, {})[str(digits)] = evaluate(policy, probs)
    write_json(done, out)
    return out


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
    """Mean, std (population: kept for the recorded JSONs' readers), sample std (what the table and the plot
    show), min over seeds of each metric, per method and
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
        stds = [100 * table[method][str(d)]["exact_match"].get("sample_std", 0.0) for d in cfg.test_digits]
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
    ax.set_title(f"Addition, trained on 1-{cfg.train_max_digits} digits ({seeds}, mean ± sample std)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(table: dict, cfg: AdditionBenchConfig) -> list[list[str]]:
    """Exact match per test length (%, mean±sample std; one seed: ±0.0) beside the paper's 5-digit figure; 80
    columns for 4 lengths."""
    header = ["method", *[f"{d} digits" for d in cfg.test_digits], f"valid@{max(cfg.test_digits)}", "paper@5"]
    rows = [header]
    for method in cfg.methods:
        cells = []
        for d in cfg.test_digits:
            em = table[method][str(d)]["exact_match"]
            cells.append(f"{100 * em['mean']:.1f}±{100 * em.get('sample_std', 0.0):.1f}")
        tv = table[method][str(max(cfg.test_digits))].get("trace_valid")
        paper = PAPER_5_DIGITS.get(method)
        rows.append([method, *cells, f"{100 * tv['mean']:.1f}" if tv else "n/a", f"~{100 * paper:.0f}" if paper else "-"])
    return rows


def main(cfg: AdditionBenchConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    selection = {}
    if cfg.selecting:
        runs, selection = select(cfg)
    else:
        runs = [run_one(cfg, m, s) for s in cfg.seeds for m in cfg.methods]
    table = aggregate(runs, cfg)
    val = {"val_table": aggregate(runs, cfg, "val")} if cfg.val_digits else {}
    trivial = {"trivial": [trivial_rows(cfg, s) for s in cfg.seeds]} if cfg.trivial else {}
    result = {
        "config": asdict(cfg), "table": table, **val, **({"selection": selection} if selection else {}), **trivial,
        "runs": runs, "paper_5_digits": PAPER_5_DIGITS,
        "wall_seconds": time.perf_counter() - t0, **run_facts(),
    }
    write_json(out / "results.json", result)
    plot(table, cfg, out / "accuracy.png")
    result["rows"] = format_table(table, cfg)
    return result
