"""The simulated house: deterministic per seed, realistic peaks, cheap per-second lookups."""

from __future__ import annotations

import bisect
import itertools

import pytest

from tesla_smart_charger.simulator.house import (
    DAY,
    FRIDGE,
    KETTLE,
    OVEN,
    Appliance,
    ApplianceRun,
    House,
    demo_evening,
    random_day,
    random_week,
    three_phase_evening,
    winter_evening,
)


def test_same_seed_same_house_other_seed_other_house() -> None:
    assert winter_evening(1).segments() == winter_evening(1).segments()
    assert winter_evening(1).segments() != winter_evening(2).segments()
    assert random_day(42).segments() == random_day(42).segments()
    assert random_day(42).segments() != random_day(43).segments()
    week_a, week_b = random_week(7), random_week(7)
    assert [d.segments() for d in week_a] == [d.segments() for d in week_b]


def test_a_single_run_is_exactly_its_current() -> None:
    house = House(1, [ApplianceRun(KETTLE, 10.0, 180.0, amps=12.0)])
    assert house.amps(9.99) == (0.0,)
    assert house.amps(10.0) == (12.0,)
    assert house.amps(189.9) == (12.0,)
    assert house.amps(190.0) == (0.0,)
    assert house.active(100.0) == ["kettle"]
    assert house.duration == 190.0


def test_thermostat_cycles_and_inrush() -> None:
    pump = Appliance(
        "pump", 8.0, on_s=100.0, off_s=50.0, idle_amps=0.4, surge_amps=4.0, surge_s=2.0, jitter=0.0
    )
    house = House(1, [ApplianceRun(pump, 0.0, 300.0)])
    assert house.amps(1.0) == (12.0,)  # compressor start
    assert house.amps(50.0) == (8.0,)
    assert house.amps(120.0) == (0.4,)  # off: circulation pump only
    assert house.amps(151.0) == (12.0,)  # next start
    assert house.amps(300.0) == (0.0,)


def test_oven_preheats_then_cycles() -> None:
    house = House(1, [ApplianceRun(OVEN, 0.0, 3600.0, seed=3)])
    first_off = next(t for t in range(3600) if house.amps(t)[0] < 13.0)
    assert first_off >= 0.85 * OVEN.first_on_s  # preheat runs flat out
    samples = house.sample(0.0, 3600.0)
    on = sum(1 for (a,) in samples if a == 13.0)
    assert 0.4 * 3600 < on < 0.8 * 3600  # thermostat duty after preheat
    assert {a for (a,) in samples} == {13.0, 0.3}


def test_winter_evening_overloads_a_30_a_main_with_a_16_a_car() -> None:
    for seed in range(1, 6):
        house = winter_evening(seed)
        (peak,) = house.peak()
        assert 14.0 < peak <= 28.0  # the house alone fits under 30 A...
        overload_s = sum(1 for (a,) in house.sample(0.0, house.duration) if a + 16.0 > 30.0)
        assert overload_s > 1800  # ...with the car it would be over for half an hour or more
        assert house.duration == pytest.approx(3 * 3600)
        names = {r.appliance.name for r in house.events}
        assert {"heat pump", "oven", "kettle", "dryer"} <= names


def test_three_phase_evening_has_three_loaded_phases() -> None:
    house = three_phase_evening()
    assert house.phases == 3
    assert len(house.amps(1800.0)) == 3
    peak = house.peak()
    assert len(peak) == 3
    assert all(8.0 < p <= 22.0 for p in peak)
    assert max(peak) + 16.0 > 25.0  # a 3 x 16 A car overloads the busiest phase of 3 x 25 A


def test_random_three_phase_day_spreads_appliances() -> None:
    house = random_day(11, phases=3)
    assert len(house.amps(12 * 3600.0)) == 3
    assert all(p <= 22.0 for p in house.peak())
    with pytest.raises(ValueError, match="single- or three-phase"):
        random_day(1, phases=2)


def test_random_days_stay_below_the_main_alone() -> None:
    for day in random_week(7):
        (peak,) = day.peak()
        assert 10.0 < peak <= 27.0
        assert day.duration == pytest.approx(DAY, abs=1.0)
        assert day.amps(3 * 3600.0)[0] > 0.0  # base load and fridge at night


def test_demo_overloads_within_a_minute_and_repeats() -> None:
    house = demo_evening()
    over = [t for t in range(900) if house.amps(float(t))[0] + 16.0 > 30.0]
    assert 30 <= over[0] <= 60
    starts = [t for t in over if t - 1 not in over]
    assert len(starts) >= 5  # recurring within 15 minutes
    assert max(b - a for a, b in itertools.pairwise(starts)) <= 240
    assert house.amps(10.0) == house.amps(10.0 + house.duration)


def test_phase_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="phase 2 of 1"):
        House(1, [ApplianceRun(FRIDGE.on_phase(2), 0.0, 60.0)])


def test_a_week_per_second_is_a_bisect_per_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: 604,800 lookups, each one bisect over a few hundred segments."""
    week = random_week(7)
    calls = 0
    real = bisect.bisect_right

    def counting(a: list[float], x: float) -> int:
        nonlocal calls
        calls += 1
        return real(a, x)

    monkeypatch.setattr(bisect, "bisect_right", counting)
    total = 0.0
    for day in week:
        assert day.segment_count < 2000
        for second in range(86_400):
            total += day.amps(float(second))[0]
    assert calls == 7 * 86_400
    monkeypatch.undo()
    # sample() walks the segments once and agrees with amps().
    walked = [v for day in week for v in day.sample(0.0, DAY)]
    assert len(walked) == 7 * 86_400
    assert sum(v[0] for v in walked) == pytest.approx(total)
