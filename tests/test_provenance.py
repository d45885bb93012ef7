"""Every figure in the documents' result tables has a matching value in the JSON its table names
(benchmarks/check_provenance.py), and the checker itself fails on what it must catch."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_provenance", ROOT / "benchmarks" / "check_provenance.py")
cp = importlib.util.module_from_spec(_spec)
sys.modules["check_provenance"] = cp  # dataclasses look their module up there
_spec.loader.exec_module(cp)

# README's tables must all name a source; the other documents are checked where a table names one
DOCS = ["README.md", "docs/RESULTS.md", "benchmarks/results/paper/paper.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_document_tables_match_their_json(doc):
    problems, checked, _ = cp.check(ROOT / doc, require_all=doc == "README.md")
    assert not problems, "\n".join(problems)
    assert checked >= 1


def _write(tmp_path: Path, table: str, data: dict) -> Path:
    (tmp_path / "r.json").write_text(json.dumps(data))
    doc = tmp_path / "doc.md"
    doc.write_text(table)
    return doc


def test_a_figure_absent_from_the_json_fails(tmp_path):
    data = {"acc": 0.935, "per_seed": [0.91, 0.93, 0.965]}
    good = "<!-- source: r.json -->\n| m | acc |\n|---|---|\n| prm | 93.5% |\n"
    assert cp.check(_write(tmp_path, good, data), root=tmp_path)[0] == []
    bad = good.replace("93.5%", "94.5%")
    problems = cp.check(_write(tmp_path, bad, data), root=tmp_path)[0]
    assert len(problems) == 1 and "94.5" in problems[0] and "doc.md:4" in problems[0]


def test_mean_and_std_must_come_from_one_list_and_default_to_sample_std(tmp_path):
    xs = [0.91, 0.93, 0.965]
    data = {"per_seed": xs, "other": [0.5, 0.6]}
    mean, sample, pop = 100 * statistics.fmean(xs), 100 * statistics.stdev(xs), 100 * statistics.pstdev(xs)
    row = "<!-- source: r.json {opt}-->\n| m | acc |\n|---|---|\n| prm | {m:.1f} ± {s:.1f} |\n"
    assert cp.check(_write(tmp_path, row.format(opt="", m=mean, s=sample), data), root=tmp_path)[0] == []
    # the population std is refused unless the table says std=population
    assert cp.check(_write(tmp_path, row.format(opt="", m=mean, s=pop), data), root=tmp_path)[0]
    assert cp.check(_write(tmp_path, row.format(opt="std=population ", m=mean, s=pop), data), root=tmp_path)[0] == []
    # a std that exists in the JSON, but of another list, does not vouch for this mean
    other = 100 * statistics.stdev([0.5, 0.6])
    assert cp.check(_write(tmp_path, row.format(opt="", m=mean, s=other), data), root=tmp_path)[0]


def test_columns_within_and_missing_sources(tmp_path):
    data = {"table": {"a": 0.25}, "config": {"steps": 300}}
    table = "<!-- source: r.json within=table -->\n| m | x | y |\n|---|---|---|\n| a | 25.0 | 300 |\n"
    assert cp.check(_write(tmp_path, table, data), root=tmp_path)[0]  # 300 is outside `table`
    only_x = table.replace("within=table", "within=table columns=2")
    assert cp.check(_write(tmp_path, only_x, data), root=tmp_path)[0] == []
    gone = table.replace("r.json", "gone.json")
    assert "not found" in cp.check(_write(tmp_path, gone, data), root=tmp_path)[0][0]


def test_unsourced_tables_fail_only_where_required_and_comments_need_a_table(tmp_path):
    doc = _write(tmp_path, "| m | x |\n|---|---|\n| a | 1.5 |\n", {})
    assert cp.check(doc, root=tmp_path)[0] == []
    assert "without a <!-- source" in cp.check(doc, require_all=True, root=tmp_path)[0][0]
    stray = _write(tmp_path, "<!-- source: r.json -->\nsome prose\n", {})
    assert "must be followed by a table" in cp.check(stray, root=tmp_path)[0][0]
    assert cp.main([str(doc), "--require-all", str(doc)]) == 1
