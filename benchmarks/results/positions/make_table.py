"""Print the issue-18 table (markdown) from the recorded bench JSONs of this folder.

Usage: python benchmarks/results/positions/make_table.py
(reads coupled_results.json, uncoupled_results.json, and the 1-5-digit runs coupled_train5*_results.json)
Cells: exact match in %, mean ± sample std over seeds (n = 3); trace validity of the history arms below.
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent


def cell(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    return f"{100 * statistics.fmean(vals):.1f} ± {100 * sd:.1f}"


def rows(path: Path, label: str, split: str) -> list[str]:
    res = json.loads(path.read_text())
    digits = res["config"]["test_digits"] if split == "eval" else res["config"]["val_digits"]
    out = []
    for method in ("history", "outcome"):
        runs = [r for r in res["runs"] if r["method"] == method]
        if not runs:
            continue
        em = [cell([r[split][str(d)]["exact_match"] for r in runs]) for d in digits]
        valid = [cell([r[split][str(d)]["trace_valid"] for r in runs]) if method == "history" else "-" for d in digits]
        out.append(f"| {method} {label} | " + " | ".join(em) + " | " + " | ".join(valid) + " |")
    trivial = res.get("trivial", []) if split == "eval" else []
    for method in ("history", "outcome") if trivial else ():
        em = [cell([t["untrained"][method][str(d)]["exact_match"] for t in trivial]) for d in digits]
        out.append(f"| untrained {method} {label} (100 problems per seed) | " + " | ".join(em) + " |" + " - |" * len(digits))
    if trivial:
        em = [cell([t["majority"][str(d)] for t in trivial]) for d in digits]
        out.append("| majority training answer (100 problems per seed) | " + " | ".join(em) + " |" + " - |" * len(digits))
    return out


def main() -> None:
    for split in ("eval", "val"):
        res = json.loads((HERE / "coupled_results.json").read_text())
        digits = res["config"]["test_digits"] if split == "eval" else res["config"]["val_digits"]
        print(f"\n{'test' if split == 'eval' else 'validation'} split")
        print("| arm | " + " | ".join(f"EM@{d}" for d in digits) + " | " + " | ".join(f"valid@{d}" for d in digits) + " |")
        print("|---" * (1 + 2 * len(digits)) + "|")
        for name, label in (("coupled_results.json", "+ coupling"), ("uncoupled_results.json", "(default positions)"),
                            ("coupled_train5_results.json", "+ coupling, trained on 1-5 digits"),
                            ("coupled_train5_outcome_results.json", "+ coupling, trained on 1-5 digits")):
            if (HERE / name).is_file():
                print("\n".join(rows(HERE / name, label, split)))


if __name__ == "__main__":
    main()
