"""Rules the source keeps that no linter checks: read from the files, no import, no process.

Shared test code lives in tests/helpers/, so a test module can be moved, renamed or deleted
without breaking another; and a comment says why, since an issue number is a link a reader of
the code cannot follow.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
SOURCES = sorted([*(ROOT / "tesla_smart_charger").rglob("*.py"), *TESTS.rglob("*.py")])

# An issue or pull-request number of this project ("issue" and a number, "#" and a number, a
# branch named after an issue): a pointer to the tracker instead of a reason. A number qualified by
# another project's name ("vehicle-command issue ...", "owner/repo#...") can be looked up and
# stays, and so do "#" inside a word, a URL fragment or an HTML entity.
ISSUE_REF = re.compile(r"\bissues?\s+\d+|(?<![\w/#&])#\d{1,3}\b|\bi\d{1,2}-[a-z]+", re.IGNORECASE)
OTHER_PROJECT = re.compile(r"[\w.]+[-/][\w.-]+\s+(?:PR\s+|pull request\s+)?$", re.IGNORECASE)


def _issue_offsets(text: str) -> list[int]:
    """Where `text` cites an issue of this project (one another project's name qualifies stays)."""
    return [
        m.start()
        for m in ISSUE_REF.finditer(text)
        if not OTHER_PROJECT.search(text[: m.start()]) and not text[: m.start()].endswith("/")
    ]


# Only files that mention one are parsed: `make unit` stays within seconds on a busy machine.
TESTS_IMPORT = re.compile(r"^\s*(?:from|import)\s+tests\.(?!helpers\b)", re.MULTILINE)


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    text = path.read_text(encoding="utf-8")
    if not TESTS_IMPORT.search(text):
        return out
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def shared_code_outside_helpers(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Every import of test code from anywhere but tests.helpers, as "file: module"."""
    found = []
    for path in paths:
        for module in sorted(_imported_modules(path)):
            if module.split(".")[0] == "tests" and not module.startswith("tests.helpers"):
                found.append(f"{path.relative_to(root)}: {module}")
    return found


def issue_references(path: Path, root: Path = ROOT) -> list[str]:
    """Comments and docstrings of `path` that point at an issue number, as "file:line: text"."""
    text = path.read_text(encoding="utf-8")
    found: list[str] = []
    if not ISSUE_REF.search(text):
        return found  # most files: no candidate at all, so no need to tokenize them
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.STRING):
            continue
        if tok.type == tokenize.STRING and not tok.string.lstrip("rbuRBU").startswith(
            ('"""', "'''")
        ):
            continue  # a string literal is data (a URL, a path), a docstring or comment is prose
        for offset in _issue_offsets(tok.string):
            line = tok.start[0] + tok.string.count("\n", 0, offset)
            text = tok.string[: offset + 40].splitlines()[-1].strip()
            found.append(f"{path.relative_to(root)}:{line}: {text}")
    return found


def test_test_modules_share_code_only_through_helpers() -> None:
    assert shared_code_outside_helpers(sorted(TESTS.rglob("*.py"))) == []


def test_the_helpers_check_sees_an_import_of_another_test_module(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text("from tests.unit.test_controller import MEASURED\nimport tests.conftest\n")
    good = tmp_path / "test_good.py"
    good.write_text("from tests.helpers.control import MEASURED\n")
    found = [line.split(": ", 1)[1] for line in shared_code_outside_helpers([bad, good], tmp_path)]
    assert found == ["tests.conftest", "tests.unit.test_controller"]


def test_comments_and_docstrings_say_why_not_which_issue() -> None:
    found = [line for path in SOURCES for line in issue_references(path)]
    assert found == [], "\n".join(found)


def test_the_issue_check_sees_comments_and_docstrings_but_not_data(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        '"""Escalation (issue 11)."""\n'
        "x = 1  # see #19\n"
        'URL = "https://example.com/#12"\n'
        "# aioresponses (pnuckowski/aioresponses#289) builds old responses\n"
        "COLOUR = 1  # &#160; and #fff are not issues\n"
        "# the car refuses (vehicle-command issue 452; esphome-tesla-ble PR #120)\n"
        "# several cars (Issue 14 follow-up)\n",
        encoding="utf-8",
    )
    found = [line.split(": ", 1)[0] for line in issue_references(source, tmp_path)]
    assert found == ["mod.py:1", "mod.py:2", "mod.py:7"]
