"""The breaker replica's calibrations satisfy IEC 60898-1; the fuse follows its characteristic."""

from __future__ import annotations

import itertools
import logging
import math

import pytest

from tesla_smart_charger.control import breaker
from tesla_smart_charger.control.breaker import (
    CALIBRATIONS,
    ThermalReplica,
    pause_deadline,
)
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.runtime.breaker_monitor import BreakerMonitor

HOUR = 3600


def _seconds_to_trip(cal: breaker.Calibration, multiple: float, *, limit: int) -> int | None:
    """Step a cold 10 A replica at `multiple` x In once a second; the second it trips, or None."""
    replica = ThermalReplica(cal, 10.0, [0.0])
    for second in range(1, limit + 1):
        if replica.step([10.0 * multiple]):
            return second
    return None


@pytest.mark.parametrize("cal", CALIBRATIONS, ids=lambda c: c.name)
def test_non_tripping_current_holds_for_an_hour(cal: breaker.Calibration) -> None:
    # IEC 60898-1: 1.13 In does not trip within 1 h (from cold).
    assert _seconds_to_trip(cal, 1.13, limit=HOUR) is None


@pytest.mark.parametrize("cal", CALIBRATIONS, ids=lambda c: c.name)
def test_conventional_tripping_current_trips_within_an_hour(cal: breaker.Calibration) -> None:
    # IEC 60898-1: 1.45 In trips in < 1 h, tested right after the 1.13 In test (warm).
    warm = ThermalReplica(cal, 10.0, [11.3])
    seconds = next((s for s in range(1, HOUR + 1) if warm.step([14.5])), None)
    assert seconds is not None
    assert _seconds_to_trip(cal, 1.45, limit=HOUR) is not None


@pytest.mark.parametrize("cal", CALIBRATIONS, ids=lambda c: c.name)
def test_2_55_in_trips_between_1_and_60_s_from_cold(cal: breaker.Calibration) -> None:
    seconds = _seconds_to_trip(cal, 2.55, limit=HOUR)
    assert seconds is not None
    assert 1 < seconds <= 60


def test_conservative_figures_quoted_in_the_docs() -> None:
    cal = breaker.CONSERVATIVE
    assert cal.time_to_trip(2.0) == pytest.approx(15.4, abs=0.1)
    assert cal.time_to_trip(2.55) == pytest.approx(8.8, abs=0.1)
    assert cal.time_to_trip(1.45) == pytest.approx(37.4, abs=0.1)
    assert cal.time_to_trip(1.13) == math.inf
    assert cal.time_to_trip(1.2) == pytest.approx(87, abs=1)  # conservative for small overloads
    assert breaker.TYPICAL.time_to_trip(1.45) == pytest.approx(309, abs=2)


def test_stepping_matches_the_closed_form() -> None:
    cal = breaker.CONSERVATIVE
    replica = ThermalReplica(cal, 30.0, [27.0])  # warm: 0.9 In for a while
    expected = cal.time_to_trip(1.5, heat=0.81)
    second = next(s for s in range(1, 600) if replica.step([45.0]))
    assert second == math.ceil(expected)
    assert replica.trips == 1
    assert replica.heat == [0.0]  # restarts cold after a trip


def test_a_preloaded_house_has_less_margin() -> None:
    cal = breaker.CONSERVATIVE
    assert cal.time_to_trip(1.5, heat=0.81) < cal.time_to_trip(1.5, heat=0.0)


def test_replica_is_per_phase() -> None:
    replica = ThermalReplica(breaker.CONSERVATIVE, 25.0, [10.0, 10.0, 10.0])
    for _ in range(20):  # 2 In trips a cold conservative replica in 15 s
        replica.step([10.0, 50.0, 10.0])
    ratio = replica.ratio()
    assert replica.trips == 1
    assert ratio[0] == pytest.approx(ratio[2])
    assert ratio[0] < 0.2


@pytest.mark.parametrize(
    ("multiple", "low", "high"),
    [
        (1.25, math.inf, math.inf),  # conventional non-fusing current: never
        (1.6, 600.0, 3600.0),  # conventional fusing current: within 1 h
        (2.0, 13 * 60.0, 30 * 60.0),  # 2 In: about 13-30 min
        (2.06, 10.0, math.inf),  # IEC 60269-2 gate: not before 10 s at ~2 In
        (4.06, 0.1, 5.0),  # IEC 60269-2 gate: within 5 s at ~4 In
        (10.0, 0.01, 0.2),
    ],
)
def test_fuse_melting_time_follows_the_characteristic(
    multiple: float, low: float, high: float
) -> None:
    t = breaker.fuse_melting_time(multiple)
    assert low <= t <= high


def test_fuse_curve_is_monotonic() -> None:
    multiples = [1.3 + 0.05 * i for i in range(150)]
    times = [breaker.fuse_melting_time(m) for m in multiples]
    assert all(a > b for a, b in itertools.pairwise(times))


def test_fuse_replica_melts_at_its_characteristic_time() -> None:
    fuse = breaker.FuseReplica(16.0, 1)
    seconds = next(s for s in range(1, 4000) if fuse.step([48.0]))  # 3 In
    assert seconds == math.ceil(breaker.fuse_melting_time(3.0))
    assert fuse.melts == 1


def _reading(at: float, *amps: float, valid: bool = True) -> MeterReading:
    return MeterReading(tuple(amps), (230.0,) * len(amps), None, valid, at)


