"""Compare two benchmark results.json files, ignoring what may differ between equal runs (timings, dates,
paths, configs); print the number of differences and the first 20.

Usage: python benchmarks/compare_results.py BEFORE.json AFTER.json [KEY ...]   (default keys: table runs)
"""

from __future__ import annotations

import json
import sys
from typing import Any

IGNORED = {"timings", "seconds", "wall_seconds", "date", "config", "train_seconds", "eval_seconds",
           "train_tokens_per_s", "output_dir"}


def strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in IGNORED and "per_s" not in k}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def differences(x: Any, y: Any, path: str = "") -> list[tuple]:
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for k in sorted(set(x) | set(y), key=str):
            out += differences(x[k], y[k], f"{path}/{k}") if k in x and k in y else [(f"{path}/{k}", "missing")]
        return out
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in differences(u, v, f"{path}[{i}]")]
    return [] if x == y else [(path, x, y)]


def main(argv: list[str]) -> int:
    before, after = (json.loads(open(p, encoding="utf-8").read()) for p in argv[:2])
    found = [d for key in argv[2:] or ["table", "runs"]
             for d in differences(strip(before.get(key)), strip(after.get(key)), key)]
    print(f"{len(found)} differences")
    for d in found[:20]:
        print(d)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
