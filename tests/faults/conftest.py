"""The fault window first: it is the suite's longest test (a 90 s proxy outage).

`make test` runs pytest with `--dist loadfile --no-loadscope-reorder`, which hands test files
to workers in collection order (xdist would otherwise put the files with most tests first). With the window's module first it starts at once on one worker while the
other workers share every other file, so the whole suite takes little more than the window.
"""

from __future__ import annotations

import pytest

WINDOW = "tests/faults/test_window.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable reorder: the window's tests first, everything else as collected."""
    items.sort(key=lambda item: not item.nodeid.startswith(WINDOW))
