"""Sharing one supply between several cars (issue 14): the pure allocation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tesla_smart_charger.control.allocation import CarDemand, Share, plan, room_per_phase, share


def car(
    vin: str,
    priority: int = 0,
    *,
    setpoint: int | None = 16,
    phases: tuple[int, ...] = (0,),
    lo: int = 5,
    hi: int = 16,
    charging: bool = True,
) -> CarDemand:
    return CarDemand(vin, priority, lo, hi, phases, setpoint, charging)


def amps(shares: tuple[Share, ...]) -> dict[str, int]:
    return {s.vin: s.amps for s in shares}


def test_equal_priority_splits_evenly_within_one_amp() -> None:
    # homeMaxAmps 30, margin 1, house 10: 19 A for two cars
    cars = (car("A"), car("B"))
    got = amps(share(cars, room_per_phase(29.0, (10.0,)), pause_when_overloaded=False))
    assert sum(got.values()) == 19
    assert abs(got["A"] - got["B"]) <= 1


def test_higher_priority_served_first_low_priority_cut() -> None:
    cars = (car("LOW", 0), car("HIGH", 1))
    got = amps(share(cars, (19.0,), pause_when_overloaded=False))
    assert got == {"HIGH": 14, "LOW": 5}
    changes = plan(cars, share(cars, (19.0,), pause_when_overloaded=False))
    assert [c.vin for c in changes] == ["LOW", "HIGH"]  # cuts, lowest priority first
    assert all(c.cut for c in changes)


def test_room_for_both_maxima_gives_each_its_own_maximum() -> None:
    cars = (car("A", hi=16), car("B", hi=10, setpoint=10))
    got = amps(share(cars, (40.0,), pause_when_overloaded=False))
    assert got == {"A": 16, "B": 10}
    assert plan(cars, share(cars, (40.0,), pause_when_overloaded=False)) == ()


@pytest.mark.parametrize("pause", [False, True])
def test_no_room_for_every_minimum_gives_up_the_lowest_priority(pause: bool) -> None:
    cars = (car("LOW", 0), car("HIGH", 2), car("MID", 1))
    shares = share(cars, (12.0,), pause_when_overloaded=pause)
    by = {s.vin: s for s in shares}
    # LOW still draws its minimum until its pause lands: its room is not handed out yet
    assert by["HIGH"].amps == 5
    assert by["LOW"].paused is pause
    assert by["MID"].paused is False
    assert by["LOW"].amps == 5
    if pause:
        # once LOW is paused, its room goes to the highest priority
        landed = (replace(cars[0], paused=True), *cars[1:])
        by = {s.vin: s for s in share(landed, (12.0,), pause_when_overloaded=True)}
        assert by["HIGH"].amps == 7
        assert by["LOW"].paused is True


def test_per_phase_a_car_counts_only_on_its_phases() -> None:
    # phase 1 is full, phase 2 has room: the car on phase 2 gets its maximum
    cars = (car("P1", phases=(0,)), car("P2", phases=(1,)))
    got = amps(share(cars, (6.0, 30.0, 30.0), pause_when_overloaded=False))
    assert got == {"P1": 6, "P2": 16}
    three = (car("T", phases=(0, 1, 2)), car("S", phases=(2,)))
    got = amps(share(three, (30.0, 30.0, 20.0), pause_when_overloaded=False))
    assert got["T"] + got["S"] <= 20
    assert abs(got["T"] - got["S"]) <= 1


def test_cars_not_charging_get_no_share_and_no_command() -> None:
    cars = (car("A"), car("B", charging=False))
    shares = share(cars, (19.0,), pause_when_overloaded=False)
    assert amps(shares) == {"A": 16}
    assert plan(cars, shares) == ()


def test_raises_highest_priority_first_one_command_per_car() -> None:
    cars = (car("LOW", 0, setpoint=5), car("HIGH", 1, setpoint=5))
    changes = plan(cars, share(cars, (40.0,), pause_when_overloaded=False))
    assert [(c.vin, c.amps, c.cut) for c in changes] == [("HIGH", 16, False), ("LOW", 16, False)]


def test_split_reading_shows_each_car_its_share_as_headroom() -> None:
    from tesla_smart_charger.control.allocation import CarView, split_reading  # noqa: PLC0415
    from tesla_smart_charger.models import MeterReading  # noqa: PLC0415

    views = (CarView(car("A"), 16.0), CarView(car("B"), 16.0))
    real = MeterReading((42.0,), (230.0,), None, True, 5.0)  # house 10 A + two cars at 16 A
    readings, shares = split_reading(views, real, 29.0, pause_when_overloaded=False)
    got = amps(shares)
    assert sum(got.values()) == 19
    for view, mine in zip(views, readings, strict=True):
        # the car's controller: headroom = limit - (supply - own draw) = its share
        assert 29.0 - (mine.phase_amps[0] - view.draw) == got[view.demand.vin]
        assert mine.at == real.at
    idle = (CarView(car("A"), 16.0), CarView(car("B", charging=False), 0.0))
    readings, _ = split_reading(
        idle, MeterReading((26.0,), (230.0,), None, True, 6.0), 29.0, pause_when_overloaded=False
    )
    assert readings[1].phase_amps == (10.0,)  # the car not charging sees the house alone


def test_a_solar_car_is_capped_by_the_surplus_and_sees_the_real_export() -> None:
    from tesla_smart_charger.control.allocation import CarView, split_reading  # noqa: PLC0415
    from tesla_smart_charger.models import MeterReading  # noqa: PLC0415

    # house -8 A (export), fast car at 16 A, solar car at 6 A: supply 14 A
    views = (CarView(car("FAST"), 16.0), CarView(car("SUN", setpoint=6), 6.0, solar=True))
    real = MeterReading((14.0,), (230.0,), None, True, 1.0)
    readings, shares = split_reading(views, real, 29.0, pause_when_overloaded=False)
    assert amps(shares) == {"FAST": 16, "SUN": 8}
    assert readings[1].phase_amps == (-2.0,)  # house -8 A plus its own 6 A: the real export


def test_car_view_counts_the_old_setpoint_while_a_cut_settles() -> None:
    from dataclasses import replace  # noqa: PLC0415

    from tesla_smart_charger import control as core  # noqa: PLC0415
    from tesla_smart_charger.control.allocation import car_view  # noqa: PLC0415
    from tests.test_controller import MEASURED, charging  # noqa: PLC0415

    state = replace(
        core.initial_state(0.0, charge_mode="solar"),
        vehicle=charging(16),
        setpoint=8,
        command_from=16,
        commanded_at=10.0,
    )
    from tesla_smart_charger.models import MeterReading  # noqa: PLC0415

    settling = car_view(
        state, MEASURED, MeterReading((30.0,), (230.0,), None, True, 12.0), vin="A", priority=3
    )
    settled = car_view(
        state, MEASURED, MeterReading((30.0,), (230.0,), None, True, 30.0), vin="A", priority=3
    )
    assert (settling.draw, settled.draw) == (16.0, 8.0)
    assert settling.solar
    assert settling.demand.priority == 3
    assert (settling.demand.min_amps, settling.demand.max_amps) == (6, 16)
