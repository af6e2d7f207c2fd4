"""segmodels.teach is a layer over the library: no core module imports it, so the models,
training, inference and the zoo run without the teaching code."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "segmodels"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports, relative imports resolved."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_no_core_module_imports_the_teaching_layer():
    core = [path for path in PACKAGE.rglob("*.py") if "teach" not in path.relative_to(PACKAGE).parts]
    assert len(core) > 30
    offenders = {str(path.relative_to(PACKAGE)): sorted(name for name in imported_modules(path) if name == "segmodels.teach" or name.startswith("segmodels.teach."))
                 for path in core}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_resolver_reads_relative_imports():
    assert "segmodels.teach.diagrams" in imported_modules(PACKAGE / "teach" / "network_graph.py")
    assert "segmodels.blocks" in imported_modules(PACKAGE / "teach" / "pooling.py")
    assert "segmodels.blocks" in imported_modules(PACKAGE / "decoders" / "unet.py")
    assert "segmodels.decoders.base" in imported_modules(PACKAGE / "decoders" / "__init__.py")


def test_teaching_modules_stay_small():
    lengths = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (PACKAGE / "teach").glob("*.py")}
    assert {name: lines for name, lines in lengths.items() if lines > 400} == {}
