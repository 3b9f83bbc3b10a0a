"""The package's shape holds: packages by concept in one dependency direction, no import cycles, short files.

What a newcomer relies on when looking for the room of a change (kdnas/__init__.py lists the packages)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests._util import REPO

PACKAGE = REPO / "kdnas"
# Lowest first: a package may import only those before it (kdnas/__init__.py says what each holds).
LAYERS = ["core", "models", "data", "costs", "train", "distill", "config", "candidates", "study", "bundle", "results", "cli"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's kdnas imports, those inside functions too (a lazy import is a dependency all the same)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdnas":
                for alias in node.names:  # `from kdnas.study import _resume` imports the module kdnas.study._resume
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.split(".")[0] == "kdnas")
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kdnas"


def test_no_import_cycle_between_modules() -> None:
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()) or [])


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = sorted({(_package(a), _package(b), a, b) for a, bs in _imports().items() for b in bs
                    if _package(a) in LAYERS and _package(b) != _package(a)
                    and (_package(b) not in LAYERS or LAYERS.index(_package(b)) > LAYERS.index(_package(a)))})
    assert not wrong, "\n".join(f"{pa} may not import {pb}: {a} imports {b}" for pa, pb, a, b in wrong)


def test_the_top_level_reads_as_a_table_of_contents() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__"))
    assert entries == sorted(LAYERS), entries
    doc = (PACKAGE / "__init__.py").read_text()
    assert all(f"    {name} " in doc for name in LAYERS), "kdnas/__init__.py lists every package"


@pytest.mark.parametrize("root", ["kdnas", "tests", "benchmarks"])
def test_no_source_file_is_over_400_lines(root: str) -> None:
    long = {str(p.relative_to(REPO)): n for p in (REPO / root).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_cycle_check_finds_a_cycle() -> None:
    # The checks above pass on a clean tree whatever they do; this one shows the detector detects.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "d": {"a"}}) is None
