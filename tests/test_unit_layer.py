"""The fast pure layer (`make unit`) names real modules and keeps the end-to-end ones out."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import UNIT_MODULES

TESTS = Path(__file__).resolve().parent
# What an end-to-end module uses: the daemon as a child process, a simulated world, a broker.
E2E = re.compile(r"world_and_daemon|run_daemon|observed_daemon|World\(|Broker\(|mark\.slow")


def test_every_unit_module_exists() -> None:
    """A renamed module would silently leave `make unit`."""
    missing = sorted(name for name in UNIT_MODULES if not (TESTS / name).is_file())
    assert missing == []


def test_no_unit_module_starts_a_daemon_or_a_world() -> None:
    """Read from the source: caught before the guard in conftest.py would fail it at run time."""
    found = {
        name: sorted(set(E2E.findall((TESTS / name).read_text(encoding="utf-8"))))
        for name in UNIT_MODULES - {Path(__file__).name}  # this one names them, to look for
    }
    assert {name: uses for name, uses in found.items() if uses} == {}
