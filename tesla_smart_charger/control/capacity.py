"""Capacity tariff: keep each window's average import under `importLimitKw`. Pure, clock passed in.

Belgium, the Netherlands (15-minute windows) and Norway (60 minutes) bill the highest average
import of a window in the month. The window is aligned to the wall clock (:00, :15, ...), so
what counts is the energy imported since the window began plus what the rest of the window
will bring. `advance` integrates the meter's power into the window (export counts negative)
and keeps the month's peak; `import_ceiling_w` says how much the house may import from now on
so the window ends under the limit with a margin; `car_amps_cap` turns that into amps for one
car, given the house without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

# The window is aimed this far under the limit: commands take seconds to land and the car to
# ramp, and a house load can rise faster than that.
MARGIN = 0.05
# Near the window's end a deviation is corrected over at least this share of the window (not
# over the few seconds left), so the ceiling does not swing wildly and the car is not cut and
# raised at every boundary. The margin covers what is then not paid back.
HORIZON_SHARE = 1 / 6
# A gap between readings longer than this is not integrated as if the last power had lasted
# (the meter was silent; the fail-safe held the car at its minimum meanwhile).
MAX_GAP_SECS = 60.0
DEFAULT_VOLTS = 230.0
# A raise needs this much room beyond the next whole amp. When the window's room lies between
# two setpoints, the car at the lower one builds a credit until the higher fits, then spends
# it and is cut again: without this the car flaps between the two every few tens of seconds
# (each command billed, each a ramp); with it, every few minutes. Cuts stay exact.
RAISE_EXTRA_AMPS = 0.5


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """`importLimitKw` and `importWindowMins`."""

    limit_kw: float
    window_mins: int = 15

    @property
    def window_secs(self) -> float:
        """The window's length in seconds."""
        return self.window_mins * 60.0

    @property
    def aim_w(self) -> float:
        """The average the guard aims at: the limit less the margin, in W."""
        return self.limit_kw * 1000.0 * (1.0 - MARGIN)


@dataclass(frozen=True, slots=True)
class CapacityWindow:
    """The current window: where it began, what it imported, and the month's peak so far."""

    start: datetime  # wall clock, the window's first instant
    energy_j: float = 0.0  # net import since `start` (export counts negative)
    last_at: datetime | None = None  # the last reading integrated
    last_w: float = 0.0  # the power of that reading
    month: tuple[int, int] = (0, 0)  # (year, month) the peak belongs to
    month_peak_kw: float = 0.0  # the highest average of a completed window this month
    last_window_kw: float | None = None  # the average of the window that ended last
    boundary: bool = False  # this reading began a new window


def window_start(wall: datetime, window_mins: int) -> datetime:
    """The start of the window `wall` falls in (windows follow the clock: :00, :15, ...)."""
    minute = wall.minute - wall.minute % window_mins
    return wall.replace(minute=minute, second=0, microsecond=0)


def start(wall: datetime, cfg: CapacityConfig) -> CapacityWindow:
    """A guard that begins at `wall` (the daemon started mid-window).

    What the house imported earlier in this window is not known: it is taken as on the aim,
    so the rest of the window is held to the aim too (taking it as nothing could let the car
    take the window over the limit).
    """
    begin = window_start(wall, cfg.window_mins)
    return CapacityWindow(
        start=begin,
        energy_j=cfg.aim_w * (wall - begin).total_seconds(),
        month=(wall.year, wall.month),
    )


def power_w(phase_amps: Sequence[float], phase_volts: Sequence[float | None]) -> float:
    """Net power over all phases (positive: import), from signed amps and each phase's volts."""
    total = 0.0
    for i, amps in enumerate(phase_amps):
        volts = phase_volts[i] if i < len(phase_volts) else None
        total += amps * (volts if volts else DEFAULT_VOLTS)
    return total


def advance(
    win: CapacityWindow, watts: float, wall: datetime, cfg: CapacityConfig
) -> CapacityWindow:
    """Integrate the time since the last reading at its power; close windows that ended.

    The interval is split at each boundary it crosses, so every window gets its own part.
    A completed window's average counts toward the month's peak (a new month starts at 0).
    """
    win = replace(win, boundary=False)
    t = win.last_at
    span = (wall - t).total_seconds() if t is not None else 0.0
    integrate = t is not None and 0.0 < span <= MAX_GAP_SECS
    length = timedelta(seconds=cfg.window_secs)
    while wall >= win.start + length:
        end = win.start + length
        energy = win.energy_j
        if integrate and t is not None and t < end:
            energy += win.last_w * (end - t).total_seconds()
            t = end
        average = energy / cfg.window_secs / 1000.0
        month = (win.start.year, win.start.month)
        peak = max(win.month_peak_kw, average) if month == win.month else average
        next_start = window_start(wall, cfg.window_mins) if wall >= end + length else end
        win = replace(
            win,
            start=next_start,
            energy_j=0.0,
            month=month,
            month_peak_kw=peak,
            last_window_kw=average,
            boundary=True,
        )
    if (wall.year, wall.month) != win.month:
        win = replace(win, month=(wall.year, wall.month), month_peak_kw=0.0)
    energy = win.energy_j
    if integrate and t is not None and wall > t:
        energy += win.last_w * (wall - max(t, win.start)).total_seconds()
    return replace(win, energy_j=energy, last_at=wall, last_w=watts)


