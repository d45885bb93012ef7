"""``procsup bench annotate``: how good are automatic step labels (Monte Carlo rollouts, first-error
search, consensus filtering) against exact checkers, what do they cost, and what do PRMs trained on them
give downstream (issue 14).

Setting (state-mode addition, chosen because MC labels need a policy that can finish from a right prefix):
two PAL-state policies trained briefly on 1..3-digit additions (``index_hints=False``), a *weak* one
(``weak_steps``) and a *strong* one (``strong_steps``); the task's executor runs them on any length, and
sampling at temperature > 0 gives natural step errors. The traces to label are the weak policy's samples
(``trace_temperature``) on ``digits``-digit problems (16 steps each). Each policy, at its own temperature,
is an annotator. Per seed:

1. **Label quality** on a validation and a test split of traces: MC (``ns``) and first-error search
   (``ks``) with each annotator, consensus of the two annotators' MC labels (by step and by trajectory),
   and trivial rows (all-right, random at the validation split's wrong rate, the outcome on every step),
   all scored by :func:`procsup.annotation.quality.label_quality` against the exact checker, with rollouts
   counted from what ``complete`` returned and wall time per trajectory. N* (MC) is the smallest N with
   the best validation first-error accuracy; k* the smallest k whose validation first-error accuracy
   reaches MC(N*)'s: the test split only reports.
2. **Downstream**: ``label_problems`` more traces labelled exactly, by MC(N*), first-error(k*) (strong
   annotator) and by consensus; one PRM per label source (the weak policy's weights, a new 2-class head,
   one row per step as in ``bench prm``, unlabelled steps left out, equal steps and batch); step AUROC
   against exact labels and best-of-``n`` (PRM min) on the weak policy's samples of fresh test problems.
3. **Rollouts/s with and without prefix KV reuse** (:func:`kv_speed`), side by side, medians of repeats.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from procsup.annotation import consensus, exact_unit_labels, first_error_labels, label_quality, mc_labels
from procsup.bench.cache import cached_run
from procsup.bench.report import begin, render, run_facts, stat
from procsup.data import views
from procsup.data.io import write_json
from procsup.data.trajectory import Trajectory
from procsup.data.views import with_answer_step
from procsup.evaluation import prm_metrics
from procsup.models.factory import TinyModelConfig, build_tiny_model, load_model, save_model
from procsup.models.prm import build_prm, load_prm
from procsup.rollout import LMPolicy, complete, start
from procsup.scorers import prm_scorer
from procsup.tasks.addition import AdditionTask
from procsup.tasks.logic import LogicTask
from procsup.tasks.word_problems import WordProblemTask
from procsup.trainers.pal import PALConfig, train
from procsup.trainers.prm import PRMConfig, train_prm


@dataclass
class AnnotateBenchConfig:
    """Label quality, cost and downstream PRMs of MC, first-error and consensus labels (state-mode addition)."""

    output_dir: str = "runs/bench-annotate"
    """Per-seed caches, results.json and results.md."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed: policies, traces, labels, PRMs and test problems follow it."""
    hidden_size: int = 128
    """Width of the tiny llama policies (2 layers, 4 heads)."""
    weak_steps: int = 300
    """PAL-state optimizer steps (64 rows) of the weak policy: it samples the traces and is one annotator."""
    strong_steps: int = 600
    """Optimizer steps of the strong policy (the other annotator)."""
    trace_temperature: float = 0.7
    """Temperature of the weak policy's samples that get labelled (and of the best-of-N candidates)."""
    weak_temperature: float = 0.7
    """Temperature of the weak annotator's completions."""
    strong_temperature: float = 1.0
    """Temperature of the strong annotator's completions."""
    digits: int = 16
    """Operand digits of the labelled traces (one step per column)."""
    val_size: int = 12
    """Validation traces (N*, k* chosen here)."""
    test_size: int = 24
    """Test traces of the label-quality tables."""
    ns: tuple[int, ...] = (2, 4)
    """MC completions per step."""
    ks: tuple[int, ...] = (1, 2, 4)
    """First-error completions per probed prefix."""
    label_problems: int = 120
    """Traces labelled for each downstream PRM (the same traces for every label source)."""
    rm_steps: int = 600
    """Optimizer steps of each PRM."""
    rm_batch_size: int = 64
    """Rows (one step each) per PRM step."""
    bon_problems: int = 24
    """Fresh test problems of the best-of-N evaluation."""
    n: int = 16
    """Candidates per best-of-N problem."""
    history_tasks: tuple[str, ...] = ("addition", "logic", "word_problems")
    """History-mode label-quality rows (section 1b): a PAL-history policy per task, trained briefly on the
    task's training sizes, samples traces there and annotates them (the same policy at
    ``history_temperature``). Empty: none."""
    history_steps: int = 300
    """Optimizer steps (32 rows, hidden 64) of each history-mode policy."""
    history_temperature: float = 1.0
    """Temperature of the history-mode policies (traces and completions)."""
    history_val_size: int = 12
    """History-mode validation traces per task."""
    history_test_size: int = 24
    """History-mode test traces per task."""
    speed_repeats: int = 3
    """Repeats of each KV-reuse timing (the median is reported)."""
    threads: int = 1
    """Torch threads."""
    progress: bool = False
    """Progress bars of the trainers."""

    def __post_init__(self) -> None:
        self.seeds, self.ns, self.ks = tuple(self.seeds), tuple(self.ns), tuple(self.ks)
        self.history_tasks = tuple(self.history_tasks)
        if set(self.history_tasks) - set(HISTORY_TASKS):
            raise ValueError(f"history_tasks must be among {HISTORY_TASKS}, got {self.history_tasks}")
        if not self.seeds or not self.ns or not self.ks:
            raise ValueError("seeds, ns and ks must not be empty")
        for name in ("hidden_size", "weak_steps", "strong_steps", "digits", "val_size", "test_size", "label_problems",
                     "rm_steps", "rm_batch_size", "bon_problems", "n", "speed_repeats", "threads", "history_steps",
                     "history_val_size", "history_test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.ns) < 1 or min(self.ks) < 1:
            raise ValueError(f"ns and ks must be >= 1, got {self.ns}, {self.ks}")
        for name in ("trace_temperature", "weak_temperature", "strong_temperature", "history_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


HISTORY_TASKS = ("addition", "logic", "word_problems")


def _history_task(name: str):
    """The task and its (training range, labelled size): addition with column letters on 1..3 digits, logic
    chains of 2..5 letters, word problems of 2..4 operations (quantities below 100)."""
    if name == "addition":
        return AdditionTask(carry_heavy=0.3), 3
    if name == "logic":
        return LogicTask(), 5
    return WordProblemTask(max_value=100), 4


def history_rows(cfg: AnnotateBenchConfig, seed: int, name: str, out: Path) -> dict:
    """Section 1b for one seed and task: a PAL-history policy's own traces at its training size, labelled by
    MC and first-error search with that policy (units: steps and the answer line), against the exact checker."""
    task, size = _history_task(name)
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=64), seed=seed)
    pal = PALConfig(output_dir=str(out / "run"), mode="history", max_steps=cfg.history_steps, batch_size=32,
                    learning_rate=2e-3, warmup_steps=min(50, cfg.history_steps // 10), seed=seed, progress=cfg.progress,
                    save_total_limit=1)
    (model, sec_train) = _timed(lambda: train(pal, model=model, tokenizer=tok,
                                              trajectories=[task.expert(p) for p in task.sample_range(seed, size, 2000)]).model)
    pol = LMPolicy(model, tok, task, pal.step_format, mode="history", temperature=cfg.history_temperature)
    rows: dict[str, dict] = {"val": {}, "test": {}}
    acc = {}
    for split, (offset, count) in {"val": (100, cfg.history_val_size), "test": (200, cfg.history_test_size)}.items():
        problems = task.sample(offset + seed, size, count)
        trajs = [ts[0] for ts in complete(pol, start(task, problems), 1, seed=offset + seed)]
        acc[split] = statistics.fmean(bool(t.meta["correct"]) for t in trajs)
        exact = exact_unit_labels(task, "history", trajs, True)
        for n in cfg.ns:
            lab, sec = _timed(lambda: mc_labels(pol, trajs, n, seed * 7919 + n))
            rows[split][f"mc/N={n}"] = _quality(lab, exact, sec, trajs)
        for k in cfg.ks:
            lab, sec = _timed(lambda: first_error_labels(pol, trajs, k, seed * 7919 + k))
            rows[split][f"first-error/k={k}"] = _quality(lab, exact, sec, trajs)
        answered = [with_answer_step(t, pol.fmt) for t in trajs]
        p_wrong = 1 - statistics.fmean(x for r in exact for x in r)
        for how in ("all-right", "outcome", "random"):
            rows[split][f"trivial/{how}"] = _quality(_trivial(answered, how, p_wrong, random.Random(seed)), exact, 0.0, trajs)
    return {"rows": rows, "trace_accuracy": acc, "train_seconds": sec_train,
            "units_per_trace": statistics.fmean(len(r) for r in exact)}


def _task() -> AdditionTask:
    return AdditionTask(carry_heavy=0.3, index_hints=False)


def _train_policy(cfg: AnnotateBenchConfig, seed: int, steps: int, out: Path) -> Path:
    task = _task()
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=cfg.hidden_size), seed=seed)
    pal = PALConfig(output_dir=str(out / "run"), mode="state", max_steps=steps, batch_size=64, learning_rate=2e-3,
                    warmup_steps=min(50, steps // 10), seed=seed, progress=cfg.progress, save_total_limit=1)
    problems = task.sample_range(seed, 3, 20000)
    model = train(pal, model=model, tokenizer=tok, trajectories=[task.state_trajectory(p) for p in problems]).model
    return save_model(model, tok, out / "policy", fmt=pal.step_format, mode="state")


def _policy(path: Path, temperature: float) -> LMPolicy:
    from procsup.rollout import load_policy

    return load_policy(path, _task(), temperature=temperature)


def _traces(policy: LMPolicy, seed: int, digits: int, count: int) -> list[Trajectory]:
    problems = _task().sample(seed, digits, count)
    return [ts[0] for ts in complete(policy, start(policy.task, problems), 1, seed=seed)]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _trivial(trajs: list[Trajectory], how: str, p_wrong: float, rng: random.Random) -> list[Trajectory]:
    def lab(t, i):
        if how == "all-right":
            return True
        if how == "outcome":
            return bool(t.meta["correct"])
        return rng.random() >= p_wrong

    return [replace(t, steps=tuple(replace(s, label=lab(t, i)) for i, s in enumerate(t.steps)),
                    meta={**t.meta, "annotation": {"rollouts": 0, "policy_samples": 0}}) for t in trajs]


def _quality(labelled, exact, seconds, trajs) -> dict:
    q = label_quality(labelled, exact)
    wrong = [lab.meta.get("annotation", {}).get("rollouts", 0) for lab, t in zip(labelled, trajs) if not t.meta["correct"]]
    return {**q, "rollouts_per_wrong_trajectory": statistics.fmean(wrong) if wrong else None,
            "seconds_per_trajectory": seconds / len(trajs)}


def _with_exact(trajs: list[Trajectory]) -> list[Trajectory]:
    exact = exact_unit_labels(_task(), "state", trajs, False)
    return [replace(t, steps=tuple(replace(s, label=ok) for s, ok in zip(t.steps, row))) for t, row in zip(trajs, exact)]


def label_quality_rows(cfg: AnnotateBenchConfig, seed: int, policies: dict[str, Path]) -> dict:
    """Step 1 for one seed: every method and setting on the validation and test traces."""
    gen = _policy(policies["weak"], cfg.trace_temperature)
    annotators = {"weak": _policy(policies["weak"], cfg.weak_temperature),
                  "strong": _policy(policies["strong"], cfg.strong_temperature)}
    splits = {"val": _traces(gen, 100 + seed, cfg.digits, cfg.val_size),
              "test": _traces(gen, 200 + seed, cfg.digits, cfg.test_size)}
    rows: dict[str, dict[str, dict]] = {"val": {}, "test": {}}
    labels_kept: dict[str, dict[str, list]] = {"val": {}, "test": {}}
    for split, trajs in splits.items():
        exact = exact_unit_labels(_task(), "state", trajs, False)
        for who, pol in annotators.items():
            for n in cfg.ns:
                lab, sec = _timed(lambda: mc_labels(pol, trajs, n, seed * 7919 + n))
                rows[split][f"mc/{who}/N={n}"] = _quality(lab, exact, sec, trajs)
                labels_kept[split][f"mc/{who}/N={n}"] = lab
            for k in cfg.ks:
                lab, sec = _timed(lambda: first_error_labels(pol, trajs, k, seed * 7919 + k))
                rows[split][f"first-error/{who}/k={k}"] = _quality(lab, exact, sec, trajs)
        p_wrong = 1 - statistics.fmean(x for r in exact_unit_labels(_task(), "state", splits["val"], False) for x in r)
        for how in ("all-right", "outcome", "random"):
            lab = _trivial(trajs, how, p_wrong, random.Random(seed))
            rows[split][f"trivial/{how}"] = _quality(lab, exact, 0.0, trajs)
        for n in cfg.ns:
            for agree in ("step", "trajectory"):
                kept, report = consensus(labels_kept[split][f"mc/weak/N={n}"], labels_kept[split][f"mc/strong/N={n}"], agree)
                q = _quality(kept, exact, 0.0, trajs)
                q["rollouts_per_trajectory"] = sum(rows[split][f"mc/{w}/N={n}"]["rollouts_per_trajectory"] for w in annotators)
                rows[split][f"consensus-{agree}/mc weak+strong/N={n}"] = {**q, "report": report.as_dict()}
    return {"rows": rows, "trace_accuracy": {s: statistics.fmean(bool(t.meta["correct"]) for t in ts)
                                             for s, ts in splits.items()}}


def choose(val_rows: dict, ns, ks, who: str = "strong") -> dict:
    """N*: smallest N with the best validation first-error accuracy; k*: smallest k reaching MC(N*)'s."""
    fe = {n: val_rows[f"mc/{who}/N={n}"]["first_error_accuracy"] for n in ns}
    n_star = min(n for n in ns if fe[n] == max(fe.values()))
    reach = [k for k in ks if val_rows[f"first-error/{who}/k={k}"]["first_error_accuracy"] >= fe[n_star]]
    k_star = min(reach) if reach else max(ks)
    return {"n": n_star, "k": k_star, "k_reaches_mc": bool(reach)}


def downstream(cfg: AnnotateBenchConfig, seed: int, policies: dict[str, Path], pick: dict, out: Path) -> dict:
    """Step 2 for one seed: PRMs on exact, MC, first-error and consensus labels of the same traces."""
    gen = _policy(policies["weak"], cfg.trace_temperature)
    weak, strong = _policy(policies["weak"], cfg.weak_temperature), _policy(policies["strong"], cfg.strong_temperature)
    trajs = _traces(gen, 300 + seed, cfg.digits, cfg.label_problems)
    mc_strong = mc_labels(strong, trajs, pick["n"], seed * 7919 + 1)
    sources = {
        "exact": _with_exact(trajs),
        "mc": mc_strong,
        "first-error": first_error_labels(strong, trajs, pick["k"], seed * 7919 + 2),
        "consensus": consensus(mc_labels(weak, trajs, pick["n"], seed * 7919 + 3), mc_strong, "step")[0],
    }
    # test candidates: the weak policy's samples on fresh problems, with exact labels
    test = _task().sample(400 + seed, cfg.digits, cfg.bon_problems)
    cands = complete(gen, start(gen.task, test), cfg.n, seed=500 + seed)
    flat = [t for ts in cands for t in ts]
    exact_flat = exact_unit_labels(_task(), "state", flat, False)
    truth = [x for row in exact_flat for x in row]
    correct = [[bool(t.meta["correct"]) for t in ts] for ts in cands]
    _, tok, _ = load_model(policies["weak"])
    result = {"policy_sample_accuracy": statistics.fmean(c for row in correct for c in row),
              "pass_at_n": statistics.fmean(any(row) for row in correct), "prms": {}}
    answers = [[t.meta["answer"] for t in ts] for ts in cands]
    result["majority"] = prm_metrics.majority_vote(answers, correct)
    for name, labelled in sources.items():
        rows = [r for r in views.in_layout(labelled, "step") if r.steps[0].label is not None]
        rows = [replace(r, steps=tuple(replace(s, label=bool(s.label)) for s in r.steps)) for r in rows]
        t0 = time.perf_counter()
        model = build_prm(policies["weak"], seed=seed)
        rc = PRMConfig(output_dir=str(out / f"prm-{name}"), learning_rate=1e-3, batch_size=cfg.rm_batch_size,
                       max_steps=cfg.rm_steps, warmup_steps=min(50, cfg.rm_steps // 10), seed=seed,
                       progress=cfg.progress, save_total_limit=1)
        train_prm(rc, model=model, tokenizer=tok, trajectories=rows)
        prm, _, _ = load_prm(out / f"prm-{name}" / f"checkpoint-{cfg.rm_steps}")
        scores = prm_scorer(prm, tok, gen.fmt, "step")(flat)
        it = iter(scores)
        per_problem = [[next(it) for _ in ts] for ts in cands]
        flat_scores = [x for row in scores for x in row]
        result["prms"][name] = {
            "label_rows": len(rows), "label_rows_wrong": sum(not r.steps[0].label for r in rows),
            "step_auroc": prm_metrics.step_auroc(flat_scores, truth) if 0 < sum(truth) < len(truth) else None,
            "best_of_n": prm_metrics.best_of_n(per_problem, correct, "min"),
            "seconds": time.perf_counter() - t0,
        }
    return result


DOWNSTREAM_FIELDS = ("label_problems", "rm_steps", "rm_batch_size", "bon_problems", "n")
"""Settings only step 2 reads: changing them re-runs the downstream PRMs on the cached policies."""
HISTORY_FIELDS = ("history_tasks", "history_steps", "history_temperature", "history_val_size", "history_test_size")


def run_seed(cfg: AnnotateBenchConfig, seed: int) -> dict:
    """One seed, each stage cached on the settings it reads: ``seed<k>`` (policies, label quality, picks),
    ``seed<k>-downstream`` (PRMs), ``seed<k>-history-<task>`` (history-mode rows)."""
    skip = ("output_dir", "seeds", "progress", "speed_repeats", *HISTORY_FIELDS, *DOWNSTREAM_FIELDS)
    key = {**{k: v for k, v in asdict(cfg).items() if k not in skip}, "seed": seed}
    seed_dir = Path(cfg.output_dir) / f"seed{seed}"

    def fn(d: Path) -> dict:
        policies, timings = {}, {}
        for name, steps in (("weak", cfg.weak_steps), ("strong", cfg.strong_steps)):
            policies[name], timings[f"policy-{name}"] = _timed(lambda: _train_policy(cfg, seed, steps, d / name))
        quality, timings["label_quality"] = _timed(lambda: label_quality_rows(cfg, seed, policies))
        pick = choose(quality["rows"]["val"], cfg.ns, cfg.ks)
        return {"quality": quality, "pick": pick, "timings": timings}

    result = dict(cached_run(seed_dir, key, fn))
    policies = {name: seed_dir / name / "policy" for name in ("weak", "strong")}
    down_key = {**key, **{k: v for k, v in asdict(cfg).items() if k in DOWNSTREAM_FIELDS}}
    down = cached_run(Path(cfg.output_dir) / f"seed{seed}-downstream", down_key,
                      lambda d: downstream(cfg, seed, policies, result["pick"], d))
    result["downstream"] = down
    result["timings"] = {**result["timings"], "downstream": down["seconds"]}
    result["seconds"] = result["seconds"] + down["seconds"]
    hist_keys = ("hidden_size", "ns", "ks", "history_steps", "history_temperature", "history_val_size", "history_test_size")
    result["history"] = {
        name: cached_run(Path(cfg.output_dir) / f"seed{seed}-history-{name}",
                         {**{k: v for k, v in asdict(cfg).items() if k in hist_keys}, "task": name, "seed": seed},
                         lambda d, name=name: history_rows(cfg, seed, name, d))
        for name in cfg.history_tasks}
    return result


def kv_speed(cfg: AnnotateBenchConfig) -> dict:
    """Rollouts/s of MC completions with and without prefix KV reuse, alternated in one run, medians of
    ``speed_repeats``, 8 samples per prefix, untrained models (a fixed number of new tokens: the cost does not
    depend on what they write): (a) the tiny state-mode model drawing one action in each of 24 states
    (prompts of ~6 tokens), (b) a wider history-mode model continuing 16 prefixes of 16-digit traces
    (~130-200 tokens) by 24 tokens."""
    task = _task()
    cases = {}
    # (a) state mode: a trained-size tiny model, 8 traces' prefixes, n=8
    model, tok = build_tiny_model(TinyModelConfig(hidden_size=cfg.hidden_size), seed=0)
    experts = [task.state_trajectory(p) for p in task.sample(9, cfg.digits, 8)]
    state_prefixes = [Trajectory(e.input, "", e.steps[:u], e.meta) for e in experts for u in (4, 8, 12)]
    # (b) history mode: long prefixes, a larger tiny model
    big, btok = build_tiny_model(TinyModelConfig(hidden_size=256, num_layers=4, num_heads=8), seed=0)
    hexperts = [task.expert(p) for p in task.sample(9, cfg.digits, 8)]
    hist_prefixes = [Trajectory(e.input, "", e.steps[:u], e.meta) for e in hexperts for u in (8, 12)]
    setups = {  # (model, tokenizer, mode, prefixes, new tokens, until)
        "state, hidden 128 x 2 layers, prompt ~6 tokens, one action (4 tokens)": (model, tok, "state", state_prefixes, 4,
                                                                                  "step"),
        "history, hidden 256 x 4 layers, prefix 130-200 tokens, 24 new tokens": (big, btok, "history", hist_prefixes, 24,
                                                                                 "answer"),
    }
    for name, (m, t, mode, prefixes, budget, until) in setups.items():
        times = {True: [], False: []}
        counts = {}
        warm = LMPolicy(m, t, task, mode=mode, temperature=1.0, batch_size=64, max_new_tokens=budget, max_steps=4)
        complete(warm, prefixes[:2], 2, until, seed=0)  # untimed: first-call allocations
        for _ in range(cfg.speed_repeats):
            for reuse in (True, False):
                pol = LMPolicy(m, t, task, mode=mode, temperature=1.0, batch_size=64, max_new_tokens=budget,
                               max_steps=4 if mode == "state" else None, kv_reuse=reuse)
                outs, sec = _timed(lambda: complete(pol, prefixes, 8, until, seed=0))
                times[reuse].append(sec)
                counts[reuse] = sum(len(r) for r in outs)
        cases[name] = {
            ("kv_reuse" if reuse else "no_reuse"): {"rollouts": counts[reuse], "median_seconds": statistics.median(times[reuse]),
                                                    "seconds": times[reuse],
                                                    "rollouts_per_s": counts[reuse] / statistics.median(times[reuse])}
            for reuse in (True, False)}
        cases[name]["speedup"] = cases[name]["kv_reuse"]["rollouts_per_s"] / cases[name]["no_reuse"]["rollouts_per_s"]
    return cases


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def aggregate(runs: list[dict]) -> dict:
    """Mean and sample std over seeds of every quality metric, pick and downstream number."""
    names = list(runs[0]["quality"]["rows"]["test"])
    metrics = [k for k, v in runs[0]["quality"]["rows"]["test"][names[0]].items() if not isinstance(v, dict)]
    quality = {split: {name: {m: stat([r["quality"]["rows"][split][name].get(m) for r in runs]) for m in metrics}
                       for name in names} for split in ("val", "test")}
    for split in ("val", "test"):
        for name in names:
            if "report" in runs[0]["quality"]["rows"][split][name]:
                quality[split][name]["share_kept"] = stat([r["quality"]["rows"][split][name]["report"]["share_kept"]
                                                          for r in runs])
    prms = {name: {m: stat([r["downstream"]["prms"][name][m] for r in runs]) for m in ("step_auroc", "best_of_n", "label_rows",
                                                                                       "label_rows_wrong")}
            for name in runs[0]["downstream"]["prms"]}
    acceptance = {"first_error_vs_mc": [], "prm_gap_best_of_n": {}}
    for r in runs:  # per seed, at the validation picks: first-error(k*) against MC(N*), strong annotator, test split
        t, pick = r["quality"]["rows"]["test"], r["pick"]
        mc, fe = t[f"mc/strong/N={pick['n']}"], t[f"first-error/strong/k={pick['k']}"]
        acceptance["first_error_vs_mc"].append({
            "seed_pick": pick, "mc_first_error_accuracy": mc["first_error_accuracy"],
            "fe_first_error_accuracy": fe["first_error_accuracy"],
            "mc_rollouts_per_trajectory": mc["rollouts_per_trajectory"],
            "fe_rollouts_per_trajectory": fe["rollouts_per_trajectory"],
            "rollout_ratio": _div(fe["rollouts_per_trajectory"], mc["rollouts_per_trajectory"]),
            "rollout_ratio_wrong_traces": _div(fe["rollouts_per_wrong_trajectory"], mc["rollouts_per_wrong_trajectory"])})
    for name in runs[0]["downstream"]["prms"]:
        acceptance["prm_gap_best_of_n"][name] = stat([_sub(r["downstream"]["prms"]["exact"]["best_of_n"],
                                                           r["downstream"]["prms"][name]["best_of_n"]) for r in runs])
    rows = acceptance["first_error_vs_mc"]
    acceptance["rollout_ratio"] = stat([a["rollout_ratio"] for a in rows])
    acceptance["rollout_ratio_wrong_traces"] = stat([a["rollout_ratio_wrong_traces"] for a in rows])
    acceptance["fe_minus_mc_first_error_accuracy"] = stat([_sub(a["fe_first_error_accuracy"], a["mc_first_error_accuracy"])
                                                          for a in rows])
    history = {}
    for name in runs[0].get("history", {}):
        hrows = [r["history"][name] for r in runs]
        history[name] = {
            split: {row: {m: stat([h["rows"][split][row].get(m) for h in hrows]) for m in metrics}
                    for row in hrows[0]["rows"][split]} for split in ("val", "test")}
        history[name]["trace_accuracy_test"] = stat([h["trace_accuracy"]["test"] for h in hrows])
        history[name]["units_per_trace"] = stat([h["units_per_trace"] for h in hrows])
    return {"quality": quality, "prms": prms, "history": history, "acceptance": acceptance,
            "pass_at_n": stat([r["downstream"]["pass_at_n"] for r in runs]),
            "majority": stat([r["downstream"]["majority"] for r in runs]),
            "policy_sample_accuracy": stat([r["downstream"]["policy_sample_accuracy"] for r in runs]),
            "trace_accuracy_test": stat([r["quality"]["trace_accuracy"]["test"] for r in runs]),
            "picks": [r["pick"] for r in runs]}


def _f(s: dict | None, pct: bool = True, digits: int = 1) -> str:
    if s is None:
        return "n/a"
    scale = 100 if pct else 1
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sample_std']:.{digits}f}"


def format_tables(table: dict, speed: dict, n: int) -> dict[str, list[list[str]]]:
    q = table["quality"]["test"]
    head = ["labels (test split)", "first-error acc", "first-error acc (wrong traces)", "step acc (to 1st error)",
            "step acc (all)", "coverage", "wrong precision", "wrong precision (to 1st error)", "wrong recall", "rollouts / trace",
            "rollouts / wrong trace", "s / trace"]
    quality = [head]
    for name, row in q.items():
        quality.append([name, _f(row["first_error_accuracy"]), _f(row["first_error_accuracy_wrong"]),
                        _f(row["step_accuracy_to_first_error"]), _f(row["step_accuracy"]), _f(row["coverage"]),
                        _f(row["wrong_precision"]), _f(row["wrong_precision_to_first_error"]), _f(row["wrong_recall"]),
                        _f(row["rollouts_per_trajectory"], False), _f(row["rollouts_per_wrong_trajectory"], False),
                        _f(row["seconds_per_trajectory"], False, 3)])
    for task, t in table.get("history", {}).items():
        for name, row in t["test"].items():
            quality.append([f"history {task}: {name}", _f(row["first_error_accuracy"]), _f(row["first_error_accuracy_wrong"]),
                            _f(row["step_accuracy_to_first_error"]), _f(row["step_accuracy"]), _f(row["coverage"]),
                            _f(row["wrong_precision"]), _f(row["wrong_precision_to_first_error"]), _f(row["wrong_recall"]),
                            _f(row["rollouts_per_trajectory"], False),
                            _f(row["rollouts_per_wrong_trajectory"], False), _f(row["seconds_per_trajectory"], False, 3)])
    cons = [["consensus (test)", "wrong precision", "wrong precision (to 1st error)", "step acc (to 1st error)",
             "first-error acc", "share of step labels kept"]]
    for name, row in q.items():
        if name.startswith("consensus") or (name.startswith("mc/") and "consensus" not in name):
            cons.append([name, _f(row["wrong_precision"]), _f(row["wrong_precision_to_first_error"]),
                         _f(row["step_accuracy_to_first_error"]), _f(row["first_error_accuracy"]),
                         _f(row.get("share_kept")) if name.startswith("consensus") else "100 (source)"])
    down = [["PRM trained on", "label rows", "wrong rows", "step AUROC vs exact", f"best-of-{n} (PRM min)"]]
    for name, row in table["prms"].items():
        down.append([name, _f(row["label_rows"], False, 0), _f(row["label_rows_wrong"], False, 0),
                     _f(row["step_auroc"], False, 3), _f(row["best_of_n"])])
    down.append(["(majority vote)", "", "", "", _f(table["majority"])])
    down.append([f"(pass@{n}, ceiling)", "", "", "", _f(table["pass_at_n"])])
    kv = [["setting", "rollouts", "kv reuse: rollouts/s", "no reuse: rollouts/s", "speedup"]]
    for name, row in speed.items():
        kv.append([name, str(row["kv_reuse"]["rollouts"]), f"{row['kv_reuse']['rollouts_per_s']:.1f}",
                   f"{row['no_reuse']['rollouts_per_s']:.1f}", f"{row['speedup']:.2f}x"])
    acc = table["acceptance"]
    accept = [["acceptance (test split, validation picks)", "value (mean ± sample std over seeds)"],
              ["first-error(k*) rollouts / MC(N*) rollouts, all traces", _f(acc["rollout_ratio"], False, 3)],
              ["first-error(k*) rollouts / MC(N*) rollouts, wrong traces", _f(acc["rollout_ratio_wrong_traces"], False, 3)],
              ["first-error accuracy: first-error(k*) - MC(N*) (points)", _f(acc["fe_minus_mc_first_error_accuracy"])]]
    for name, gap in acc["prm_gap_best_of_n"].items():
        if name != "exact":
            accept.append([f"best-of-{n} gap, exact-label PRM - {name}-label PRM (points)", _f(gap)])
    return {"quality": quality, "consensus": cons, "downstream": down, "acceptance": accept, "kv_reuse": kv}


def main(cfg: AnnotateBenchConfig) -> dict:
    """Run (or read back) every seed and the KV-reuse timing; write results.json and results.md; print tables."""
    out = begin(cfg.threads, cfg.progress, cfg.output_dir)
    t0 = time.perf_counter()
    runs = [run_seed(cfg, s) for s in cfg.seeds]
    speed = kv_speed(cfg)
    table = aggregate(runs)
    tables = format_tables(table, speed, cfg.n)
    result = {"config": asdict(cfg), "table": table, "kv_speed": speed, "runs": runs, "tables": tables,
              "wall_seconds": time.perf_counter() - t0, "seed_seconds": [r["seconds"] for r in runs], **run_facts()}
    write_json(out / "results.json", result)
    md = [f"# bench annotate ({result['date']})", "",
          f"machine: {result['machine']}; torch threads {result['torch_threads']}; OMP_WAIT_POLICY="
          f"{result['omp_wait_policy']}; wall {result['wall_seconds']:.0f} s (seeds computed in "
          f"{', '.join(f'{s:.0f}' for s in result['seed_seconds'])} s); mean ± sample std over seeds {list(cfg.seeds)}; "
          f"picks (N*, k*) per seed: {table['picks']}", ""]
    for name, rows in tables.items():
        md += [f"## {name}", "", render(rows, markdown=True), ""]
    (out / "results.md").write_text("\n".join(md))
    print("\n".join(md))
    return result


__all__ = ["AnnotateBenchConfig", "main", "run_seed", "kv_speed", "aggregate", "choose", "format_tables"]
