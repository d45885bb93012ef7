"""Print the second round of issue-18 tables (markdown) from the recorded JSONs of this folder.

Usage: python benchmarks/results/positions/make_tasks_table.py
* logic and word problems, four arms + trivial rows: tasks_results.json (``python -m procsup.bench.positions``);
* addition, learning rate per arm on the validation split (seed 0, 8 and 12 digits): the lr_*_results.json of
  ``procsup bench addition`` at 1e-3 and 4e-3 and coupled_results.json (2e-3), then the chosen settings' test
  rows (3 seeds).
Cells: %, mean ± sample std over seeds (per-seed values in the JSONs).
"""

import json
import statistics
import sys
from pathlib import Path

from procsup.bench.positions import format_rows
from procsup.bench.report import render

HERE = Path(__file__).parent
LRS = {1e-3: "1e-3", 2e-3: "2e-3", 4e-3: "4e-3"}


def cell(vals: list[float]) -> str:
    return f"{100 * statistics.fmean(vals):.1f} ± {100 * (statistics.stdev(vals) if len(vals) > 1 else 0.0):.1f}"


def addition_runs(method: str, lr: float) -> list[dict]:
    """The recorded coupled addition runs of ``method`` at ``lr`` (2e-3: coupled_results.json)."""
    path = HERE / ("coupled_results.json" if lr == 2e-3 else f"lr_{method}_{LRS[lr]}_results.json")
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text())["runs"] if r["method"] == method]


def _runs_at(method: str, lr: float) -> list[dict]:
    """Every recorded seed of ``method`` at ``lr`` (seeds 1 and 2 of a non-default lr ran on their own)."""
    runs = addition_runs(method, lr)
    extra = HERE / f"lr_{method}_{LRS[lr]}_seeds12_results.json"
    if lr != 2e-3 and extra.is_file():
        runs += [r for r in json.loads(extra.read_text())["runs"] if r["method"] == method]
    return runs


def _val(run: dict) -> float:
    return statistics.fmean(run["val"][d]["exact_match"] for d in ("8", "12"))


def lr_selection() -> dict:
    """``{method: chosen lr}``: the highest mean validation exact match at 8 and 12 digits on seed 0; a tie
    is broken by the validation mean over every recorded seed (then the smaller lr)."""
    print("\naddition + coupling, validation split (100 problems per length): learning rate per arm")
    print("| arm | lr | seed 0: EM@8 | EM@12 | mean | mean over recorded seeds (seeds) |")
    print("|---|---|---|---|---|---|")
    chosen = {}
    for method in ("history", "outcome"):
        scores = {}
        for lr in LRS:
            runs = _runs_at(method, lr)
            run = next((r for r in runs if r["seed"] == 0), None)
            if run is None:
                continue
            em = [run["val"][d]["exact_match"] for d in ("8", "12")]
            every = statistics.fmean(_val(r) for r in runs)
            scores[lr] = (round(_val(run), 6), round(every, 6), -lr)
            seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            print(f"| {method} | {LRS[lr]} | {100 * em[0]:.1f} | {100 * em[1]:.1f} | {100 * _val(run):.1f} | "
                  f"{100 * every:.1f} ({seeds}) |")
        chosen[method] = max(scores, key=scores.get)
    print("chosen: " + ", ".join(f"{m} {LRS[lr]}" for m, lr in chosen.items()))
    return chosen


def addition_test(chosen: dict) -> None:
    print("\naddition + coupling, test split (500 problems per length), every learning rate with 3 seeds")
    print("| arm | lr | chosen on validation | seeds | EM@3 | EM@5 | EM@10 | EM@20 | valid@10 | valid@20 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in ("history", "outcome"):
        for lr in LRS:
            runs = _runs_at(method, lr)
            if len(runs) < 3 and lr != chosen[method]:
                continue
            seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            em = [cell([r["eval"][d]["exact_match"] for r in runs]) for d in ("3", "5", "10", "20")]
            valid = [cell([r["eval"][d]["trace_valid"] for r in runs]) if method == "history" else "-"
                     for d in ("10", "20")]
            mark = "yes" if lr == chosen[method] else "no"
            print(f"| {method} + coupling | {LRS[lr]} | {mark} | {seeds} | " + " | ".join(em + valid) + " |")


def logic_lr() -> None:
    """Logic: validation exact match (8 letters) per arm and learning rate, seed 0 (2e-3: tasks_results.json);
    the outcome-coupled tie broken over seeds 0-2 (logic_lr_<lr>_outcome-coupled_results.json)."""
    grid = {2e-3: json.loads((HERE / "tasks_results.json").read_text())["runs"]}
    for lr, name in LRS.items():
        for part in ("seed0", "outcome-coupled"):
            path = HERE / f"logic_lr_{name}_{part}_results.json"
            if lr != 2e-3 and path.is_file():
                grid.setdefault(lr, []).extend(json.loads(path.read_text())["runs"])
    print("\nlogic, validation split (100 chains of 8 letters): exact match per arm and learning rate")
    print("| arm | " + " | ".join(f"lr {LRS[lr]}: seed 0 | seeds 0-2" for lr in sorted(grid)) + " | chosen |")
    print("|---|" + "---|---|" * len(grid) + "---|")
    for arm in ("history-coupled", "outcome-coupled", "history", "outcome"):
        cells, scores = [], {}
        for lr in sorted(grid):
            runs = {r["seed"]: r for r in grid[lr] if r.get("task", "logic") == "logic" and r["arm"] == arm}
            s0 = runs[0]["val"]["8"]["exact_match"] if 0 in runs else None
            every = statistics.fmean(r["val"]["8"]["exact_match"] for r in runs.values()) if len(runs) == 3 else None
            cells += ["-" if s0 is None else f"{100 * s0:.1f}", "-" if every is None else f"{100 * every:.1f}"]
            if s0 is not None:
                scores[lr] = (round(s0, 6), -1.0 if every is None else round(every, 6), -lr)
        best = max(scores, key=scores.get)
        tied = sum(v[0] == scores[best][0] for v in scores.values()) > 1
        print(f"| {arm} | " + " | ".join(cells) + f" | {LRS[best]}{' (tie on seed 0)' if tied else ''} |")


def main() -> None:
    tasks = HERE / "tasks_results.json"
    if tasks.is_file():
        result = json.loads(tasks.read_text())
        for name in result["tables"]:
            print(f"\n{name}: exact match and trace validity (%), mean ± sample std over seeds {result['config']['seeds']}")
            print(render(format_rows(name, result), markdown=True))
    addition_test(lr_selection())
    logic_lr()


if __name__ == "__main__":
    sys.exit(main())
