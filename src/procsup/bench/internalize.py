"""Internalization vs outcome-only GRPO vs exact step rewards, from the RL bench's weak policies (issue 16).

Reduced benchmark. Per task (addition, logic) and seed:

* **internalize-step** (run here): :func:`procsup.rl.grpo.train` with the RL bench's ``exact-step`` settings
  (``credit=sum, gamma=0, outcome_coef=0``: each step's own reward, the answer step the outcome) but the step
  rewards from :class:`procsup.rl.internalize.InternalizeScorer` (first-error search with outcome-only
  rollouts, correction from the last good prefix), which never reads the exact checker; the exact checker
  only *measures* the located errors and the corrections.
* **outcome-grpo** and **exact-step**: read, unchanged, from the RL bench's cached runs
  (``rl_dir/<task>/<arm>/lr<lr>-seed<k>/eval.json``, never written here), same weak policy, problems, seeds,
  learning rate (3e-5: the RL bench's choice on validation for both arms; not re-tuned for internalization).

Every run: greedy test accuracy and trace validity against cumulative policy samples, the internalization
arm's samples including every rollout spent on searching and correcting. Compared at equal updates and at
equal policy samples (the internalization curve interpolated at the baselines' final sample count).
Results: ``results.json`` and ``table.md`` in ``output_dir``.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from procsup.annotation import first_error_labels
from procsup.bench.cache import cached_run
from procsup.bench.rl import ARMS, FMT, TASKS
from procsup.models.factory import load_model
from procsup.rl.grpo import RLConfig, train
from procsup.rl.internalize import InternalizeConfig, InternalizeScorer
from procsup.rl.monitor import GamingMonitor
from procsup.rollout import LMPolicy
from procsup.scorers import exact_labels

BASELINES = ("outcome-grpo", "exact-step")


@dataclass
class InternalizeBenchConfig:
    """Reduced internalization benchmark (see the module docstring)."""

    output_dir: str = "runs/bench-internalize"
    """Folder of the internalization runs, results.json and table.md."""
    rl_dir: str = "runs/bench-rl"
    """The RL bench's folder: weak policies and baseline runs, read only."""
    tasks: tuple[str, ...] = ("addition", "logic")
    """Tasks of the RL bench."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """RL seeds (as the RL bench's)."""
    learning_rate: float = 3e-5
    """The RL bench's chosen rate (outcome-grpo and exact-step)."""
    updates: int = 24
    batch_size: int = 16
    group_size: int = 8
    eval_every: int = 4
    """Greedy test evaluations every this many updates (finer than the RL bench's 8, for the sample curve)."""
    test_size: int = 150
    k: int = 2
    """First-error search: completions per probed prefix."""
    max_searched: int | None = 16
    """Failed samples searched per update."""
    correct_n: int = 2
    correct_rounds: int = 1
    workers: int = 2

    def __post_init__(self) -> None:
        self.tasks, self.seeds = tuple(self.tasks), tuple(self.seeds)
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"tasks must be among {tuple(TASKS)}, got {t!r}")
        InternalizeConfig(k=self.k, max_searched=self.max_searched, correct_n=self.correct_n,
                          correct_rounds=self.correct_rounds)


