"""The pure core (control/) imports only the standard library and itself.

Read from the source, function-level and `TYPE_CHECKING` imports included: a core that pulls
in pydantic settings, an HTTP client or its own logging is no longer a function of (state,
event, now), whatever the tests of its decisions say.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "tesla_smart_charger" / "control"
# Standard-library modules that do I/O or keep time on their own: the shell's business.
IO_MODULES = frozenset(
    {"asyncio", "logging", "socket", "ssl", "subprocess", "threading", "time", "urllib", "http"}
)
ALLOWED_OWN = ("tesla_smart_charger.control", "tesla_smart_charger.errors")


def _imports(path: Path) -> list[str]:
    """Every module `path` imports (absolute names; relative imports are the core's own)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append("tesla_smart_charger.control" if node.level else node.module or "")
    return out


def _foreign(name: str) -> bool:
    if name == "__future__":
        return False
    if name.startswith("tesla_smart_charger"):
        return not any(name == own or name.startswith(own + ".") for own in ALLOWED_OWN)
    top = name.split(".", 1)[0]
    return top not in sys.stdlib_module_names or top in IO_MODULES


def test_the_core_imports_no_shell_and_no_io() -> None:
    found = {
        path.name: sorted(name for name in _imports(path) if _foreign(name))
        for path in sorted(CORE.glob("*.py"))
    }
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_check_sees_what_it_forbids() -> None:
    """Each kind of import the rule forbids is caught (the walk reaches nested imports)."""
    assert len(list(CORE.glob("*.py"))) >= 10
    for name in (
        "pydantic",
        "aiohttp",
        "logging",
        "asyncio",
        "tesla_smart_charger.config.settings",
    ):
        assert _foreign(name), name
    for name in ("dataclasses", "math", "tesla_smart_charger.control.models", "__future__"):
        assert not _foreign(name), name


PKG = CORE.parent


def _decide_calls(path: Path) -> int:
    """Calls of a function named `decide` in `path` (`core.decide(...)` or `decide(...)`)."""
    count = 0
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            count += name == "decide"
    return count


def test_one_shell_function_drives_decide() -> None:
    """The daemon's decisions and the tests' go through one step: a second caller of `decide`
    in the shell or the benchmark would be a second, drifting copy of the loop."""
    calls = {
        str(path.relative_to(PKG)): n
        for path in PKG.rglob("*.py")
        if path.parent.name != "control" and (n := _decide_calls(path))
    }
    assert calls == {"runtime/service.py": 1}


def test_the_core_state_is_typed() -> None:
    """No `Any` in the core: a step's changes travel as typed records, never as a dict of field
    names to values that the type checker cannot see into."""
    untyped = {
        path.name
        for path in CORE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Name) and node.id == "Any")
        or (isinstance(node, ast.Attribute) and node.attr == "Any")
        or (isinstance(node, ast.alias) and node.name == "Any")
    }
    assert untyped == set()
