"""The HTTP surface reads the daemon through `httpapi.view.DaemonView` and never imports it back,
and no module of the package reaches itself through its imports.

Imports are read from the source (also those under `if TYPE_CHECKING:`), so a cycle hidden from
the interpreter still fails here. The package-level contracts (layers, the core, the composition
root, circles between sibling packages) are import-linter's, in pyproject.toml; this file adds
what those cannot say: a circle through a package's `__init__` and one of its own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tesla_smart_charger"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every tesla_smart_charger module `path` names in an import statement."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("tesla_smart_charger")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_http_package_holds_the_four_modules_and_never_imports_the_daemon() -> None:
    graph = _graph()
    http = sorted(m for m in graph if m.startswith("tesla_smart_charger.httpapi."))
    for name in ("server", "dashboard", "metrics", "openapi", "view"):
        assert f"tesla_smart_charger.httpapi.{name}" in http
    for module in http:
        reached = _reachable(graph, module)
        assert "tesla_smart_charger.app.daemon" not in reached, module
        assert module not in reached, f"{module} imports itself through a cycle"


def test_the_daemon_serves_the_http_package() -> None:
    """The edge goes one way: daemon -> httpapi (so the check above is not vacuous)."""
    assert "tesla_smart_charger.httpapi.server" in _graph()["tesla_smart_charger.app.daemon"]


# No module may reach itself through its imports (none does today; keep it so).
KNOWN_CIRCLES: frozenset[str] = frozenset()


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    circular = {module for module in graph if module in _reachable(graph, module)}
    assert circular <= KNOWN_CIRCLES, sorted(circular - KNOWN_CIRCLES)