def run_internalize(cfg: InternalizeBenchConfig, task_name: str, seed: int) -> dict:
    """One internalization run (cached in ``output_dir/<task>/internalize/seed<k>``)."""
    key = {k: v for k, v in asdict(cfg).items() if k not in ("output_dir", "workers", "tasks", "seeds")}
    key.update(task=task_name, seed=seed)

    def go(out: Path) -> dict:
        torch.set_num_threads(1)
        spec = TASKS[task_name]
        task = spec["task"]()
        model, tok, _ = load_model(Path(cfg.rl_dir) / task_name / "models" / "policy")
        icfg = InternalizeConfig(k=cfg.k, max_searched=cfg.max_searched, correct_n=cfg.correct_n,
                                 correct_rounds=cfg.correct_rounds, seed=seed)
        policy = LMPolicy(model, tok, task, FMT, mode="history", temperature=1.0)
        scorer = InternalizeScorer(policy, icfg, first_error_labels, exact=lambda ts: exact_labels(task, "history", ts),
                                   log_file=str(out / "internalize.jsonl"))
        test = spec["test"](task, cfg.test_size)

        def extra(policy_model, update: int) -> dict:
            r = GamingMonitor(task, FMT, test).evaluate(policy_model, tok, update=update, samples=0)
            return {"test_accuracy": r["accuracy"], "test_trace_validity": r["trace_validity"],
                    "internalize_samples": scorer.samples}

        rc = RLConfig(output_dir=str(out / "run"), max_steps=cfg.updates, batch_size=cfg.batch_size,
                      group_size=cfg.group_size, learning_rate=cfg.learning_rate, seed=seed, eval_steps=cfg.eval_every,
                      progress=False, save_total_limit=1, **ARMS["exact-step"])
        result = train(rc, task=task, scorer=scorer, model=model, tokenizer=tok, fmt=FMT,
                       problems=spec["rl"](task, 4000), eval_problems=spec["val"](task, 100), extra_eval=extra)
        evals = [{"update": e["update"], "samples": e["samples"] + e["internalize_samples"], "rl_samples": e["samples"],
                  "test_accuracy": e["test_accuracy"], "test_trace_validity": e["test_trace_validity"]} for e in result.evals]
        return {"evals": evals, "internalize": scorer.history, "samples": result.samples + scorer.samples,
                "rl_samples": result.samples, "internalize_samples": scorer.samples}

    return cached_run(Path(cfg.output_dir) / task_name / "internalize" / f"seed{seed}", key, go)


def read_baseline(cfg: InternalizeBenchConfig, task_name: str, arm: str, seed: int) -> dict:
    """A cached RL-bench run, checked to have this bench's settings."""
    path = Path(cfg.rl_dir) / task_name / arm / f"lr{cfg.learning_rate:g}-seed{seed}" / "eval.json"
    run = json.loads(path.read_text())
    want = {"updates": cfg.updates, "batch_size": cfg.batch_size, "group_size": cfg.group_size,
            "lr": cfg.learning_rate, "seed": seed, "arm": arm, "test_size": cfg.test_size}
    if any(run["key"].get(k) != v for k, v in want.items()):
        raise ValueError(f"{path} has other settings: {run['key']}")
    evals = [{"update": e["update"], "samples": e["samples"], "test_accuracy": e["test_accuracy"],
              "test_trace_validity": e["test_trace_validity"]} for e in run["evals"]]
    return {"evals": evals, "samples": run["samples"], "code": run.get("code")}


def at_samples(evals: list[dict], samples: float, field: str = "test_accuracy") -> float | None:
    """The curve's value at ``samples`` policy samples (linear between evaluations; None past its end)."""
    for a, b in zip(evals, evals[1:]):
        if a["samples"] <= samples <= b["samples"]:
            w = (samples - a["samples"]) / max(b["samples"] - a["samples"], 1)
            return a[field] + w * (b[field] - a[field])
    return None