def test_monitor_warm_starts_and_heats() -> None:
    monitor = BreakerMonitor(30.0)
    assert monitor.heat_ratio() is None
    assert monitor.status()["heat_pct"] is None
    monitor.observe(_reading(0.0, 27.0))
    assert monitor.heat_ratio() == pytest.approx([0.81 / 1.2769])
    for t in range(1, 15):  # 1.5 In from 0.9 In trips it after 15.7 s
        monitor.observe(_reading(float(t), 45.0))
    assert monitor.heat_ratio()[0] > 0.9  # type: ignore[index]
    problem = monitor.problem()
    assert problem is not None
    assert "phase 1" in problem
    assert "30 A" in problem


def test_monitor_ignores_invalid_readings_and_long_gaps() -> None:
    monitor = BreakerMonitor(30.0)
    monitor.observe(_reading(0.0, 20.0))
    before = monitor.heat_ratio()
    monitor.observe(_reading(1.0, 90.0, valid=False))
    assert monitor.heat_ratio() == before
    monitor.observe(_reading(0.5, math.nan))  # a non-finite reading is ignored
    assert monitor.heat_ratio() == before
    monitor.observe(_reading(1000.0, 60.0))  # a 1000 s gap: nothing integrated
    assert monitor.heat_ratio() == before
    monitor.observe(_reading(1001.0, 20.0))  # 60 A held for 1 s
    assert monitor.heat_ratio()[0] > before[0]  # type: ignore[index]
    assert monitor.problem() is None


def test_pause_deadline_is_before_the_health_warning_and_half_the_time_to_trip() -> None:
    cal = breaker.CONSERVATIVE
    # from a house at its limit (heat 1.0): the sooner of the warning and half the trip time
    warn = breaker.WARN_RATIO * cal.trip_heat
    x2 = 1.2 * 1.2
    assert pause_deadline(36 / 30) == pytest.approx(cal.tau * math.log((x2 - 1) / (x2 - warn)))
    assert pause_deadline(36 / 30) < 0.5 * cal.time_to_trip(1.2, 1.0)  # 16.6 s, not 19.8 s
    assert pause_deadline(36 / 30) == pytest.approx(16.6, abs=0.1)
    assert pause_deadline(35 / 30) == pytest.approx(21.3, abs=0.1)
    # 33 A (1.1 In) never trips the replica, but it would reach /health's warning in 50 s
    assert pause_deadline(33 / 30) == pytest.approx(49.6, abs=0.1)
    # below sqrt(0.9) k (1.072 In, 32.2 A on 30 A) it never warns: pauseAfterSecs applies
    assert pause_deadline(1.07) == math.inf
    assert pause_deadline(32 / 30) == math.inf
    # the further over, the sooner; always well inside the time to trip from that heat
    multiples = (1.08, 1.14, 1.2, 1.5, 2.0, 3.0)
    times = [pause_deadline(x) for x in multiples]
    assert times == sorted(times, reverse=True)
    assert all(0 < t < cal.time_to_trip(x, 1.0) for t, x in zip(times, multiples, strict=True))


def test_monitor_keeps_health_failing_after_a_modelled_trip_until_the_supply_is_back_under(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The replica restarts cold after a trip; the house has been over its breaker for longer
    than a breaker allows all the same, and /health must not turn healthy on the reset."""
    caplog.set_level(logging.INFO, logger="tesla_smart_charger.runtime.breaker_monitor")
    monitor = BreakerMonitor(30.0)
    monitor.observe(_reading(0.0, 20.0))
    t = 0
    while monitor.trips == 0:  # 45 A (1.5 In) from 20 A trips the conservative model in ~25 s
        t += 1
        assert t < 60
        monitor.observe(_reading(float(t), 45.0))
    assert monitor.heat_ratio()[0] < 0.9  # type: ignore[index]  # cold again
    problems = []
    for t2 in range(t + 1, t + 20):  # still 45 A: the cold replica alone would say nothing
        monitor.observe(_reading(float(t2), 45.0))
        problems.append(monitor.problem())
    assert all(p is not None and "over 30 A" in p and "would have tripped" in p for p in problems)
    status = monitor.status()
    assert status["over_too_long"] is True
    assert status["trips"] == 1
    monitor.observe(_reading(float(t + 20), 29.0))  # back under: the latch ends
    assert monitor.problem() is None
    assert monitor.status()["over_too_long"] is False
    assert monitor.status()["trips"] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("longer than a breaker allows" in line for line in lines) == 1  # once, at start
    assert sum("back under 30 A" in line for line in lines) == 1  # once, at the end


def test_monitor_latch_needs_a_trip_not_just_an_overload() -> None:
    monitor = BreakerMonitor(30.0)
    monitor.observe(_reading(0.0, 20.0))
    for t in range(1, 120):  # 31 A (1.03 In) never trips the conservative model
        monitor.observe(_reading(float(t), 31.0))
    assert monitor.trips == 0
    assert monitor.problem() is None


def test_advance_heat_follows_the_replica_from_a_start_no_warmer_than_the_limit() -> None:
    # the controller's own copy of the conservative replica, on the real supply
    start = breaker.advance_heat((), (36.0,), 0.0, 30.0)
    assert start == pytest.approx((1.0,))  # 1.2 In at the first reading: as from a house at 1 In
    assert breaker.advance_heat((), (15.0,), 0.0, 30.0) == pytest.approx((0.25,))
    replica = ThermalReplica(breaker.CONSERVATIVE, 30.0, [30.0])
    heat = start
    for _ in range(10):
        heat = breaker.advance_heat(heat, (36.0,), 1.0, 30.0)
        replica.step([36.0])
    assert heat[0] == pytest.approx(replica.heat[0])
    assert breaker.advance_heat(heat, (90.0,), 31.0, 30.0) == heat  # a long gap: no guess
    assert breaker.advance_heat(heat, (math.nan,), 1.0, 30.0) == heat
