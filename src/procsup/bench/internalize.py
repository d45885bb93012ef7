"""Internalization vs outcome-only GRPO/RLOO vs rejection-sampling fine-tuning vs exact step rewards (issue 16).

From the RL bench's weak policies (``rl_dir/<task>/models/policy``, read only), per task (addition, logic),
arm and seed, every run here with the current code:

* **outcome-grpo**, **outcome-rloo**: the outcome reward alone (the RL bench's arms);
* **rft**: online rejection-sampling fine-tuning: no policy gradient (no reward), the update's right samples
  as a step-supervised NLL term (``RLConfig.reuse_coef``, ``train(reuse=)``);
* **exact-step**: each step's own exact reward (the upper bound: external step labels);
* **internalize**: exact-step's credit with the step rewards from
  :class:`procsup.rl.internalize.InternalizeScorer` (first-error search with outcome-only rollouts, credit
  before the located error and blame at it), which never reads the exact checker;
* **internalize-reuse**: the same, and the corrected trajectories (the last good prefix completed to a right
  answer) as a step-supervised term of the update (``reuse_coef``).

Every arm's learning rate is chosen from the same grid on validation accuracy (seed 0, end of run), the
same effort for each. Every run: greedy accuracy and trace validity on validation, test and longer test
problems against cumulative policy samples, the internalization arms' samples including every rollout spent
on searching and correcting; the arms are compared at equal policy samples (each curve interpolated at the
smallest final sample count of the arms, per seed). The exact checker only *measures* the located errors
and the corrections (per update, over training). Results: ``<results_name>.json``, ``table*.md`` and
``internalize*.png`` in ``output_dir``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from procsup.annotation import first_error_labels
from procsup.bench.cache import cached_run
from procsup.bench.report import stat
from procsup.bench.rl import ARMS, FMT, TASKS, run_parallel
from procsup.data.io import write_json
from procsup.models.factory import load_model
from procsup.rl.grpo import RLConfig, train
from procsup.rl.internalize import InternalizeConfig, InternalizeScorer
from procsup.rl.monitor import GamingMonitor
from procsup.rollout import LMPolicy
from procsup.scorers import exact_labels, exact_scorer

BENCH_ARMS: dict[str, dict] = {
    "outcome-grpo": {"rl": ARMS["outcome-grpo"]},
    "outcome-rloo": {"rl": ARMS["outcome-rloo"]},
    "rft": {"rl": {"outcome_coef": 0.0}, "reuse": "right"},
    "exact-step": {"rl": ARMS["exact-step"], "scorer": "exact"},
    "internalize": {"rl": ARMS["exact-step"], "scorer": "internalize"},
    "internalize-reuse": {"rl": ARMS["exact-step"], "scorer": "internalize", "reuse": "corrections"},
}
"""Each arm: its RLConfig fields, its step scorer and what it reuses as a step-supervised term."""
MEASURED = ("failed", "searched", "first_error_accuracy", "first_error_early", "first_error_late",
            "step_label_accuracy", "corrected", "correction_validity")


@dataclass
class InternalizeBenchConfig:
    """Internalization benchmark (see the module docstring)."""

    output_dir: str = "runs/bench-internalize"
    """Folder of the runs, results and plots."""
    rl_dir: str = "runs/bench-rl"
    """The RL bench's folder: weak policies and their trivial rows, read only."""
    tasks: tuple[str, ...] = ("addition", "logic")
    """Tasks of the RL bench."""
    arms: tuple[str, ...] = tuple(BENCH_ARMS)
    """Arms (see BENCH_ARMS)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """RL seeds; seed 0's runs are also the learning-rate selection runs."""
    learning_rates: tuple[float, ...] = (3e-5, 1e-4)
    """The grid every arm's learning rate is chosen from, on validation (the RL bench's without 3e-4, where
    every arm of its addition selection collapsed; dropped for time)."""
    updates: int = 24
    batch_size: int = 16
    group_size: int = 8
    eval_every: int = 6
    """Greedy evaluations (validation, test) every this many updates (and at 0); the longer problems at the
    last update only."""
    val_size: int = 100
    test_size: int = 150
    longer_size: int = 100
    k: int = 2
    """First-error search: completions per probed prefix."""
    max_searched: int | None = 16
    """Failed samples searched per update."""
    correct_n: int = 2
    correct_rounds: int = 1
    reuse_coef: float = 1.0
    """Weight of the step-supervised term (rft, internalize-reuse); fixed, not tuned."""
    results_name: str = "results"
    """Stem of the written files (a new name keeps an earlier recorded run)."""
    workers: int = 2

    def __post_init__(self) -> None:
        self.tasks, self.seeds, self.arms = tuple(self.tasks), tuple(self.seeds), tuple(self.arms)
        self.learning_rates = tuple(float(x) for x in self.learning_rates)
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"tasks must be among {tuple(TASKS)}, got {t!r}")
        for a in self.arms:
            if a not in BENCH_ARMS:
                raise ValueError(f"arms must be among {tuple(BENCH_ARMS)}, got {a!r}")
        for a in ("outcome-grpo", "exact-step"):
            if a not in self.arms:
                raise ValueError(f"arms must include {a} (the two ends of the gap)")
        if 0 not in self.seeds:
            raise ValueError(f"seeds must include 0 (the selection seed), got {self.seeds}")
        InternalizeConfig(k=self.k, max_searched=self.max_searched, correct_n=self.correct_n,
                          correct_rounds=self.correct_rounds)