def elapsed_secs(win: CapacityWindow, wall: datetime) -> float:
    """Seconds since the window began."""
    return max(0.0, (wall - win.start).total_seconds())


def import_ceiling_w(win: CapacityWindow, wall: datetime, cfg: CapacityConfig) -> float:
    """The house's import (W) that, held from now on, ends the window at the aim.

    The window is on track when it has imported `aim * elapsed`; a deviation either way is
    spread over the time left, but over no less than HORIZON_SHARE of the window. Export
    earlier in the window leaves more to import now.
    """
    elapsed = elapsed_secs(win, wall)
    left = max(cfg.window_secs - elapsed, 0.0)
    deviation = win.energy_j - cfg.aim_w * elapsed
    return cfg.aim_w - deviation / max(left, cfg.window_secs * HORIZON_SHARE)


def average_kw(win: CapacityWindow, wall: datetime) -> float:
    """The window's average import so far (kW)."""
    elapsed = elapsed_secs(win, wall)
    return win.energy_j / elapsed / 1000.0 if elapsed > 0 else 0.0


def projection_kw(win: CapacityWindow, watts: float, wall: datetime, cfg: CapacityConfig) -> float:
    """The window's average if the power stays at `watts` until it ends (kW)."""
    left = max(cfg.window_secs - elapsed_secs(win, wall), 0.0)
    return (win.energy_j + watts * left) / cfg.window_secs / 1000.0


def car_amps_cap(
    ceiling_w: float,
    house_amps: Sequence[float],
    phase_volts: Sequence[float | None],
    car_phases: Sequence[int],
    setpoint: int | None = None,
) -> int:
    """The most amps the car may draw (on each of its phases) so the import stays at `ceiling_w`.

    `house_amps` is the supply without the car; what is left of the ceiling is shared over the
    car's phases at their voltage. Negative when even the house alone is over it. Above the
    car's `setpoint` it is RAISE_EXTRA_AMPS less (never below the setpoint).
    """
    house_w = power_w(house_amps, phase_volts)
    volts = 0.0
    for i in car_phases:
        v = phase_volts[i] if i < len(phase_volts) else None
        volts += v if v else DEFAULT_VOLTS
    if volts <= 0:
        return 0
    room = (ceiling_w - house_w) / volts
    if setpoint is not None and room >= setpoint:
        return max(setpoint, math.floor(room - RAISE_EXTRA_AMPS + 1e-6))
    return math.floor(room + 1e-6)


@dataclass(frozen=True, slots=True)
class CarPower:
    """One car of several as the tariff's split needs it (watts)."""

    priority: int
    charging: bool  # charging or paused: it wants room now
    draw_w: float  # what it draws now (its controller's estimate)
    max_w: float  # the most it may draw
    reading_w: float  # the power of the reading its controller gets (its share of the meter)


def fleet_ceilings(ceiling_w: float, real_w: float, cars: Sequence[CarPower]) -> tuple[float, ...]:
    """Each car's import ceiling so that its controller's room is its part of the cars' room.

    Each controller sees a reading of its own (its share of the breaker's room), not the real
    one, and takes its room as the ceiling less that reading's house. The cars' room together
    is the ceiling less the real house (the meter less what the cars draw); it goes to the cars
    that want it first, the highest priority first, each up to its maximum. With no room at all
    every car gets the shortfall: each is cut and paused.
    """
    room = ceiling_w - (real_w - sum(c.draw_w for c in cars))
    order = sorted(range(len(cars)), key=lambda i: (not cars[i].charging, -cars[i].priority, i))
    parts = [0.0] * len(cars)
    left = room
    for i in order:
        parts[i] = room if room < 0 else min(left, cars[i].max_w)
        left = max(0.0, left - parts[i])
    return tuple(part + (car.reading_w - car.draw_w) for part, car in zip(parts, cars, strict=True))