def _stat(values: list[float | None]) -> dict:
    xs = [v for v in values if v is not None]
    return {"mean": statistics.fmean(xs) if xs else None, "sample_std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "per_seed": values}


def _star(args) -> dict:
    return run_internalize(*args)


def main(cfg: InternalizeBenchConfig) -> dict:
    t0 = time.perf_counter()
    jobs = [(cfg, t, s) for t in cfg.tasks for s in cfg.seeds]
    if cfg.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
            runs = list(pool.map(_star, jobs))
    else:
        runs = [run_internalize(*j) for j in jobs]
    by = {(t, s): r for (_, t, s), r in zip(jobs, runs)}
    results: dict = {"config": asdict(cfg), "tasks": {}}
    for t in cfg.tasks:
        base = {arm: [read_baseline(cfg, t, arm, s) for s in cfg.seeds] for arm in BASELINES}
        mine = [by[(t, s)] for s in cfg.seeds]
        equal = [min(base[a][i]["samples"] for a in BASELINES) for i in range(len(cfg.seeds))]
        rows = {}
        for arm, runs_ in (*base.items(), ("internalize-step", mine)):
            rows[arm] = {
                "samples": _stat([r["samples"] for r in runs_]),
                "final_test_accuracy": _stat([r["evals"][-1]["test_accuracy"] for r in runs_]),
                "final_test_trace_validity": _stat([r["evals"][-1]["test_trace_validity"] for r in runs_]),
                # at the smallest final sample count of the baselines (same seed)
                "test_accuracy_at_equal_samples": _stat([at_samples(r["evals"], e) for r, e in zip(runs_, equal)]),
                "curve": [[(e["samples"], e["test_accuracy"]) for e in r["evals"]] for r in runs_],
            }
        acc = {a: rows[a]["test_accuracy_at_equal_samples"]["mean"] for a in rows}
        gap = acc["exact-step"] - acc["outcome-grpo"]
        results_gap = (acc["internalize-step"] - acc["outcome-grpo"]) / gap if gap > 0 else None
        rows["internalize-step"]["gap_closed_at_equal_samples"] = results_gap
        rows["internalize-step"]["internalize_samples"] = _stat([r["internalize_samples"] for r in mine])
        lines = [h for r in mine for h in r["internalize"]]
        half = cfg.updates // 2
        measured = {}
        for name, part in (("first half", [h for h in lines if h["call"] <= half]),
                           ("second half", [h for h in lines if h["call"] > half])):
            measured[name] = {k: statistics.fmean(h[k] for h in part if h.get(k) is not None)
                              if any(h.get(k) is not None for h in part) else None
                              for k in ("failed", "searched", "first_error_accuracy", "first_error_early",
                                        "first_error_late", "step_label_accuracy", "corrected", "correction_validity")}
        results["tasks"][t] = {"arms": rows, "measurement": measured, "equal_samples": equal}
    results["seconds"] = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results))
    return results


def _fmt(s: dict, scale: float = 100.0) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean'] * scale:.1f} ± {s['sample_std'] * scale:.1f}"


def table(results: dict) -> str:
    out = []
    for t, r in results["tasks"].items():
        out += [f"### {t}", "",
                "| arm | samples (mean) | final test acc | final test trace validity | test acc at equal samples |",
                "|---|---|---|---|---|"]
        for arm, row in r["arms"].items():
            out.append(f"| {arm} | {row['samples']['mean']:.0f} | {_fmt(row['final_test_accuracy'])} | "
                       f"{_fmt(row['final_test_trace_validity'])} | {_fmt(row['test_accuracy_at_equal_samples'])} |")
        gap = r["arms"]["internalize-step"]["gap_closed_at_equal_samples"]
        out += ["", f"equal samples per seed (the baselines' smaller final count): {r['equal_samples']}; share of the "
                f"outcome -> exact-step gap closed there: {'-' if gap is None else f'{gap:.2f}'}"]
        out += ["", "| internalization, per update (mean) | " + " | ".join(r["measurement"]["first half"]) + " |",
                "|---|" + "---|" * len(r["measurement"]["first half"])]
        for name, m in r["measurement"].items():
            out.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in m.values()) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    overrides = dict(a.split("=", 1) for a in sys.argv[1:])
    fields = InternalizeBenchConfig.__dataclass_fields__
    kw = {k: (tuple(type(fields[k].default[0])(x) for x in v.split(",")) if isinstance(fields[k].default, tuple)
              else None if v == "None" else type(fields[k].default)(v)) for k, v in overrides.items()}
    print(table(main(InternalizeBenchConfig(**kw))))