def _run_key(cfg: InternalizeBenchConfig, task_name: str, arm: str, lr: float, seed: int) -> dict:
    key = {k: v for k, v in asdict(cfg).items()
           if k not in ("output_dir", "workers", "tasks", "seeds", "arms", "learning_rates", "results_name")}
    if "scorer" not in BENCH_ARMS[arm] or BENCH_ARMS[arm]["scorer"] != "internalize":
        for k in ("k", "max_searched", "correct_n", "correct_rounds"):
            key.pop(k)
    if "reuse" not in BENCH_ARMS[arm]:
        key.pop("reuse_coef")
    return {**key, "task": task_name, "arm": arm, "lr": lr, "seed": seed}


def run_arm(cfg: InternalizeBenchConfig, task_name: str, arm: str, lr: float, seed: int) -> dict:
    """One run (cached in ``output_dir/<task>/<arm>/lr<lr>-seed<k>``)."""
    spec_arm = BENCH_ARMS[arm]

    def go(out: Path) -> dict:
        torch.set_num_threads(1)
        spec = TASKS[task_name]
        task = spec["task"]()
        model, tok, _ = load_model(Path(cfg.rl_dir) / task_name / "models" / "policy")
        scorer = None
        if spec_arm.get("scorer") == "exact":
            scorer = exact_scorer(task, "history")
        elif spec_arm.get("scorer") == "internalize":
            icfg = InternalizeConfig(k=cfg.k, max_searched=cfg.max_searched, correct_n=cfg.correct_n,
                                     correct_rounds=cfg.correct_rounds, seed=seed)
            policy = LMPolicy(model, tok, task, FMT, mode="history", temperature=1.0)
            scorer = InternalizeScorer(policy, icfg, first_error_labels,
                                       exact=lambda ts: exact_labels(task, "history", ts),
                                       log_file=str(out / "internalize.jsonl"))
        reuse = {"right": lambda trajs: [t for t in trajs if t.meta["correct"]],
                 "corrections": lambda trajs: scorer.corrections, None: None}[spec_arm.get("reuse")]
        sets = {split: spec[split](task, size) for split, size in (("test", cfg.test_size), ("longer", cfg.longer_size))}

        def extra(policy_model, update: int) -> dict:
            res = {"internalize_samples": getattr(scorer, "samples", 0)}
            for split, problems in sets.items():
                if split == "longer" and update != cfg.updates:
                    continue
                r = GamingMonitor(task, FMT, problems).evaluate(policy_model, tok, update=update, samples=0)
                res.update({f"{split}_accuracy": r["accuracy"], f"{split}_trace_validity": r["trace_validity"]})
            return res

        rc = RLConfig(output_dir=str(out / "run"), max_steps=cfg.updates, batch_size=cfg.batch_size,
                      group_size=cfg.group_size, learning_rate=lr, seed=seed, eval_steps=cfg.eval_every,
                      progress=False, save_total_limit=1, reuse_coef=cfg.reuse_coef if reuse else 0.0,
                      sample_alert_window=0, **spec_arm["rl"])
        result = train(rc, task=task, scorer=scorer, model=model, tokenizer=tok, fmt=FMT, problems=spec["rl"](task, 4000),
                       eval_problems=spec["val"](task, cfg.val_size), extra_eval=extra, reuse=reuse)
        evals = [{"update": e["update"], "samples": e["samples"] + e["internalize_samples"], "rl_samples": e["samples"],
                  "val_accuracy": e["accuracy"], "val_trace_validity": e["trace_validity"],
                  **{k: e.get(k) for k in ("test_accuracy", "test_trace_validity", "longer_accuracy",
                                           "longer_trace_validity")}}
                 for e in result.evals]
        extra_samples = getattr(scorer, "samples", 0)
        return {"evals": evals, "internalize": getattr(scorer, "history", None), "samples": result.samples + extra_samples,
                "rl_samples": result.samples, "internalize_samples": extra_samples, "final_train": result.final_metrics}

    return cached_run(Path(cfg.output_dir) / task_name / arm / f"lr{lr:g}-seed{seed}",
                      _run_key(cfg, task_name, arm, lr, seed), go)


