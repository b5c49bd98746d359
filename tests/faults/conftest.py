"""The longest test files first, so `make test` takes little more than the longest of them.

`make test` runs pytest with `--dist loadfile --no-loadscope-reorder`, which hands test files
to workers in collection order (xdist would otherwise put the files with most tests first).
Handing out the long files first (the fault window's 60 s, the escalation's 60 s
of room before the relay goes back on, …) lets them run side by side from the start while the
other workers share every other file, instead of one of them starting last.
"""

from __future__ import annotations

import pytest

from tests.e2e import Recorder

# Longest first, as measured by `make test`'s --durations report (fresh clone, 2 cores).
LONG_FIRST = (
    "tests/test_e2e_relay_no_road.py",
    "tests/test_e2e_escalation.py",
    "tests/faults/test_window.py",
    "tests/test_e2e_cars.py",
    "tests/test_e2e_measured.py",
    "tests/test_docgen.py",
)
# Not in the first wave: MQTT discovery has 5 s from the daemon's start, and the start is slowest
# while six workers collect, mypy runs and the first daemons compile their imports.
# xdist starts each worker with two files: the first six above, then one of these each (a tenth
# of a second apart), so no long file waits behind another long file from the start.
SPACERS = (
    "tests/test_car_readings.py",
    "tests/test_safety.py",
    "tests/test_logging_setup.py",
    "tests/test_solar.py",
    "tests/test_service.py",
    "tests/test_supply_phases.py",
)
# Then the rest of the long ones, longest first; everything else after them as collected.
NEXT = (
    "tests/test_e2e_tokens.py",
    "tests/test_e2e_no_road.py",
    "tests/faults/test_held_connections.py",  # ~35 s: 600 held connections, 2,000 aborted
    "tests/test_e2e_mqtt.py",
    "tests/test_mqtt.py",
    "tests/test_e2e_solar.py",
    "tests/test_openapi.py",
    "tests/test_bench_solar.py",
    "tests/test_demo.py",
    "tests/test_browser.py",
    "tests/faults/test_settings.py",
    "tests/faults/test_meter_limits.py",
    "tests/test_bench.py",
    "tests/test_e2e_push.py",
)
ORDER = LONG_FIRST + SPACERS + NEXT


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return ORDER.index(path) if path in ORDER else len(ORDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable reorder: the long files first, longest first; everything else as collected."""
    items.sort(key=_rank)


@pytest.fixture
def rec() -> Recorder:
    """A fresh overload recorder for an in-process API (the cross-site and Host-check tests)."""
    return Recorder()
