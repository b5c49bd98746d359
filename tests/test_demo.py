"""The demo's story timing and its terminal output (fits the width, never glued to a log line)."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from tesla_smart_charger.simulator.demo import (
    DRIVER_AMPS,
    HOME_MAX_AMPS,
    SLEEP_SECS,
    LiveView,
    fit,
    logs_end_the_live_line,
    story_evening,
)


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def rendered_rows(text: str) -> list[str]:
    """What a terminal shows: `\\r` + erase-line starts the row again, `\\n` ends it."""
    rows: list[str] = []
    row = ""
    for piece in re.split(r"(\r\x1b\[K|\n)", text):
        if piece == "\r\x1b[K":
            row = ""
        elif piece == "\n":
            rows.append(row)
            row = ""
        else:
            row += piece
    rows.append(row)
    return rows


def test_the_whole_story_is_told_within_90_seconds() -> None:
    house = story_evening()

    def overloaded(t: float) -> bool:
        return house.amps(t)[0] + DRIVER_AMPS > HOME_MAX_AMPS

    times = [t / 2 for t in range(0, 181)]
    first = next(t for t in times if overloaded(t))
    room = next(t for t in times if t > first and not overloaded(t))
    # the raise needs SLEEP_SECS of room before the second overload
    second = next(t for t in times if t > room + SLEEP_SECS and overloaded(t))
    assert first <= 15
    assert all(not overloaded(t) for t in times if room <= t <= room + SLEEP_SECS + 3)
    assert second <= 75  # cut, raise and the second overload all inside 90 s
    assert not overloaded(0.0)
    assert house.amps(0.0)[0] + DRIVER_AMPS < HOME_MAX_AMPS


@pytest.mark.parametrize("width", [30, 60, 79, 119])
def test_live_line_fits_the_width(width: int) -> None:
    parts = [
        " 42s house 21.6 + car  7.0 = 28.6/30 A ok",
        "last: set 7 A 3s ago",
        "without us 37.6 A",
        "base load, heat pump, kettle",
    ]
    line = fit(parts, width)
    assert len(line) <= width
    assert line.startswith(parts[0][: min(width - 1, len(parts[0]))])
    if width >= 79:
        assert "last: set 7 A" in line


def test_log_lines_never_glue_to_the_live_line_and_fit_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _Terminal()
    monkeypatch.setattr(
        "shutil.get_terminal_size", lambda fallback=(80, 24): os.terminal_size((80, 24))
    )
    handler = logging.StreamHandler(out)
    logger = logging.getLogger()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    view = LiveView(out)
    try:
        with logs_end_the_live_line(view):
            view.draw(["STATUS " + "x" * 200, "last: set 7 A 3s ago"])
            logging.getLogger("tesla_smart_charger.service").info(
                "command set_charging_amps 7 A: ok (worst phase 37.6 A: lowering 16 -> 7 A) "
                "and a long tail to force a wrap"
            )
            view.draw(["STATUS again"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    rows = rendered_rows(out.getvalue())
    assert all(len(row) < 80 for row in rows), rows
    log_rows = [row for row in rows if "set_charging_amps" in row]
    assert log_rows
    assert not any("STATUS" in row for row in log_rows)  # not glued to the status line
    assert any(row.startswith("         ") for row in rows)  # wrapped by us, indented
    assert handler.formatter is None  # the demo's formatter is removed afterwards


def test_piped_output_is_plain_lines() -> None:
    out = io.StringIO()
    view = LiveView(out)
    view.draw(["a" * 150, "last: none yet"])
    view.draw(["b"])
    assert out.getvalue() == "a" * 150 + " | last: none yet\nb\n"
    assert "\x1b" not in out.getvalue()