def at_samples(evals: list[dict], samples: float, field: str = "test_accuracy") -> float | None:
    """The curve's value at ``samples`` policy samples (linear between evaluations; None past its end)."""
    for a, b in zip(evals, evals[1:]):
        if a["samples"] <= samples <= b["samples"]:
            w = (samples - a["samples"]) / max(b["samples"] - a["samples"], 1)
            return a[field] + w * (b[field] - a[field])
    return None


def _parallel(cfg: InternalizeBenchConfig, jobs: list[tuple]) -> list[dict]:
    return run_parallel(run_arm, jobs, cfg.workers)


def measurement(runs: list[dict], updates: int) -> dict:
    """The internalization stages against exact labels: means per update over seeds (the curve over
    training), and over the first and second half of training."""
    lines = [h for r in runs for h in r["internalize"]]

    def means(part: list[dict]) -> dict:
        return {k: statistics.fmean(h[k] for h in part if h.get(k) is not None)
                if any(h.get(k) is not None for h in part) else None for k in MEASURED}

    half = updates // 2
    return {"first half": means([h for h in lines if h["call"] <= half]),
            "second half": means([h for h in lines if h["call"] > half]),
            "per_update": [{"update": u, **means([h for h in lines if h["call"] == u])} for u in range(1, updates + 1)]}


def main(cfg: InternalizeBenchConfig) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    tuning = [(cfg, t, a, lr, 0) for t in cfg.tasks for a in cfg.arms for lr in cfg.learning_rates]
    tuned = dict(zip([(t, a, lr) for _, t, a, lr, _ in tuning], _parallel(cfg, tuning)))
    chosen = {(t, a): max(cfg.learning_rates, key=lambda lr: (tuned[(t, a, lr)]["evals"][-1]["val_accuracy"], -lr))
              for t in cfg.tasks for a in cfg.arms}
    rest = [(cfg, t, a, chosen[(t, a)], s) for t in cfg.tasks for a in cfg.arms for s in cfg.seeds if s != 0]
    done = dict(zip([(t, a, s) for _, t, a, _, s in rest], _parallel(cfg, rest)))
    results: dict = {"config": asdict(cfg), "tasks": {}}
    for t in cfg.tasks:
        runs = {a: [tuned[(t, a, chosen[(t, a)])] if s == 0 else done[(t, a, s)] for s in cfg.seeds] for a in cfg.arms}
        equal = [min(runs[a][i]["samples"] for a in cfg.arms) for i in range(len(cfg.seeds))]
        rows = {}
        for arm, rs in runs.items():
            rows[arm] = {
                "learning_rate": chosen[(t, arm)],
                "validation": {f"{lr:g}": tuned[(t, arm, lr)]["evals"][-1]["val_accuracy"] for lr in cfg.learning_rates},
                "samples": stat([r["samples"] for r in rs]),
                "internalize_samples": stat([r["internalize_samples"] for r in rs]),
                **{f"final_{k}": stat([r["evals"][-1][k] for r in rs])
                   for k in ("test_accuracy", "test_trace_validity", "longer_accuracy", "longer_trace_validity")},
                **{f"{k}_at_equal_samples": stat([at_samples(r["evals"], e, k) for r, e in zip(rs, equal)])
                   for k in ("test_accuracy", "test_trace_validity")},
                "curve": [[(e["samples"], e["test_accuracy"], e["test_trace_validity"]) for e in r["evals"]] for r in rs],
            }
            if rs[0]["internalize"] is not None:
                rows[arm]["measurement"] = measurement(rs, cfg.updates)
        acc = {a: rows[a]["test_accuracy_at_equal_samples"]["mean"] for a in rows}
        gap = acc["exact-step"] - acc["outcome-grpo"]
        for a in rows:
            rows[a]["gap_closed_at_equal_samples"] = (acc[a] - acc["outcome-grpo"]) / gap if gap > 0 else None
        trivial = json.loads((Path(cfg.rl_dir) / t / "models" / "eval.json").read_text())["trivial"]
        results["tasks"][t] = {"trivial": trivial, "arms": rows, "equal_samples": equal, "gap": gap}
    results["seconds"] = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = cfg.results_name.removeprefix("results")
    write_json(out / f"{cfg.results_name}.json", results)
    (out / f"table{suffix}.md").write_text(table(results))
    plot(results, out / f"internalize{suffix}.png")
    return results


