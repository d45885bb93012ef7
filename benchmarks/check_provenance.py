"""Check that every figure in the documents' result tables has a matching value in its source JSON.

A table is checked when an HTML comment naming its source comes before it (blank lines between are fine)::

    <!-- source: benchmarks/results/addition/addition_results.json -->
    | method | 3 digits | 5 |
    |---|---|---|
    | outcome-only | 96.3% | 0% |

Every number in the table's body (not the header row; by default not the first column, which names the
row) must equal, after the table's rounding, some value found in the named JSON file(s): any number
stored there, or one derived from the stored numbers by a rule written here (so a reader can redo it):

* ``x * scale`` for each scale given (default ``scale=1,100``: fractions are printed as percent);
* for every list of two or more numbers (per-seed values): its mean, its **sample** std (n - 1) and its
  population std, each times the scales.

"After the table's rounding": a figure written with d decimals matches a value v when
``|v - figure| <= 0.5 * 10**-d`` (``93.5`` matches 0.93496 at scale 100; ``0%`` matches 0.0004).
Options in the comment, after the file names, as ``key=value``:

* ``scale=1,100,1000`` the multipliers to try;
* ``columns=2,3,5`` which columns to check (1-based; default: all but the first);
* ``std=sample`` (the default), ``population`` or ``any``: which std a ``mean ± std`` figure is; the pair
  must come from one list (its mean and its std), not from two unrelated values;
* ``within=table,config`` read only these parts of the JSON (dotted paths, ``*`` for any key): fewer
  values, so a wrong figure is less likely to match one by chance;
* ``ignore=REGEX`` (quoted if it has spaces) text removed from the cells before numbers are read (row labels inside a cell such as
  ``(3 seeds)``). Always removed: grid and model shapes like ``4×4`` or ``128×2``, and ``n seeds``.

``--require-all FILE`` makes a table *without* a source comment an error in FILE (README's tables
must all name a source). Exit status 1 and one line per problem (file, line, figure) when a check fails.

    .venv/bin/python benchmarks/check_provenance.py README.md docs/RESULTS.md --require-all README.md
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = re.compile(r"<!--\s*source:\s*(.*?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
PAIR = re.compile(r"([-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*%?\s*±\s*(\d+(?:\.\d+)?)")
OPTIONS = ("scale", "columns", "ignore", "std", "within")
ALWAYS_IGNORED = re.compile(r"\d+\s*[×x]\s*\d+(?:\s*[×x]\s*\d+)?|\b\d+ seeds?\b|\bseeds? [\d, ]+\d")


@dataclass
class Table:
    """A Markdown table: the 1-based line of its header, its body rows as cells, its source comment."""

    line: int
    rows: list[tuple[int, list[str]]]
    sources: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    comment_line: int | None = None


def parse_source(text: str, line: int) -> tuple[list[str], dict[str, str]]:
    """The file names and ``key=value`` options of a ``<!-- source: ... -->`` comment's text."""
    files, options = [], {}
    for token in shlex.split(text):
        key, eq, value = token.partition("=")
        if eq and key.isidentifier():
            if key not in OPTIONS:
                raise ValueError(f"line {line}: unknown option {key!r} in the source comment")
            options[key] = value
        else:
            files.append(token.rstrip(","))
    if not files:
        raise ValueError(f"line {line}: the source comment names no JSON file")
    return files, options


def tables(markdown: str) -> list[Table]:
    """Every table of a Markdown text, each with the source comment that precedes it (if any)."""
    lines = markdown.splitlines()
    out: list[Table] = []
    pending: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if m := SOURCE.search(stripped):
            pending = (i + 1, m.group(1))
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1].strip()):
            table = Table(line=i + 1, rows=[])
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                table.rows.append((j + 1, [c.strip() for c in lines[j].strip().strip("|").split("|")]))
                j += 1
            if pending is not None:
                table.comment_line = pending[0]
                table.sources, table.options = parse_source(pending[1], pending[0])
                pending = None
            out.append(table)
            i = j
            continue
        elif stripped and pending is not None and not stripped.startswith("<!--"):
            raise ValueError(f"line {pending[0]}: a source comment must be followed by a table "
                             f"(found text on line {i + 1})")
        i += 1
    if pending is not None:
        raise ValueError(f"line {pending[0]}: a source comment with no table after it")
    return out


def numbers_in(value, out: list[float], lists: list[list[float]]) -> None:
    """Every number in a JSON value (bools are not numbers), and every list of numbers."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out.append(float(value))
    elif isinstance(value, dict):
        for v in value.values():
            numbers_in(v, out, lists)
    elif isinstance(value, list):
        nums = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) >= 2 and len(nums) == len(value):
            lists.append(nums)
        for v in value:
            numbers_in(v, out, lists)


def subtrees(value, path: str) -> list:
    """The parts of a JSON value at a dotted path (``table.best_of_n.*``; ``*`` is any key or index)."""
    found = [value]
    for key in path.split("."):
        nxt = []
        for v in found:
            items = (v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ())
            nxt += [child for k, child in items if key == "*" or str(k) == key]
        found = nxt
    return found


@dataclass
class Candidates:
    """What a table's figures may match: single values, and (mean, std) pairs for ``mean ± std``."""

    values: list[float]
    pairs: list[tuple[float, float]]


