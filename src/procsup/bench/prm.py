"""``procsup bench prm``: does a process reward model choose better solutions than an outcome reward
model or a majority vote? (Lightman et al., 2023, "Let's Verify Step by Step", figure 3; Uesato et al.,
2022), measured on a synthetic task whose every step has an exact checker.

Per seed, everything from scratch:

1. **Policy**: a tiny LM trained with PAL on addition with 1..3-digit operands, without the column
   letters (``index_hints=False``), for few steps on purpose: a *weak* policy whose samples are often
   wrong (natural errors). ``policy_mode`` picks how it works: ``state`` (the default: it sees one
   column state ``x+y+c`` at a time and writes ``digit,carry``; the task's executor applies each action
   and composes the answer, so every error is a step error) or ``history`` (it writes every step and
   then the answer line, whose copying errors no step label sees).
2. **Labels**: ``label_samples`` policy samples on each of ``label_problems`` fresh training problems;
   every step is labelled by the task's checker (history mode: the answer, appended as one more step by
   :func:`~procsup.annotation.oracle.with_answer_step`, by the answer checker). With
   ``label_corrupt_rate > 0`` (state mode) each sampled action of these label traces is replaced, with that
   probability, by a corrupted one (one digit changed) before it is judged and executed: injected errors
   beside the natural ones, in the same complete traces that both reward models learn from.
3. **PRM and ORM**: the policy's weights with a new 2-class head, the same traces and the same optimizer
   steps. The PRM learns every step's label; the ORM only the outcome, on the last step. In state mode the
   PRM reads each step in its own row, the action in its state (``prm_layout=step``, see
   :mod:`procsup.data.views`), and the ORM the whole trace. With ``orm_layout=step`` the ORM reads the
   PRM's one-step rows instead, every step row labelled with its trace's outcome (an outcome-supervised
   value model, Uesato et al., 2022): the same rows as the PRM, only the labels differ.
4. **Test**: ``n`` samples per fresh test problem. Best-of-N accuracy against N for the PRM (aggregations
   min, product, mean, last; and min over the process steps alone, ``prm-min-steps``), the ORM (its
   last-step score; with ``orm_layout=step`` also its min over steps, ``orm-min``), majority vote,
   PRM-weighted majority, and pass@N (some sample is right: the ceiling of any reranker); random subsets,
   averaged. Step AUROC and accuracy of both reward models against the
   oracle labels of the test samples, and within-problem AUROC (ranking one problem's samples).
5. **Beam search** with the PRM (min over steps) at about the policy samples best-of-N spends
   (samples = generated steps; in history mode the answer line counts as one), beside best-of-N at each N.

Each seed's models are cached in ``<output_dir>/seed<k>/train`` and its evaluation in ``seed<k>/eval``,
each with the settings it depends on (:func:`run_seed`); results.json, a plot (accuracy against N) and a
table are written at the end.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from procsup.annotation.oracle import label_traces, orm_labels
from procsup.bench.cache import cached_run
from procsup.bench.report import begin, cached_note, fit_table, pct, reused_runs, run_facts, stat
from procsup.bench.select import choose
from procsup.data import views
from procsup.data.io import write_json, write_jsonl
from procsup.data.trajectory import Trajectory
from procsup.evaluation import prm_metrics
from procsup.models.factory import TinyModelConfig, build_tiny_model, load_model, save_model
from procsup.models.prm import build_prm, load_prm
from procsup.rollout import LMPolicy
from procsup.scorers import prm_scorer
from procsup.search import beam_search
from procsup.tasks.addition import AdditionTask
from procsup.trainers.pal import PALConfig, train
from procsup.trainers.prm import PRMConfig, train_prm

AGGREGATIONS = ("min", "product", "mean", "last")


@dataclass
class PRMBenchConfig:
    """Best-of-N with a PRM vs an ORM vs majority vote, and beam search, on addition with a weak policy."""

    output_dir: str = "runs/bench-prm"
    """Folder for per-seed runs, results.json and bon.png."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed: policy, labels, reward models and test problems all follow it."""
    arch: str = "llama"
    """Model family of the policy (and of the reward models, which start from its weights)."""
    hidden_size: int = 128
    """Model width."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    policy_mode: str = "state"
    """How the policy is trained and sampled: ``history`` (it writes every step and the answer, see
    :func:`~procsup.annotation.oracle.label_traces`) or ``state`` (it sees one column at a time and the
    task's executor applies its actions and writes the answer: every error is then a step error)."""
    prm_layout: str = "step"
    """State mode only: how the PRM reads a trace (:mod:`procsup.data.views`): ``step``, one row per step
    (the action in its state, as the policy took it), or ``trace``, the whole trace in one row."""
    orm_layout: str = "trace"
    """State mode only: how the ORM reads a trace. ``trace`` (the recorded runs): the whole trace, its outcome
    on the last step. ``step``: the PRM's one-step rows (:func:`reward_rows`), each labelled with its trace's
    outcome, so that PRM and ORM differ only in their labels with ``prm_layout=step``; best-of-N then reports
    the ORM's last-step score (``orm``) and its min over steps (``orm-min``)."""
    policy_train_size: int = 20000
    """Policy training problems (1..3-digit operands, 30% carry-heavy)."""
    policy_steps: int = 250
    """Policy optimizer steps (64 rows each): few, so that the policy is weak."""
    temperature: float = 1.0
    """Sampling temperature of the policy (labels, best-of-N and beam search)."""
    label_problems: int = 24000
    """Fresh training problems whose policy samples are labelled for the reward models. Sampling them is
    cheap (~100 s for 24,000 x 4); at 1,000 the PRM saw each of its ~11k rows ~46 times, fit them exactly and
    still scored unseen wrong actions (``1+1+0 -> 6,0``) as right (docs/RESULTS.md section 7a″)."""
    label_samples: int = 4
    """Policy samples per labelled problem."""
    label_corrupt_rate: float = 0.0
    """State mode: probability that a sampled action of a label trace is replaced by a corrupted one (one
    digit changed, :func:`~procsup.annotation.oracle.corrupt_digit`) before the checker and the executor
    see it. 0: the policy's natural errors alone. The test samples are never corrupted."""
    rm_steps: int = 12000
    """Optimizer steps of the PRM and of the ORM (equal). At 2000 the PRM's loss was still falling and its
    best-of-16 moved by ~20 points with its head's random init (docs/RESULTS.md section 7a); from 4000 to
    12000 steps on 8,000 label problems its best-of-16 on seed 2 rose from 91.0 to 94.5 (section 7a″)."""
    rm_batch_size: int = 128
    """Rows per reward-model step: traces, or with ``prm_layout=step`` the PRM's one-step rows."""
    rm_learning_rate: float = 1e-3
    """Peak learning rate of the reward models."""
    rm_val_problems: int = 0
    """Early stopping on a validation split: this many more fresh training-range problems (disjoint from the
    policy's and the label problems, never the test problems), sampled and labelled as the label problems
    are; each reward model is evaluated on its own rows of them every ``rm_eval_steps`` and the checkpoint
    with the lowest validation loss is the one evaluated (the same rule for the PRM and the ORM). 0: off,
    the last checkpoint (the recorded runs)."""
    rm_eval_steps: int = 0
    """With ``rm_val_problems``: validation and a checkpoint every this many steps (0: rm_steps // 10)."""
    label_grid: tuple[int, ...] = ()
    """Label-problem counts to choose among on the validation split (needs ``rm_val_problems``; then
    ``label_problems`` is not read). Each seed trains the PRM and the ORM at every count, on nested problem sets
    (the first n of one stream) and with one validation split (disjoint from the largest set); each reward
    model's count is the one with the lowest validation loss of its chosen checkpoint, averaged over seeds
    (:func:`label_selection`, the same rule for both). Only the chosen models are evaluated on test problems.
    (): ``label_problems`` alone."""
    train_only: bool = False
    """Train (and cache) the policies and reward models, then stop: no choice, no test problem read. For
    running seeds or grid counts as separate processes (lanes) before one call, without it, evaluates."""
    lane_labels: tuple[int, ...] = ()
    """With ``train_only`` and ``label_grid``: train only these counts of the grid (a lane). (): all."""
    test_digits: int = 3
    """Test problems have two operands of this many digits."""
    test_size: int = 200
    """Fresh test problems."""
    n: int = 16
    """Samples per test problem (best-of-N is reported for N = 1, 2, 4, ... up to n)."""
    beams: tuple[tuple[int, int], ...] = ((2, 4), (4, 4))
    """Beam-search settings (beam width, samples per beam and round)."""
    progress: bool = False
    """Progress bars."""
    threads: int = 2
    """Torch threads (results of one seed can differ between thread counts: float sums are reordered)."""

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        self.beams = tuple(tuple(b) for b in self.beams)
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        for name in ("hidden_size", "policy_train_size", "policy_steps", "label_problems", "label_samples",
                     "rm_steps", "rm_batch_size", "test_digits", "test_size", "n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rm_val_problems", "rm_eval_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.label_grid = tuple(sorted(set(self.label_grid)))
        self.lane_labels = tuple(self.lane_labels)
        if self.label_grid and not self.rm_val_problems:
            raise ValueError("label_grid needs rm_val_problems > 0: the count is chosen on that validation split")
        if any(n < 1 for n in self.label_grid):
            raise ValueError(f"label_grid counts must be >= 1, got {self.label_grid}")
        if self.lane_labels and not (self.train_only and set(self.lane_labels) <= set(self.label_grid)):
            raise ValueError(f"lane_labels {self.lane_labels} needs train_only=true and counts of label_grid "
                             f"{self.label_grid}")
        if self.rm_eval_steps > self.rm_steps:
            raise ValueError(f"rm_eval_steps ({self.rm_eval_steps}) must be <= rm_steps ({self.rm_steps})")
        if self.policy_mode not in ("history", "state"):
            raise ValueError(f"policy_mode must be history or state, got {self.policy_mode!r}")
        if self.prm_layout not in views.LAYOUTS:
            raise ValueError(f"prm_layout must be one of {views.LAYOUTS}, got {self.prm_layout!r}")
        if self.orm_layout not in views.LAYOUTS:
            raise ValueError(f"orm_layout must be one of {views.LAYOUTS}, got {self.orm_layout!r}")
        if self.orm_layout != "trace" and self.policy_mode != "state":
            raise ValueError("orm_layout=step needs policy_mode=state (a history trace is read as written)")
        if not 0.0 <= self.label_corrupt_rate <= 1.0:
            raise ValueError(f"label_corrupt_rate must be in [0, 1], got {self.label_corrupt_rate}")
        if self.label_corrupt_rate > 0 and self.policy_mode != "state":
            raise ValueError("label_corrupt_rate needs policy_mode=state (history traces are sampled whole)")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if any(len(b) != 2 or min(b) < 1 for b in self.beams):
            raise ValueError(f"beams must be (width, expand) pairs of ints >= 1, got {self.beams}")

    @property
    def ns(self) -> tuple[int, ...]:
        return tuple(sorted({*(2**i for i in range(self.n.bit_length()) if 2**i <= self.n), self.n}))


EVAL_FIELDS = ("test_digits", "test_size", "n", "beams")
"""Settings that only the evaluation reads: changing them re-evaluates the cached models, no re-training."""
EVAL_VERSION = 2
"""Bumped when the evaluation computes something new from the same models (2: best-of-N among finished
samples), so that cached evaluations are redone and cached models reused."""


OFF_BY_DEFAULT = {"rm_val_problems": 0, "rm_eval_steps": 0, "orm_layout": "trace", "label_grid": ()}
"""Fields left out of the cache keys while at these values (what the runs did before the field existed), so
that runs cached before they existed are still found."""


def _settings(cfg: PRMBenchConfig, skip: tuple[str, ...]) -> dict:
    return {k: v for k, v in asdict(cfg).items()
            if k not in skip and not (k in OFF_BY_DEFAULT and v == OFF_BY_DEFAULT[k])}


LANE_FIELDS = ("output_dir", "seeds", "progress", "threads", "train_only", "lane_labels")
"""Settings that say where and how a call runs, not what it computes: never in a cache key."""


def _train_key(cfg: PRMBenchConfig, seed: int) -> dict:
    return {**_settings(cfg, (*LANE_FIELDS, *EVAL_FIELDS)), "seed": seed}


def _key(cfg: PRMBenchConfig, seed: int) -> dict:
    return {**_settings(cfg, LANE_FIELDS), "seed": seed, "eval_version": EVAL_VERSION}


def _task() -> AdditionTask:
    return AdditionTask(carry_heavy=0.3, index_hints=False)


def _policy_problems(cfg: PRMBenchConfig, seed: int) -> list:
    return _task().sample_range(seed, 3, cfg.policy_train_size)


SELECTED = "selected.json"
"""In a reward model's folder, with ``rm_val_problems``: the checkpoint step chosen on validation."""


def _rm_dir(train_dir: Path, name: str, cfg: PRMBenchConfig) -> Path:
    chosen = train_dir / name / SELECTED
    step = json.loads(chosen.read_text())["step"] if chosen.is_file() else cfg.rm_steps
    return train_dir / name / f"checkpoint-{step}"


def select_on_validation(run_dir: Path) -> dict:
    """The evaluated step with the lowest validation loss in ``run_dir/metrics.jsonl`` (ties: the earliest),
    written to ``run_dir/selected.json``: early stopping, chosen after training from the saved checkpoints."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(m["step"], m["eval_loss"]) for m in lines if "eval_loss" in m]
    if not curve:
        raise ValueError(f"{run_dir}/metrics.jsonl has no eval_loss line: nothing to select on")
    step, loss = min(curve, key=lambda c: (c[1], c[0]))
    chosen = {"step": step, "val_loss": loss, "val_curve": curve}
    write_json(run_dir / SELECTED, chosen)
    return chosen


def _policy_config(cfg: PRMBenchConfig, seed: int, train_dir: Path) -> PALConfig:
    """How the policy is trained, and (its ``step_format``) how both stages write its steps."""
    return PALConfig(output_dir=str(train_dir / "policy-run"), mode=cfg.policy_mode, max_steps=cfg.policy_steps,
                     batch_size=64, learning_rate=2e-3, warmup_steps=min(50, cfg.policy_steps // 10), seed=seed,
                     progress=cfg.progress, save_total_limit=1)


def _layouts(cfg: PRMBenchConfig) -> dict[str, str | None]:
    """How each reward model reads a trace (:mod:`procsup.data.views`): in state mode as configured; a
    history trace is read as written (None)."""
    return {"prm": cfg.prm_layout, "orm": cfg.orm_layout} if cfg.policy_mode == "state" else {"prm": None, "orm": None}


def outcome_on_every_step(traj: Trajectory) -> Trajectory:
    """``traj`` with every step labelled with the outcome (``meta['correct']``): the targets of an
    outcome-supervised value model, which reads each step and predicts whether the trace ends right."""
    outcome = bool(traj.meta["correct"])
    return Trajectory(traj.input, traj.target, tuple(replace(s, label=outcome) for s in traj.steps), traj.meta)


def reward_rows(trajectories: list[Trajectory], name: str, layout: str | None) -> list[Trajectory]:
    """The rows reward model ``name`` (``prm`` or ``orm``) trains and validates on, from labelled traces read
    in ``layout`` (None: as written). The PRM keeps every step's label. The ORM has the outcome: on the last
    step when it reads the whole trace (:func:`~procsup.annotation.oracle.orm_labels`), on every step when it
    reads one step per row (``step``: the PRM's rows, only the labels differ)."""
    if name == "orm":
        outcome = outcome_on_every_step if layout == "step" else orm_labels
        trajectories = [outcome(t) for t in trajectories]
    return views.in_layout(trajectories, layout) if layout else list(trajectories)


def _policy(cfg: PRMBenchConfig, model, tok, seed: int, train_dir: Path) -> LMPolicy:
    """The weak policy as it samples labels, test candidates and beams."""
    fmt = _policy_config(cfg, seed, train_dir).step_format
    return LMPolicy(model, tok, _task(), fmt, mode=cfg.policy_mode, temperature=cfg.temperature)


def train_models(cfg: PRMBenchConfig, seed: int, train_dir: Path) -> dict:
    """Steps 1-3 for one seed, into ``train_dir``: the weak policy (``policy/``), oracle labels on its
    samples, and the PRM and ORM trained on them (``prm/``, ``orm/``). Returns the label statistics, the
    reward models' final training metrics and the timings."""
    task = _task()
    model_cfg = TinyModelConfig(arch=cfg.arch, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                num_heads=cfg.num_heads)
    timings = {}
    # 1. the weak policy
    t0 = time.perf_counter()
    train_problems = _policy_problems(cfg, seed)
    policy, tok = build_tiny_model(model_cfg, seed=seed)
    pal = _policy_config(cfg, seed, train_dir)
    demo = task.state_trajectory if cfg.policy_mode == "state" else task.expert
    policy = train(pal, model=policy, tokenizer=tok, trajectories=[demo(p) for p in train_problems]).model
    fmt = pal.step_format
    policy_dir = save_model(policy, tok, train_dir / "policy", fmt=fmt, mode=cfg.policy_mode)
    timings["policy"] = time.perf_counter() - t0

    # 2. oracle labels on the policy's own samples (fresh problems from the training range)
    t0 = time.perf_counter()
    seen = {(p.a, p.b) for p in train_problems}
    # label_grid: the counts' sets are nested (the first n of one stream), the validation split avoids the largest
    most = max(cfg.label_grid or (cfg.label_problems,))
    every_label_problem = [p for p in task.sample_range(1000 + seed, 3, 2 * most) if (p.a, p.b) not in seen][:most]
    label_problems = every_label_problem[: cfg.label_problems]
    sampler = _policy(cfg, policy, tok, seed, train_dir)
    labelled = [t for ts in label_traces(sampler, label_problems, cfg.label_samples, seed, cfg.label_corrupt_rate)
                for t in ts]
    timings["labels"] = time.perf_counter() - t0
    step_labels = [s.label for t in labelled for s in t.steps]

    # 3. PRM and ORM: the policy's weights, a new head, the same traces and budget
    layouts = _layouts(cfg)

    # the validation split (rm_val_problems): more fresh problems, labelled as above, for early stopping
    val, every, left_out = {}, cfg.rm_eval_steps or max(1, cfg.rm_steps // 10), {}
    if cfg.rm_val_problems:
        used = seen | {(p.a, p.b) for p in every_label_problem}
        val_problems = [p for p in task.sample_range(2000 + seed, 3, 2 * cfg.rm_val_problems) if (p.a, p.b) not in used]
        val_problems = val_problems[: cfg.rm_val_problems]
        val_traces = [t for ts in label_traces(sampler, val_problems, cfg.label_samples, seed + 3) for t in ts]
        for name in ("prm", "orm"):
            val[name] = train_dir / f"{name}_validation.jsonl"
            rows = reward_rows(val_traces, name, layouts[name])
            # Rows with an empty action (a failed sample's last step; in the step layout a row of its own) are
            # left out of the validation file, the same rows for both reward models, and counted. The JSONL
            # format rejected empty actions when the recorded runs (RESULTS 7d, the label grid) were made;
            # it reads them now, but keeping every row would change those runs' validation split under
            # unchanged cache keys, so the rule stays until a run is recorded with a new key.
            kept = [r for r in rows if all(st.action for st in r.steps)]
            left_out[name] = len(rows) - len(kept)
            write_jsonl(kept, val[name])

    rm_train = {}
    for name in ("prm", "orm"):
        data = reward_rows(labelled, name, layouts[name])
        t0 = time.perf_counter()
        model = build_prm(policy_dir, seed=seed)  # the new head's init follows the seed
        early = {"eval_file": str(val[name]), "eval_steps": every, "save_steps": every,
                 "save_total_limit": cfg.rm_steps // every + 1} if val else {"save_total_limit": 1}
        rc = PRMConfig(output_dir=str(train_dir / name), learning_rate=cfg.rm_learning_rate,
                       batch_size=cfg.rm_batch_size, max_steps=cfg.rm_steps,
                       warmup_steps=min(50, cfg.rm_steps // 10), seed=seed, progress=cfg.progress,
                       input_sep=fmt.input_sep, step_sep=fmt.step_sep, **early)
        rm_train[name] = train_prm(rc, model=model, tokenizer=tok, trajectories=data).final_metrics
        if val:
            rm_train[name]["selected"] = select_on_validation(train_dir / name)
        timings[name] = time.perf_counter() - t0
    return {
        "labels": {"label_traces": len(labelled), "label_steps": len(step_labels),
                   "label_steps_correct": statistics.fmean(step_labels),
                   "label_traces_corrupted": sum(bool(t.meta.get("corrupted")) for t in labelled),
                   **({"validation_rows_left_out_empty_action": left_out} if val else {})},
        "rm_train": rm_train, "timings": timings,
    }


def evaluate_models(cfg: PRMBenchConfig, seed: int, train_dirs: dict[str, Path]) -> dict:
    """Steps 4-5 for one seed, with the models :func:`train_models` saved in ``train_dirs`` (the policy's, the
    PRM's and the ORM's folder: one folder, or with ``label_grid`` each reward model's chosen count's): best-of-N
    on fresh test problems, step metrics of both reward models, and PRM beam search."""
    task = _task()
    model, tok, _ = load_model(train_dirs["policy"] / "policy")
    policy = _policy(cfg, model, tok, seed, train_dirs["policy"])
    layouts = _layouts(cfg)
    scorers = {name: prm_scorer(load_prm(_rm_dir(train_dirs[name], name, cfg))[0], tok, policy.fmt, layouts[name])
               for name in ("prm", "orm")}
    seen = {(p.a, p.b) for p in _policy_problems(cfg, seed)}
    timings = {}

    # 4. best-of-N on fresh test problems
    t0 = time.perf_counter()
    test = [p for p in task.sample(10_000 + seed, cfg.test_digits, 2 * cfg.test_size) if (p.a, p.b) not in seen]
    test = test[: cfg.test_size]
    cands = label_traces(policy, test, cfg.n, seed + 1)
    flat = [t for ts in cands for t in ts]
    scores = {name: scorer(flat) for name, scorer in scorers.items()}
    correct = [[bool(t.meta["correct"]) for t in ts] for ts in cands]
    answers = [[t.meta["answer"] for t in ts] for ts in cands]
    # policy samples: generated steps (in history mode the appended answer step is the generated answer line)
    samples = [[len(t.steps) for t in ts] for ts in cands]

    def per_problem(values):
        it = iter(values)
        return [[next(it) for _ in ts] for ts in cands]

    prm_s, orm_s = per_problem(scores["prm"]), per_problem(scores["orm"])
    curves = {f"prm-{how}": prm_metrics.best_of_n_curve(prm_s, correct, how, candidates_answers=answers,
                                                         ns=cfg.ns, seed=seed) for how in AGGREGATIONS}
    # the PRM's min over the process steps alone, its answer-step score left out
    answer_step = cfg.policy_mode == "history"
    steps_only = [[row[:-1] or row for row in rows] for rows in prm_s] if answer_step else prm_s
    curves["prm-min-steps"] = prm_metrics.best_of_n_curve(steps_only, correct, "min", ns=cfg.ns, seed=seed)
    orm_curve = prm_metrics.best_of_n_curve(orm_s, correct, "last", candidates_answers=answers, ns=cfg.ns, seed=seed)
    curves["orm"] = orm_curve
    orm_step = layouts["orm"] == "step"  # a per-step ORM: its min over steps beside its last step
    if orm_step:
        curves["orm-min"] = prm_metrics.best_of_n_curve(orm_s, correct, "min", candidates_answers=answers,
                                                        ns=cfg.ns, seed=seed)
    bon = {str(n): {
        **{f"prm-{how}": curves[f"prm-{how}"][n]["best_of_n"] for how in AGGREGATIONS},
        "prm-min-steps": curves["prm-min-steps"][n]["best_of_n"],
        # among the samples that finished with an answer, the ones majority vote counts
        "prm-min-finished": curves["prm-min"][n]["best_of_n_finished"],
        "prm-weighted-majority": curves["prm-min"][n]["weighted_majority_vote"],
        "orm": orm_curve[n]["best_of_n"], "orm-finished": orm_curve[n]["best_of_n_finished"],
        "orm-weighted-majority": orm_curve[n]["weighted_majority_vote"],
        **({"orm-min": curves["orm-min"][n]["best_of_n"], "orm-min-finished": curves["orm-min"][n]["best_of_n_finished"]}
           if orm_step else {}),
        "majority": orm_curve[n]["majority_vote"], "pass": orm_curve[n]["oracle"],
        "samples": n * statistics.fmean(s for row in samples for s in row),
    } for n in cfg.ns}
    labels = [s.label for t in flat for s in t.steps]
    is_answer = [answer_step and i == len(t.steps) - 1 for t in flat for i in range(len(t.steps))]
    step_eval = {}
    solution = {"prm": [[prm_metrics.aggregate(c, "min") for c in row] for row in prm_s],
                "orm": [[c[-1] for c in row] for row in orm_s]}
    for name in scorers:
        all_scores = [x for row in scores[name] for x in row]
        proc = [(x, y) for x, y, a in zip(all_scores, labels, is_answer) if not a]
        step_eval[name] = {
            "auroc_all_steps": _auroc(all_scores, labels),
            "auroc_process_steps": _auroc(*zip(*proc)) if proc else None,
            "accuracy_all_steps": prm_metrics.step_accuracy(all_scores, labels),
            # ranking one problem's samples (PRM: min; ORM: its answer-step score), what best-of-N needs
            "within_problem_auroc": prm_metrics.within_problem_auroc(solution[name], correct)[0],
        }
    if orm_step:  # the per-step ORM ranked by its min over steps too
        step_eval["orm"]["within_problem_auroc_min"] = prm_metrics.within_problem_auroc(
            [[prm_metrics.aggregate(c, "min") for c in row] for row in orm_s], correct)[0]
    timings["best_of_n"] = time.perf_counter() - t0

    # 5. beam search with the PRM, at about the same policy samples
    beams = {}
    for width, expand in cfg.beams:
        t0 = time.perf_counter()
        # history: test_digits + 2 rounds (every column, a final carry, the answer); state: 4x the expert's
        rounds = cfg.test_digits + 2 if cfg.policy_mode == "history" else None
        res = beam_search(policy, scorers["prm"], test, beam_width=width, expand=expand, how="min",
                          max_steps=rounds, seed=seed + 2)
        beams[f"{width}x{expand}"] = {"accuracy": statistics.fmean(bool(r.chosen.meta["correct"]) for r in res),
                                      "samples": statistics.fmean(r.samples for r in res)}
        timings[f"beam {width}x{expand}"] = time.perf_counter() - t0
    return {
        "best_of_n": bon, "step_eval": step_eval, "beam_search": beams,
        "policy": {"sample_accuracy": statistics.fmean(c for row in correct for c in row),
                   "test_steps_correct": statistics.fmean(labels)},
        "timings": timings,
    }


def train_stage(cfg: PRMBenchConfig, seed: int, labels: int | None = None) -> tuple[Path, dict]:
    """The cached training of one seed: ``seed<k>/train``, or with ``label_grid`` the count ``labels``'s
    ``seed<k>/train-labels<n>``. Returns the folder and what :func:`train_models` recorded."""
    point = replace(cfg, label_problems=labels) if labels is not None else cfg
    train_dir = Path(cfg.output_dir) / f"seed{seed}" / ("train" if labels is None else f"train-labels{labels}")
    return train_dir, cached_run(train_dir, _train_key(point, seed), lambda d: train_models(point, seed, d))


def label_selection(trained: dict[int, dict[int, dict]]) -> dict:
    """``label_grid``'s choice from ``trained[seed][count]`` (:func:`train_models`' records): for the PRM and
    the ORM alike, the count whose chosen checkpoint has the lowest validation loss averaged over seeds (a
    tie: the smaller count; :func:`~procsup.bench.select.choose`). Reads no test problem."""
    out = {}
    for name in ("prm", "orm"):
        losses = {n: [runs[n]["rm_train"][name]["selected"]["val_loss"] for runs in trained.values()]
                  for n in next(iter(trained.values()))}
        chosen = choose({n: [-x for x in v] for n, v in losses.items()}, tie_order=lambda n: n)
        out[name] = {"metric": "validation loss of the checkpoint chosen on validation, mean over seeds",
                     "val_loss": {str(n): stat(v) for n, v in losses.items()}, "chosen_label_problems": chosen,
                     "chosen_step": {str(s): runs[chosen]["rm_train"][name]["selected"]["step"]
                                     for s, runs in trained.items()}}
    return out


def run_seed(cfg: PRMBenchConfig, seed: int, selection: dict | None = None) -> dict:
    """One seed, each stage cached on its own settings: ``seed<k>/train`` (policy, labels, reward models;
    :func:`train_stage`) and ``seed<k>/eval`` (best-of-N, step metrics, beam search). Changing only an
    evaluation setting, or :data:`EVAL_VERSION`, re-evaluates the saved models without training them again.
    With ``label_grid``, ``selection`` (:func:`label_selection`) names each reward model's count, and the
    policy is the PRM's count's (the same policy at every count: it is trained before any label)."""
    if cfg.label_grid:
        chosen = {name: selection[name]["chosen_label_problems"] for name in ("prm", "orm")}
        stages = {name: train_stage(cfg, seed, n) for name, n in chosen.items()}
        dirs = {"policy": stages["prm"][0], **{name: d for name, (d, _) in stages.items()}}
        # each reward model's training record and timing from its own count's run; the policy's, and the label
        # statistics, from the PRM's (the ORM's count's labels: its run's eval.json)
        prm_run, orm_run = stages["prm"][1], stages["orm"][1]
        trained = {"labels": {**prm_run["labels"], "label_problems": chosen},
                   "rm_train": {"prm": prm_run["rm_train"]["prm"], "orm": orm_run["rm_train"]["orm"]},
                   "timings": {**prm_run["timings"], "orm": orm_run["timings"]["orm"]},
                   "seconds": sum(r["seconds"] for _, r in stages.values())}
        key = {**_key(cfg, seed), "chosen_label_problems": chosen}
    else:
        train_dir, trained = train_stage(cfg, seed)
        dirs, key = {"policy": train_dir, "prm": train_dir, "orm": train_dir}, _key(cfg, seed)
    seed_dir = Path(cfg.output_dir) / f"seed{seed}"
    evaluated = cached_run(seed_dir / "eval", key, lambda d: evaluate_models(cfg, seed, dirs))
    return {
        "seed": seed, "best_of_n": evaluated["best_of_n"], "step_eval": evaluated["step_eval"],
        "beam_search": evaluated["beam_search"], "policy": {**evaluated["policy"], **trained["labels"]},
        "rm_train": trained["rm_train"], "timings": {**trained["timings"], **evaluated["timings"]},
        "seconds": {"train": trained["seconds"], "eval": evaluated["seconds"]},
    }


def _auroc(scores, labels) -> float | None:
    """Step AUROC, or None where it is undefined (every step right, or every step wrong)."""
    return prm_metrics.step_auroc(scores, labels) if 0 < sum(labels) < len(labels) else None


def aggregate(runs: list[dict]) -> dict:
    """Mean ± std over seeds of every best-of-N entry, step metric and beam result."""
    ns = list(runs[0]["best_of_n"])
    return {
        "best_of_n": {n: {k: stat([r["best_of_n"][n][k] for r in runs]) for k in runs[0]["best_of_n"][n]} for n in ns},
        "step_eval": {m: {k: stat([r["step_eval"][m].get(k) for r in runs]) for k in runs[0]["step_eval"][m]}
                      for m in runs[0]["step_eval"]},
        "beam_search": {b: {k: stat([r["beam_search"][b][k] for r in runs]) for k in runs[0]["beam_search"][b]}
                        for b in runs[0]["beam_search"]},
        "policy_sample_accuracy": stat([r["policy"]["sample_accuracy"] for r in runs]),
    }


def _num(s: dict | None) -> str:
    return "n/a" if s is None else f"{s['mean']:.3f} ± {s['sample_std']:.3f}"


def format_tables(table: dict) -> dict[str, list[list[str]]]:
    """Three tables: best-of-N against N; step metrics; beam search beside best-of-N at equal samples."""
    methods = ["prm-min", "prm-min-finished", "prm-min-steps", "prm-product", "prm-mean", "prm-last",
               "prm-weighted-majority", "orm", "orm-finished", "orm-min", "orm-min-finished", "majority", "pass"]
    methods = [m for m in methods if m in next(iter(table["best_of_n"].values()))]
    bon = [["N", "samples", *methods]]
    for n, row in table["best_of_n"].items():
        bon.append([n, f"{row['samples']['mean']:.0f}", *[pct(row[m]) for m in methods]])
    steps = [["reward model", "step AUROC (all)", "step AUROC (process steps)", "step accuracy (all)",
              "within-problem AUROC"]]
    for m, row in table["step_eval"].items():
        steps.append([m, _num(row["auroc_all_steps"]), _num(row["auroc_process_steps"]),
                      pct(row["accuracy_all_steps"]), _num(row.get("within_problem_auroc"))])
        if "within_problem_auroc_min" in row:
            steps.append([f"{m} (min over steps)", "", "", "", _num(row["within_problem_auroc_min"])])
    search = [["search", "policy samples / problem", "accuracy (%)"]]
    for n, row in table["best_of_n"].items():
        search.append([f"best-of-{n}, PRM min", f"{row['samples']['mean']:.0f}", pct(row["prm-min"])])
    for b, row in table["beam_search"].items():
        search.append([f"beam {b} (width x expand), PRM min", f"{row['samples']['mean']:.0f}",
                       pct(row["accuracy"])])
    return {"best_of_n": bon, "step_eval": steps, "search": search}


def plot(table: dict, cfg: PRMBenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [int(n) for n in table["best_of_n"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, label in (("prm-min", "PRM (min)"), ("prm-weighted-majority", "PRM-weighted majority"),
                     ("orm", "ORM" if cfg.orm_layout == "trace" else "ORM, per step (last)"),
                     ("orm-min", "ORM, per step (min)"), ("majority", "majority vote"), ("pass", "pass@N (ceiling)")):
        if m not in table["best_of_n"]["1"]:
            continue
        means = [100 * table["best_of_n"][str(n)][m]["mean"] for n in ns]
        stds = [100 * table["best_of_n"][str(n)][m]["sample_std"] for n in ns]
        ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=label, ls="--" if m == "pass" else "-")
    for b, row in table["beam_search"].items():
        n_equiv = row["samples"]["mean"] / (table["best_of_n"]["1"]["samples"]["mean"])
        ax.plot([n_equiv], [100 * row["accuracy"]["mean"]], marker="*", ms=12, ls="none", label=f"beam {b} (PRM)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (samples per problem; beams placed at equal policy samples)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Best-of-N, {cfg.test_digits}-digit addition, weak policy ({len(cfg.seeds)} seeds)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cfg: PRMBenchConfig) -> dict:
    """Run (or read back) every seed, write results.json and bon.png, print the tables."""
    out = begin(cfg.threads, cfg.progress, cfg.output_dir)
    t0 = time.perf_counter()
    selection = None
    if cfg.train_only or cfg.label_grid:
        counts = (cfg.lane_labels or cfg.label_grid) if cfg.label_grid else (None,)
        trained = {s: {n: train_stage(cfg, s, n)[1] for n in counts} for s in cfg.seeds}
        if cfg.train_only:
            print(f"trained seeds {list(cfg.seeds)}" + (f" at label counts {list(counts)}" if cfg.label_grid else "")
                  + f" in {time.perf_counter() - t0:.0f}s; nothing evaluated (train_only)")
            return {"trained": trained}
        selection = label_selection(trained)
        for name, sel in selection.items():
            losses = ", ".join(f"{n}: {v['mean']:.4f}" for n, v in sel["val_loss"].items())
            print(f"{name}: label problems chosen on validation: {sel['chosen_label_problems']} "
                  f"(mean validation loss by count: {losses})")
    runs = [run_seed(cfg, s, selection) for s in cfg.seeds]
    table = aggregate(runs)
    tables = format_tables(table)
    result = {"config": asdict(cfg), **({"label_selection": selection} if selection else {}),
              "table": table, "runs": runs, "tables": tables,
              "wall_seconds": time.perf_counter() - t0, **run_facts()}
    write_json(out / "results.json", result)
    plot(table, cfg, out / "bon.png")
    for name, rows in tables.items():
        print(f"\n{name}\n{fit_table(rows)}")
    started = time.time() - result["wall_seconds"]
    print(f"\n{cached_note(*reused_runs(out, started), result['wall_seconds'])}; wrote {out}/results.json and bon.png")
    return result


__all__ = ["PRMBenchConfig", "main", "run_seed", "train_stage", "label_selection", "train_models", "evaluate_models",
           "reward_rows",
           "outcome_on_every_step", "aggregate", "format_tables"]
