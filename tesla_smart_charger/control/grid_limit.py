"""The grid operator's limit (§14a-style): which source says what, and the amps it leaves a car.

Pure: no I/O, no clock. The shell (`runtime.grid_limit`) reads the sources (a Shelly input on
the control box's contact, an MQTT topic, `POST /grid-limit`) and feeds their readings to
`combine`; the controller turns a car's share of the limit into amps with `ceiling_amps`.

Fail-safe: a source that cannot be read counts as active, because a limit we cannot see may
be on; the limit ends only when every configured source reads inactive again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

SourceState = Literal["active", "inactive", "lost"]

# What each source is called where a home owner reads it (the log, /status, the dashboard).
SOURCE_WORDS: dict[str, str] = {
    "input": "the Shelly input on the control box",
    "mqtt": "the MQTT topic",
    "api": "POST /grid-limit",
}


@dataclass(frozen=True, slots=True)
class SourceReading:
    """What one source says now; `detail` is why it is lost (in words), else empty."""

    state: SourceState
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Combined:
    """The limit as the sources together say it."""

    active: bool
    sources: tuple[str, ...]  # the sources that hold it on (active or lost), in config order
    lost: tuple[str, ...]  # the sources that cannot be read
    reason: str  # in words, empty when off

    @property
    def source(self) -> str | None:
        """The sources that hold the limit on, joined (`input+mqtt`), or None when off."""
        return "+".join(self.sources) if self.sources else None


def combine(readings: Mapping[str, SourceReading]) -> Combined:
    """On while any source reads active or cannot be read; off only when all read inactive."""
    on = tuple(name for name, r in readings.items() if r.state != "inactive")
    lost = tuple(name for name, r in readings.items() if r.state == "lost")
    if not on:
        return Combined(False, (), (), "")
    parts = []
    for name in on:
        words = SOURCE_WORDS.get(name, name)
        r = readings[name]
        if r.state == "lost":
            cause = f": {r.detail}" if r.detail else ""
            parts.append(f"{words} cannot be read{cause} (counted as on, to be safe)")
        else:
            parts.append(f"{words} says the grid operator limits us")
    return Combined(True, on, lost, "; ".join(parts))


def parse_switch(payload: bytes | str) -> bool:
    """An MQTT payload as on/off: ON/OFF, true/false, 1/0 (any case, spaces ignored).

    Raises ValueError naming what is accepted, for anything else.
    """
    text = (payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload).strip()
    word = text.lower()
    if word in ("on", "true", "1"):
        return True
    if word in ("off", "false", "0"):
        return False
    raise ValueError(f"expected ON/OFF, true/false or 1/0, got {text[:40]!r}")


def car_watts(limit_kw: float, cars: int) -> float:
    """Each car's share of the limit in W: an even split holds whichever cars charge."""
    return limit_kw * 1000.0 / max(1, cars)


def car_phase_count(
    supply_phases: int, meter_phases: int | None, charger_phases: int | None
) -> int:
    """How many phases the car draws on, erring to more (which means fewer amps).

    `supply_phases` is the configured 1 or 3 (0: auto, then the meter's count); a car that
    reports two or more phases draws on all of them, one that reports one on one. Unknown
    (not charging yet) counts as all the supply's phases, and an unknown supply as three.
    """
    supply = supply_phases or meter_phases or 3
    if supply == 1:
        return 1
    if charger_phases is not None and charger_phases >= 1:
        return supply if charger_phases >= 2 else 1
    return supply


def phase_volts(measured: Sequence[float | None], mains_voltage: float) -> float:
    """The volts to convert with: the highest the meter measures (fewer amps), else mainsVoltage."""
    seen = [v for v in measured if v is not None and v > 0]
    return max(seen) if seen else mains_voltage


def ceiling_amps(watts: float, *, volts: float, phases: int) -> int:
    """The whole amps a car may be set to so it draws no more than `watts`."""
    return max(0, math.floor(watts / (volts * max(1, phases)) + 1e-9))