def candidates(paths: list[Path], scales: list[float], std: str = "sample", within: str | None = None) -> Candidates:
    """The values a figure may match: the JSON's numbers and the derived ones (module docstring)."""
    base: list[float] = []
    lists: list[list[float]] = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        parts = [part for w in within.split(",") for part in subtrees(data, w)] if within else [data]
        if within and not parts:
            raise ValueError(f"{path}: nothing at within={within}")
        for part in parts:
            numbers_in(part, base, lists)
    pairs = []
    for xs in lists:
        sample, population = statistics.stdev(xs), statistics.pstdev(xs)
        base += [statistics.fmean(xs), sample, population]
        spreads = {"sample": [sample], "population": [population], "any": [sample, population]}[std]
        pairs += [(statistics.fmean(xs) * s, d * s) for d in spreads for s in scales]
    return Candidates(sorted({v * s for v in base for s in scales}), pairs)


def figure(token: str) -> tuple[float, int]:
    """A figure as written (``1,243``, ``−0.5``, ``93.5``) as a float and its number of decimals."""
    clean = token.replace(",", "").replace("−", "-").lstrip("+")
    return float(clean), len(clean.split(".")[1]) if "." in clean else 0


def matches(value: float, decimals: int, values: list[float]) -> bool:
    tol = 0.5 * 10 ** -decimals + 1e-9
    i = bisect.bisect_left(values, value - tol)
    return i < len(values) and values[i] <= value + tol


def check_table(table: Table, doc: Path, root: Path = ROOT) -> list[str]:
    """Problems with one annotated table: missing source files and figures with no matching value."""
    paths = [root / s for s in table.sources]
    missing = [str(p.relative_to(root)) for p in paths if not p.is_file()]
    if missing:
        return [f"{doc}:{table.comment_line}: source file(s) not found: {', '.join(missing)}"]
    scales = [float(s) for s in table.options.get("scale", "1,100").split(",")]
    columns = ({int(c) - 1 for c in table.options["columns"].split(",")} if "columns" in table.options else None)
    ignore = re.compile(table.options["ignore"]) if "ignore" in table.options else None
    std = table.options.get("std", "sample")
    if std not in ("sample", "population", "any"):
        return [f"{doc}:{table.comment_line}: std must be sample, population or any, got {std!r}"]
    try:
        found = candidates(paths, scales, std, table.options.get("within"))
    except ValueError as e:
        return [f"{doc}:{table.comment_line}: {e}"]
    where = ", ".join(table.sources)
    problems = []
    for line, cells in table.rows:
        for k, cell in enumerate(cells):
            if (k == 0 and columns is None) or (columns is not None and k not in columns):
                continue
            text = ALWAYS_IGNORED.sub(" ", cell)
            if ignore is not None:
                text = ignore.sub(" ", text)
            for mean_token, std_token in PAIR.findall(text):
                (mean, dm), (spread, ds) = figure(mean_token), figure(std_token)
                tm, ts = 0.5 * 10 ** -dm + 1e-9, 0.5 * 10 ** -ds + 1e-9
                if not any(abs(m - mean) <= tm and abs(d - spread) <= ts for m, d in found.pairs):
                    problems.append(f"{doc}:{line}: {mean_token} ± {std_token} (column {k + 1}) matches no list's "
                                    f"mean and {std} std in {where}")
            for token in NUMBER.findall(PAIR.sub(" ", text)):
                value, decimals = figure(token)
                if not matches(value, decimals, found.values):
                    problems.append(f"{doc}:{line}: {token} (column {k + 1}) has no matching value in {where}")
    return problems


def check(doc: Path, require_all: bool = False, root: Path = ROOT) -> tuple[list[str], int, int]:
    """Problems in one document, the number of tables checked and of tables without a source."""
    try:
        found = tables(doc.read_text(encoding="utf-8"))
    except ValueError as e:
        return [f"{doc}: {e}"], 0, 0
    problems, checked, unsourced = [], 0, 0
    for table in found:
        if not table.sources:
            unsourced += 1
            if require_all:
                problems.append(f"{doc}:{table.line}: table without a <!-- source: ... --> comment")
            continue
        checked += 1
        problems += check_table(table, doc, root)
    return problems, checked, unsourced


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("docs", nargs="+", type=Path, help="Markdown files to check")
    p.add_argument("--require-all", action="append", default=[], type=Path,
                   help="a file in which every table must name its source (repeatable)")
    args = p.parse_args(argv)
    required = {d.resolve() for d in args.require_all}
    failed = False
    for doc in args.docs:
        problems, checked, unsourced = check(doc, doc.resolve() in required)
        print(f"{doc}: {checked} tables checked, {unsourced} without a source comment, {len(problems)} problems")
        for line in problems:
            print("  " + line)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