def _fmt(s: dict | None, scale: float = 100.0) -> str:
    if s is None:
        return "-"
    return f"{s['mean'] * scale:.1f} ± {s['sample_std'] * scale:.1f}"


def table(results: dict) -> str:
    out = []
    for t, r in results["tasks"].items():
        triv = r["trivial"]
        maj = [k for k in triv["test"] if k.startswith("majority")][0]
        out += [f"### {t}", "",
                "| arm | lr (val) | samples | test acc at equal samples | test trace validity at equal samples | "
                "share of the outcome -> exact gap closed | final test acc | final test trace validity | "
                "final longer acc |", "|---|---|---|---|---|---|---|---|---|"]
        for name, key in (("start: greedy", "greedy"), ("start: one sample (T=1)", "one_sample"),
                          (f"start: {maj.replace('_', ' ')}", maj), ("constant answer", "constant_answer")):
            if key in triv["test"]:
                validity = f"{100 * triv['test']['greedy_trace_validity']:.1f}" if key == "greedy" else "-"
                out.append(f"| {name} | - | 0 | {100 * triv['test'][key]:.1f} | {validity} | - | - | - | "
                           f"{100 * triv['longer'].get(key, float('nan')):.1f} |")
        for arm, row in r["arms"].items():
            gap = row["gap_closed_at_equal_samples"]
            out.append(f"| {arm} | {row['learning_rate']:g} | {row['samples']['mean']:.0f} | "
                       f"{_fmt(row['test_accuracy_at_equal_samples'])} | {_fmt(row['test_trace_validity_at_equal_samples'])} | "
                       f"{'-' if gap is None else f'{gap:.2f}'} | {_fmt(row['final_test_accuracy'])} | "
                       f"{_fmt(row['final_test_trace_validity'])} | {_fmt(row['final_longer_accuracy'])} |")
        out += ["", f"equal samples per seed (the smallest final count of the arms): {[round(e) for e in r['equal_samples']]}; "
                "mean ± sample std over seeds", ""]
        for arm, row in r["arms"].items():
            if "measurement" not in row:
                continue
            m = row["measurement"]
            out += [f"{arm}, against exact labels (means per update):", "",
                    "| part | " + " | ".join(MEASURED) + " |", "|---|" + "---|" * len(MEASURED)]
            for name in ("first half", "second half"):
                cells = ["-" if m[name][k] is None else f"{m[name][k]:.3f}" for k in MEASURED]
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    """Per task: test accuracy and test trace validity against policy samples (mean over seeds, error bars the
    sample std), and the located-first-error accuracy and correction validity per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 4 * len(tasks)), squeeze=False)
    for row, t in zip(axes, tasks):
        for arm, r in results["tasks"][t]["arms"].items():
            curves = r["curve"]
            n = min(len(c) for c in curves)
            for ax, col in zip(row[:2], (1, 2)):
                xs = [statistics.fmean(c[i][0] for c in curves) for i in range(n)]
                vals = [[c[i][col] for c in curves] for i in range(n)]
                ax.errorbar(xs, [statistics.fmean(v) for v in vals], yerr=[statistics.stdev(v) if len(v) > 1 else 0
                                                                         for v in vals],
                            marker="o", ms=3, capsize=2, label=arm, ls="--" if arm.startswith("internalize") else "-")
            if "measurement" in r:
                per = r["measurement"]["per_update"]
                for key, ls in (("first_error_accuracy", "-"), ("correction_validity", ":")):
                    row[2].plot([p["update"] for p in per], [p[key] for p in per], ls=ls, label=f"{arm}: {key}")
        for ax, title in zip(row, ("test accuracy (greedy)", "test trace validity",
                                   "against exact labels, per update")):
            ax.set_title(f"{t}: {title}", fontsize=9)
        row[0].set_xlabel("policy samples (every search and correction rollout counted)")
        row[1].set_xlabel("policy samples")
        row[2].set_xlabel("update")
        row[0].legend(fontsize=6)
        row[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # was its own entry point; one command line now (procsup.cli imports the benches)
    raise SystemExit("run it as: procsup bench internalize [--config file.yaml] [key=value ...]")
