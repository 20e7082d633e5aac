"""The package's own structure: its modules import each other without a circle, so each
can be read (and loaded) below the ones that use it."""

from __future__ import annotations

import ast
from pathlib import Path

import triowsgi

PACKAGE = Path(triowsgi.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (anywhere in it,
    also inside functions, where an import made to dodge a circle would hide)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                imported.update(name.split(".")[0] for name in names)
        graph[path.stem] = imported & {p.stem for p in PACKAGE.glob("*.py")}
    return graph


def _a_circle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if circle := visit(imported, [*path, module]):
                return circle
        done.add(module)
        return None

    for module in sorted(graph):
        if circle := visit(module, []):
            return circle
    return None


def test_the_package_modules_import_each_other_without_a_circle() -> None:
    graph = _imports()
    assert {"_cli", "_processes", "_connection"} <= graph.keys()
    assert _a_circle(graph) is None, " -> ".join(_a_circle(graph) or [])


def test_a_circle_is_found() -> None:
    assert _a_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _a_circle({"a": {"b"}, "b": set()}) is None
