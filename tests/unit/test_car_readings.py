"""One meter reading into each car's reading: the split the fleet and the benchmark share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control.car_readings import Car, split
from tesla_smart_charger.control.models import MeterReading
from tests.helpers.control import MEASURED, charging

LIMIT = MEASURED.limit  # 29 A


def _car(vin: str, setpoint: int, *, channel: int | None = None, min_amps: int = 6) -> Car:
    state = replace(core.initial_state(0.0), vehicle=charging(setpoint), setpoint=setpoint)
    return Car(vin, 0, state, replace(MEASURED, charger_min_amps=min_amps), channel)


def _real(supply: float, at: float, channel_a: float | None = None) -> MeterReading:
    channels = ((1, channel_a),) if channel_a is not None else ()
    return MeterReading((supply,), (230.0,), None, True, at, car_channel_amps=channels)


def test_a_car_with_a_channel_and_one_without() -> None:
    # A (channel 1) was set to 10 A but draws 7 A; B (no channel) is counted at its 10 A.
    # House without cars: 32 - 7 - 10 = 15 A, room 29 - 15 = 14 A: 7 A each.
    cars = (_car("A", 10, channel=1), _car("B", 10, min_amps=5))
    real = _real(32.0, 100.0, channel_a=7.0)
    out = split(cars, real, LIMIT, pause_when_overloaded=False, floor=None)
    assert [(s.vin, s.amps, s.paused) for s in out.shares] == [("A", 7, False), ("B", 7, False)]
    assert out.floor is None  # nothing settles
    a, b = out.readings
    assert a.whole is real
    assert b.whole is real
    # A's channel is its car_amps; its controller takes it off again: headroom = its share
    assert a.reading.car_amps == 7.0
    assert LIMIT - (a.reading.phase_amps[0] - 7.0) == pytest.approx(7.0)
    # B has no channel: its controller takes off its setpoint (10 A)
    assert b.reading.car_amps is None
    assert LIMIT - (b.reading.phase_amps[0] - 10.0) == pytest.approx(7.0)
    # room_worst: the house without cars plus the OTHER car's minimum
    assert a.room_worst == pytest.approx(15.0 + 5.0)
    assert b.room_worst == pytest.approx(15.0 + 6.0)


def test_the_floor_is_kept_while_a_command_settles() -> None:
    # A was cut 10 -> 6 A at 100 s (carSettleSecs 8); B charges at 10 A.
    a = _car("A", 6, channel=1)
    a = replace(a, state=replace(a.state, command_from=10, commanded_at=100.0))
    cars = (a, _car("B", 10))
    # First reading after the cut: A has not moved (its channel still shows 10 A); while it
    # settles its old 10 A is counted, not the channel. House 32 - 20 = 12 A.
    first = split(cars, _real(32.0, 101.0, 10.0), LIMIT, pause_when_overloaded=False, floor=None)
    assert first.floor is not None
    assert first.floor.house == (12.0,)
    assert sum(s.amps for s in first.shares) == 17  # 29 - 12
    # A ramps down to 6 A: the estimate would say house 8 A (room 21); the floor keeps 12 A.
    ramp = split(
        cars, _real(28.0, 104.0, 6.0), LIMIT, pause_when_overloaded=False, floor=first.floor
    )
    assert ramp.floor == first.floor
    assert sum(s.amps for s in ramp.shares) == 17
    unfloored = split(cars, _real(28.0, 104.0, 6.0), LIMIT, pause_when_overloaded=False, floor=None)
    assert sum(s.amps for s in unfloored.shares) > 17  # what the floor prevents
    # settled: the floor is dropped and A's channel counts again (house 28 - 6 - 10 = 12 A)
    settled = split(
        cars, _real(28.0, 110.0, 6.0), LIMIT, pause_when_overloaded=False, floor=ramp.floor
    )
    assert settled.floor is None
    assert settled.readings[0].reading.car_amps == 6.0
    assert sum(s.amps for s in settled.shares) == 17


def test_the_ledger_keeps_the_car_that_has_had_less_and_is_carried_on() -> None:
    from tesla_smart_charger.control.allocation import Ledger  # noqa: PLC0415

    # both at 6 A, house 20 A: room 9 A under 29 A, one minimum and not two
    cars = (_car("A", 6), _car("B", 6))
    first = split(cars, _real(32.0, 100.0), LIMIT, pause_when_overloaded=True, floor=None)
    assert first.ledger is not None
    assert first.ledger.order == ("A", "B")  # nothing had yet: by VIN
    assert [s.vin for s in first.shares if s.paused] == ["B"]
    # A has had 3 h at 6 A this session, B nothing: B is kept, A given up (order swapped)
    had = Ledger(99.0, (("A", 6.0 * 3 * 3600), ("B", 0.0)), ("A", "B"))
    out = split(cars, _real(32.0, 100.0), LIMIT, pause_when_overloaded=True, floor=None, ledger=had)
    assert out.ledger is not None
    assert out.ledger.order == ("B", "A")
    assert [s.vin for s in out.shares if s.paused] == ["A"]
    # the second since is counted at the draw each car is estimated at (6 A each)
    assert dict(out.ledger.had) == {"A": 6.0 * 3 * 3600 + 6.0, "B": 6.0}
    # within the margin (A has had 5 min at 6 A more): no swap, B stays given up
    close = Ledger(99.0, (("A", 6.0 * 300), ("B", 0.0)), ("A", "B"))
    out = split(
        cars, _real(32.0, 100.0), LIMIT, pause_when_overloaded=True, floor=None, ledger=close
    )
    assert [s.vin for s in out.shares if s.paused] == ["B"]


def test_with_the_chargers_circuit_off_no_car_is_counted_as_drawing() -> None:
    """The safety relay cut both chargers: the supply is the house alone. Counting the cars'
    setpoints would make the house look 20 A smaller and a stopped car's room too large, so
    the relay would come back on early."""
    cars = (_car("A", 10), _car("B", 10))
    real = _real(24.0, 100.0)  # the house alone: the chargers have no power
    on = split(cars, real, LIMIT, pause_when_overloaded=False, floor=None)
    off = split(cars, real, LIMIT, pause_when_overloaded=False, floor=None, circuit_off=True)
    # A may come back once its minimum fits beside the house and B's minimum
    assert on.readings[0].room_worst == pytest.approx(24.0 - 20.0 + 6.0)  # looks like room
    assert off.readings[0].room_worst == pytest.approx(24.0 + 6.0)  # 30 A: no room on 29 A
    assert off.floor is None
