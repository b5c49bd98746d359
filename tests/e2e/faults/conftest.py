"""The longest test files first, so `make test` takes little more than the longest of them.

`make test` runs pytest with `--dist loadfile --no-loadscope-reorder`, which hands test files
to workers in collection order (xdist would otherwise put the files with most tests first).
Handing out the long files first (the fault window's 60 s, the escalation's 60 s
of room before the relay goes back on, …) lets them run side by side from the start while the
other workers share every other file, instead of one of them starting last.
"""

from __future__ import annotations

import pytest

from tests.helpers.e2e import Recorder

# Longest first, as measured by `make test`'s --durations report (fresh clone, 2 cores).
LONG_FIRST = (
    "tests/e2e/test_capacity.py",  # ~180 s: real 1-minute capacity windows, one after another
    "tests/e2e/test_relay_no_road.py",
    "tests/e2e/test_escalation.py",
    "tests/e2e/faults/test_window.py",
    "tests/e2e/test_cars.py",
    "tests/e2e/test_measured.py",
    "tests/integration/test_docgen.py",
)
# Not in the first wave: MQTT discovery has 5 s from the daemon's start, and the start is slowest
# while six workers collect, mypy runs and the first daemons compile their imports.
# xdist starts each worker with two files: the first six above, then one of these each (a tenth
# of a second apart), so no long file waits behind another long file from the start.
SPACERS = (
    "tests/unit/test_car_readings.py",
    "tests/unit/test_safety.py",
    "tests/unit/test_logging_setup.py",
    "tests/unit/test_solar.py",
    "tests/unit/test_service.py",
    "tests/integration/test_supply_phases.py",
)
# Then the rest of the long ones, longest first; everything else after them as collected.
NEXT = (
    "tests/e2e/test_grid_limit.py",  # ~50 s per generation of the Shelly input
    "tests/e2e/test_tokens.py",
    "tests/e2e/test_no_road.py",
    "tests/e2e/faults/test_held_connections.py",  # ~35 s: 600 held connections, 2,000 aborted
    "tests/e2e/test_mqtt.py",
    "tests/integration/test_mqtt.py",
    "tests/e2e/test_solar.py",
    "tests/integration/test_openapi.py",
    "tests/integration/test_bench_solar.py",
    "tests/e2e/test_demo.py",
    "tests/e2e/test_browser.py",
    "tests/e2e/faults/test_settings.py",
    "tests/e2e/faults/test_meter_limits.py",
    "tests/integration/test_bench.py",
    "tests/e2e/test_push.py",
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
