"""The wall-clock benchmark's verdict: a median over its target fails the run, a max does not."""

from __future__ import annotations

from tesla_smart_charger.bench.timing import TARGETS, Figures, report


def test_a_median_over_its_target_is_a_miss() -> None:
    slow = Figures({"SIGTERM -> exit 0": [0.1, 6.0, 7.0]})
    text, ok = report(slow)
    assert not ok
    (row,) = [line for line in text.splitlines() if line.startswith("SIGTERM")]
    assert row.endswith("MISS")
    assert " 6.00 " in row  # the median


def test_one_slow_run_is_no_miss() -> None:
    figures = Figures({name: [0.1, 0.2, 30.0] for name in TARGETS})
    text, ok = report(figures)
    assert ok
    assert "MISS" not in text
    assert len(text.splitlines()) == 1 + len(TARGETS)
