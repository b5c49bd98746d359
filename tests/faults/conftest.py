"""The longest test files first, so `make test` takes little more than the longest of them.

`make test` runs pytest with `--dist loadfile --no-loadscope-reorder`, which hands test files
to workers in collection order (xdist would otherwise put the files with most tests first).
Handing out the long files first (the fault window's 60 s, the escalation's 60 s
of room before the relay goes back on, …) lets them run side by side from the start while the
other workers share every other file, instead of one of them starting last.
"""

from __future__ import annotations

import pytest

# Longest first, as measured by `make test`'s --durations report.
LONG_FIRST = (
    "tests/test_e2e_escalation.py",
    "tests/faults/test_window.py",
    "tests/test_e2e_cars.py",
    "tests/test_docgen.py",
    "tests/test_e2e_measured.py",
    "tests/test_e2e_mqtt.py",
    "tests/test_mqtt.py",
    "tests/test_e2e_solar.py",
    "tests/test_e2e_tokens.py",
    "tests/test_openapi.py",
    "tests/test_bench_solar.py",
    "tests/test_demo.py",
    "tests/test_browser.py",
    "tests/faults/test_meter_limits.py",
    "tests/faults/test_settings.py",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable reorder: the long files first, longest first; everything else as collected."""
    items.sort(key=_rank)
