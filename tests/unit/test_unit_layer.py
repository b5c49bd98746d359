"""The fast pure layer (`make unit`, tests/unit) keeps the end-to-end tests out."""

from __future__ import annotations

import re
from pathlib import Path

UNIT = Path(__file__).resolve().parent
# What an end-to-end module uses: the daemon as a child process, a simulated world, a broker.
E2E = re.compile(r"world_and_daemon|run_daemon|observed_daemon|World\(|Broker\(|mark\.slow")


def test_the_unit_layer_has_tests() -> None:
    """An emptied directory would silently leave `make unit` with nothing to run."""
    assert len(list(UNIT.glob("test_*.py"))) >= 10


def test_no_unit_module_starts_a_daemon_or_a_world() -> None:
    """Read from the source: caught before the guard in conftest.py would fail it at run time."""
    found = {
        path.name: sorted(set(E2E.findall(path.read_text(encoding="utf-8"))))
        for path in UNIT.glob("test_*.py")
        if path.name != Path(__file__).name  # this one names them, to look for
    }
    assert {name: uses for name, uses in found.items() if uses} == {}
