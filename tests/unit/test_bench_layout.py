"""bench/ is a package without import circles, and it measures the daemon's shell, not a copy."""

from __future__ import annotations

import ast
from pathlib import Path

import tesla_smart_charger.bench as bench_package

BENCH = Path(bench_package.__file__).parent
PREFIX = "tesla_smart_charger.bench."


def _imports(path: Path) -> set[str]:
    """The bench modules `path` imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PREFIX):
                found.add(node.module.removeprefix(PREFIX))
            elif node.module == "tesla_smart_charger.bench":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix(PREFIX) for a in node.names if a.name.startswith(PREFIX)
            )
    return found


def test_bench_modules_import_each_other_without_a_circle() -> None:
    graph = {p.stem: _imports(p) for p in BENCH.glob("*.py") if p.stem != "__main__"}
    assert graph["evening"]  # the graph is read, not empty
    assert graph["tables"]

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        for target in graph.get(module, ()):
            visit(target, (*path, module))

    for module in graph:
        visit(module, ())


def test_the_bench_drives_no_decide_of_its_own_and_imports_no_composition_root() -> None:
    for path in BENCH.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                assert name != "decide", f"{path.name}:{node.lineno} calls decide() itself"
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("tesla_smart_charger.app"), path.name
