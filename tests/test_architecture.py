"""The import graph: free of cycles, layered as docs/architecture.md says, no sampler outside rollout/."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "procsup").rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path) -> set[str]:
    """procsup modules imported anywhere in the file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("procsup"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from procsup.x import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("procsup"))
    return found


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _graph(level) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for dep in _imports(path):
            if dep in modules and level(dep) != level(name):
                graph[level(name)].add(level(dep))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


@pytest.mark.parametrize("level", [lambda m: m, _package], ids=["modules", "packages"])
def test_import_graph_has_no_cycle(level):
    assert _cycle(_graph(level)) is None


# Each package and the procsup packages it may import (docs/architecture.md): lower floors never import
# upper ones.
ALLOWED = {
    "data": set(),
    "tasks": {"data"},
    "models": {"data"},
    "objectives": {"data"},
    "rollout": {"data", "models"},
    "scorers": {"data", "models"},
    "evaluation": {"data", "rollout", "scorers"},
    "annotation": {"data", "rollout", "scorers"},
    "search": {"data", "evaluation", "rollout", "scorers"},
    "trainers": {"data", "models", "objectives"},
    "rl": {"data", "models", "objectives", "rollout", "trainers"},
}


def test_packages_import_only_lower_floors():
    graph = _graph(_package)
    wrong = {pkg: sorted(graph.get(pkg, set()) - allowed) for pkg, allowed in ALLOWED.items()}
    assert not any(wrong.values()), wrong


def test_no_sampler_outside_rollout_and_no_dispatch_on_task_classes():
    """Only rollout/ calls a Hugging Face model's ``generate``; no module picks behaviour by
    ``isinstance(task, SomeTask)``."""
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if not name.startswith("procsup.rollout"):
            assert not re.search(r"(model|lm|backbone)\.generate\(", text), name
        assert not re.search(r"isinstance\([^)]*, *\w*Task\)", text), name
