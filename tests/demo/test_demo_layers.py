"""The dashboard's layers: no import cycle among the modules of demo/ (imports inside
functions and under TYPE_CHECKING count too), and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

DEMO = REPO / "demo"


def module_name(path: Path) -> str:
    parts = path.relative_to(DEMO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the modules of ``root`` it imports}."""
    files = {module_name(path): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module or ""
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {module for module in found if module in files and module != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, path, found = {}, [], []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_dashboard():
    graph = import_graph(DEMO)
    assert "demo.catalogue" in graph["demo.core"] and "demo.core" in graph["demo.tabs.inside"]  # relative and function-local imports are followed
    assert cycles(graph) == []


def test_no_dashboard_module_over_400_lines():
    assert {path.name: n for path in DEMO.rglob("*.py") if (n := len(path.read_text().splitlines())) > 400} == {}
