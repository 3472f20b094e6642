"""The package's layering: no two subpackages (or top-level modules) import each other, directly
or through others. Shared pieces live below what uses them (docs/design-notes.md, "Layout")."""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict

from helpers.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "em_organisms"


def _unit(module: str) -> str | None:
    """`em_organisms.eval.plan` -> `eval`; `em_organisms.paths` -> `paths`; the root -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "em_organisms" and len(parts) > 1 else None


def import_graph() -> dict[str, dict[str, set[str]]]:
    """{unit: {imported unit: {files}}} over every module of the package, lazy imports included.
    The Space's own folder (resources/spaces) is not package code: it is left out."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[:2] == ("resources", "spaces") or (
            rel.name == "__init__.py" and len(rel.parts) == 1
        ):
            continue
        source = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                target = _unit(name)
                if (
                    target
                    and target != source
                    and ((PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file())
                ):
                    graph[source][target].add(rel.as_posix())
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Every unit from which a path leads back to itself, as that path (depth-first search)."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, {})):
                if nxt == start:
                    found.append([*path, start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_the_graph_sees_imports_lazy_ones_included() -> None:
    graph = import_graph()
    assert "artifacts" in graph["train"]  # runner writes the run's typed files
    assert "judges" in graph["eval"] and "data" in graph["eval"]
    assert "space" in graph["release"]  # space_package checks an arena.yaml with the arena's loader


def test_a_cycle_is_found_where_there_is_one() -> None:
    graph = {"a": {"b": {"a.py"}}, "b": {"c": {"b.py"}}, "c": {"a": {"c.py"}}, "d": {"a": set()}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]]


def test_no_package_imports_itself_through_another() -> None:
    graph = import_graph()
    found = cycles(graph)
    where = {
        " -> ".join(c): [f"{a} -> {b}: {sorted(graph[a][b])}" for a, b in itertools.pairwise(c)]
        for c in found
    }
    assert found == [], where
