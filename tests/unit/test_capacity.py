"""The capacity tariff guard: windows on the wall clock, the projection, the month's peak, and
the controller applying it as one more ceiling (pure: explicit clocks, no I/O)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control import capacity as cap
from tesla_smart_charger.control.events import Event, Reading
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tesla_smart_charger.runtime.capacity import CapacityGuard, StartDelay
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar
from tesla_smart_charger.runtime.service import ChargeService
from tesla_smart_charger.runtime.status import capacity_view
from tests.helpers.service import Car

BRUSSELS = timezone(timedelta(hours=1))
T0 = datetime(2026, 12, 3, 18, 0, 0, tzinfo=BRUSSELS)
CFG = cap.CapacityConfig(limit_kw=2.5, window_mins=15)


def feed(
    win: cap.CapacityWindow, watts: float, start: datetime, secs: int, cfg: cap.CapacityConfig = CFG
) -> cap.CapacityWindow:
    """One reading a second at `watts` for `secs` seconds from `start` (the first included)."""
    for i in range(secs):
        win = cap.advance(win, watts, start + timedelta(seconds=i), cfg)
    return win


# --- the window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "mins", "expected"),
    [
        (T0.replace(minute=7, second=59), 15, T0),
        (T0.replace(minute=15), 15, T0.replace(minute=15)),
        (T0.replace(minute=59, second=59), 15, T0.replace(minute=45)),
        (T0.replace(minute=44, second=1), 60, T0),
        (T0.replace(minute=44, second=1), 1, T0.replace(minute=44)),
    ],
)
def test_windows_follow_the_wall_clock(wall: datetime, mins: int, expected: datetime) -> None:
    assert cap.window_start(wall, mins) == expected


def test_energy_so_far_and_the_projection() -> None:
    win = feed(cap.start(T0, CFG), 2000.0, T0, 301)  # 2 kW for five minutes
    now = T0 + timedelta(seconds=300)
    assert win.energy_j == pytest.approx(2000.0 * 300)
    assert cap.average_kw(win, now) == pytest.approx(2.0)
    # 2 kW for 5 minutes, then 3.5 kW for the 10 left: (2*5 + 3.5*10) / 15
    assert cap.projection_kw(win, 3500.0, now, CFG) == pytest.approx(3.0)
    # on track below the aim: the rest of the window may import more than the aim
    ceiling = cap.import_ceiling_w(win, now, CFG)
    assert ceiling == pytest.approx((CFG.aim_w * 900 - 2000.0 * 300) / 600)
    assert ceiling > CFG.aim_w


def test_a_late_surge_lowers_the_ceiling_and_cuts_the_car() -> None:
    """13 minutes on the aim, then a 3 kW kettle: the ceiling drops by the surge at once."""
    win = feed(cap.start(T0, CFG), CFG.aim_w, T0, 781)
    now = T0 + timedelta(seconds=780)
    assert cap.import_ceiling_w(win, now, CFG) == pytest.approx(CFG.aim_w, rel=1e-6)
    surge = CFG.aim_w + 3000.0
    for i in range(1, 6):  # five seconds of the kettle before the car has followed
        win = cap.advance(win, surge, now + timedelta(seconds=i), CFG)
    later = now + timedelta(seconds=5)
    ceiling = cap.import_ceiling_w(win, later, CFG)
    assert ceiling < CFG.aim_w  # the surge's energy is paid back over the rest
    # the house now draws 3 kW more than the aim: the car (at 10 A on 230 V) must drop below 0
    house = ((surge - 2300.0) / 230.0,)
    assert cap.car_amps_cap(ceiling, house, (230.0,), (0,)) < 0
    # and the window still ends under the limit if the import then keeps to the ceiling
    left = 900 - 785
    assert (win.energy_j + ceiling * left) / 900 / 1000 <= CFG.limit_kw


def test_the_ceiling_does_not_swing_in_the_last_seconds() -> None:
    """A small overshoot with 2 s to go is paid over a sixth of the window, not over 2 s."""
    win = feed(cap.start(T0, CFG), CFG.aim_w + 50.0, T0, 899)
    now = T0 + timedelta(seconds=898)
    ceiling = cap.import_ceiling_w(win, now, CFG)
    assert CFG.aim_w - 400.0 < ceiling < CFG.aim_w
    # the window still ends under the limit (the margin absorbs what is not paid back)
    assert (win.energy_j + ceiling * 2) / 900 / 1000 < CFG.limit_kw


def test_export_counts_negative() -> None:
    win = feed(cap.start(T0, CFG), -3000.0, T0, 301)  # the sun exports 3 kW for 5 minutes
    now = T0 + timedelta(seconds=300)
    assert cap.average_kw(win, now) == pytest.approx(-3.0)
    assert cap.import_ceiling_w(win, now, CFG) > CFG.limit_kw * 1000.0 * 2


def test_a_boundary_closes_the_window_and_starts_the_next() -> None:
    win = feed(cap.start(T0, CFG), 3000.0, T0, 900)  # 18:00:00 .. 18:14:59
    assert win.boundary is False
    assert win.start == T0
    win = cap.advance(win, 1000.0, T0 + timedelta(minutes=15, seconds=0.5), CFG)
    assert win.boundary is True
    assert win.start == T0 + timedelta(minutes=15)
    # the second before the boundary went to the old window, the half second after to the new
    assert win.last_window_kw == pytest.approx(3.0)
    assert win.energy_j == pytest.approx(3000.0 * 0.5)
    assert win.month_peak_kw == pytest.approx(3.0)
    win = cap.advance(win, 1000.0, T0 + timedelta(minutes=15, seconds=1.5), CFG)
    assert win.boundary is False
    assert cap.import_ceiling_w(win, T0 + timedelta(minutes=15, seconds=1.5), CFG) > 0


def test_a_silent_meter_is_not_integrated_as_if_the_last_power_had_lasted() -> None:
    win = feed(cap.start(T0, CFG), 5000.0, T0, 10)
    win = cap.advance(win, 100.0, T0 + timedelta(minutes=5), CFG)
    assert win.energy_j == pytest.approx(5000.0 * 9)


def test_the_month_peak_is_the_highest_window_and_starts_again_each_month() -> None:
    hourly = cap.CapacityConfig(limit_kw=5.0, window_mins=60)
    end = datetime(2026, 11, 30, 22, 0, 0, tzinfo=BRUSSELS)
    win = cap.start(end, hourly)
    win = feed(win, 4000.0, end, 3600)
    win = feed(win, 1000.0, end + timedelta(hours=1), 3600)  # closes 22:00 at 4 kW
    assert win.month_peak_kw == pytest.approx(4.0)
    # 23:00-24:00 (1 kW) closes in November below the peak; then December begins at 0
    before = cap.advance(win, 2000.0, end + timedelta(hours=1, seconds=3599.5), hourly)
    assert before.month_peak_kw == pytest.approx(4.0)
    win = cap.advance(before, 2000.0, end + timedelta(hours=2), hourly)
    assert win.last_window_kw == pytest.approx(1.0, rel=1e-3)
    assert win.month == (2026, 12)
    assert win.month_peak_kw == 0.0
    # December starts at 0 and its first window sets it
    win = feed(win, 2000.0, end + timedelta(hours=2, seconds=1), 3600)
    assert win.month == (2026, 12)
    assert win.month_peak_kw == pytest.approx(2.0, rel=1e-3)
    assert win.last_window_kw == pytest.approx(2.0, rel=1e-3)


def test_car_amps_under_the_ceiling_per_phase_and_voltage() -> None:
    # 3 phases at 230 V, house 1 A each (690 W): 4000 W leaves 3310 W over three phases
    assert cap.car_amps_cap(4000.0, (1.0, 1.0, 1.0), (230.0,) * 3, (0, 1, 2)) == 4
    # one phase, voltage unknown (230 V assumed)
    assert cap.car_amps_cap(2300.0, (0.0,), (None,), (0,)) == 10
    assert cap.car_amps_cap(1000.0, (8.0,), (230.0,), (0,)) < 0


# --- the shell's guard ----------------------------------------------------------------------


def test_the_guard_holds_raises_for_a_random_delay_after_a_tight_window() -> None:
    clock = [T0 + timedelta(minutes=14, seconds=30)]
    guard = CapacityGuard(CFG, wall=lambda: clock[0], delay=StartDelay(600.0, random.Random(7)))
    heavy = MeterReading((4000.0 / 230.0,), (230.0,), None, True, 100.0)
    for i in range(29):  # 4 kW for the window's last half minute: its ceiling falls
        ceiling, hold = guard.observe(replace(heavy, at=100.0 + i))
        assert hold is None
        clock[0] += timedelta(seconds=1)
    assert ceiling < CFG.aim_w - 250.0
    clock[0] += timedelta(seconds=1)  # 18:15:00: a new window lets the car back up
    ceiling, hold = guard.observe(replace(heavy, at=130.0))
    assert ceiling == pytest.approx(CFG.aim_w, rel=1e-3)
    assert hold == pytest.approx(130.0 + random.Random(7).uniform(0.0, 600.0))
    st = capacity_view(guard)
    assert st.limit_kw == 2.5
    assert st.window_mins == 15
    assert st.window_start.endswith("18:15:00+01:00")
    assert st.last_window_kw is not None


def test_a_window_that_starts_as_the_last_went_on_holds_nothing() -> None:
    clock = [T0 + timedelta(minutes=14, seconds=58)]
    guard = CapacityGuard(CFG, wall=lambda: clock[0], delay=StartDelay(600.0, random.Random(7)))
    steady = MeterReading((CFG.aim_w / 230.0,), (230.0,), None, True, 100.0)
    guard.observe(steady)
    clock[0] += timedelta(seconds=3)
    assert guard.observe(replace(steady, at=103.0))[1] is None
    assert guard.window.boundary is True


def test_without_a_delay_no_boundary_holds_anything() -> None:
    clock = [T0 + timedelta(minutes=14, seconds=59)]
    guard = CapacityGuard(CFG, wall=lambda: clock[0])
    guard.observe(MeterReading((5.0,), (230.0,), None, True, 1.0))
    clock[0] += timedelta(seconds=2)
    assert guard.observe(MeterReading((5.0,), (230.0,), None, True, 3.0))[1] is None


# --- the controller applies it as one more ceiling -------------------------------------------

MEASURED = core.ControlConfig(
    mode="measured",
    home_max_amps=30,
    charger_min_amps=6,
    charger_max_amps=16,
    down_step=0.5,
    up_step=0.25,
    sleep_secs=20,
    safety_margin=1.0,
    stale_secs=10,
    settle_secs=8,
)


def charging_at(amps: int) -> core.ControllerState:
    snap = VehicleSnapshot(VehicleState.ONLINE, ChargeState("Charging", amps, 32, amps, 1, 230), 0)
    return replace(core.initial_state(0.0), vehicle=snap, setpoint=amps, driver_amps=16)


def read(house: float, car: int, at: float, ceiling: float | None, **kw: float) -> Reading:
    return Reading(
        MeterReading((house + car,), (230.0,), None, True, at),
        import_ceiling_w=ceiling,
        **kw,  # type: ignore[arg-type]
    )


def test_the_capacity_ceiling_cuts_at_once() -> None:
    state = charging_at(16)
    # house 2 A, car 16 A: 4.1 kW; the window allows 2375 W: 2375/230 - 2 = 8.3 A for the car
    d = core.decide(state, read(2.0, 16, 100.0, 2375.0), 100.0, MEASURED)
    assert [a.amps for a in d.actions if isinstance(a, core.SetAmps)] == [8]
    assert "capacity tariff" in d.state.reason
    assert d.state.capacity_bound is True


def test_without_the_ceiling_the_same_reading_holds() -> None:
    d = core.decide(charging_at(16), read(2.0, 16, 100.0, None), 100.0, MEASURED)
    assert d.actions == ()
    assert d.state.capacity_bound is False


def test_the_breaker_still_wins_over_a_generous_ceiling() -> None:
    # house 20 A on a 30 A supply (1 A margin): the breaker leaves 9 A, the window 40 kW
    d = core.decide(charging_at(16), read(20.0, 16, 100.0, 40_000.0), 100.0, MEASURED)
    assert [a.amps for a in d.actions if isinstance(a, core.SetAmps)] == [9]
    assert "worst phase" in d.state.reason
    assert d.state.capacity_bound is False


def test_raising_under_the_ceiling_is_deliberate() -> None:
    state = charging_at(8)
    actions = []
    for t in range(0, 25):
        d = core.decide(state, read(2.0, 8, 100.0 + t, 3600.0), 100.0 + t, MEASURED)
        state = d.state
        actions += [(t, a.amps) for a in d.actions if isinstance(a, core.SetAmps)]
    # 3600/230 - 2 = 13.6 A: raised to 13 only after sleepTimeSecs (20 s) of room
    assert actions == [(20, 13)]


def test_no_room_for_the_minimum_pauses_after_a_command_would_land() -> None:
    state = charging_at(6)
    stops = []
    for t in range(0, 12):
        d = core.decide(state, read(9.0, 6, 100.0 + t, 2375.0), 100.0 + t, MEASURED)
        state = d.state
        stops += [(t, a.reason) for a in d.actions if isinstance(a, core.StopCharging)]
    assert [t for t, _ in stops] == [8]  # carSettleSecs: not on a blip
    assert "capacity tariff" in stops[0][1]
    assert state.paused is True
    assert "capacity window" in state.reason


# --- randomStartDelaySecs -------------------------------------------------------------------


def test_a_raise_after_a_boundary_waits_for_the_random_delay() -> None:
    state = charging_at(8)
    raises = []
    for t in range(0, 60):
        hold = {"hold_raises_until": 145.0} if t == 0 else {}
        d = core.decide(state, read(2.0, 8, 100.0 + t, 3600.0, **hold), 100.0 + t, MEASURED)
        state = d.state
        raises += [t for a in d.actions if isinstance(a, core.SetAmps)]
        if t == 30:
            assert "random start delay" in state.reason
    assert raises == [45]


def test_a_cut_after_a_boundary_is_never_delayed() -> None:
    state = replace(charging_at(16), raise_hold_until=10_000.0)
    d = core.decide(state, read(2.0, 16, 100.0, 2375.0, hold_raises_until=900.0), 100.0, MEASURED)
    assert [a.amps for a in d.actions if isinstance(a, core.SetAmps)] == [8]


def test_a_resume_after_a_pause_waits_for_the_delay_too() -> None:
    state = replace(charging_at(6), paused=True, raise_hold_until=150.0)
    starts = []
    for t in range(0, 60):
        d = core.decide(state, read(2.0, 0, 100.0 + t, 5000.0), 100.0 + t, MEASURED)
        state = d.state
        starts += [t for a in d.actions if isinstance(a, core.StartCharging)]
    assert starts == [50]


def test_the_start_delay_draws_within_its_range() -> None:
    rng = random.Random(3)
    delay = StartDelay(1800.0, rng)
    draws = [delay.draw() for _ in range(200)]
    assert all(0.0 <= d <= 1800.0 for d in draws)
    assert max(draws) > 900.0  # not a constant
    assert StartDelay(0.0, rng).draw() == 0.0


def test_utc_and_local_windows_agree_for_quarter_hours() -> None:
    wall = datetime(2026, 12, 3, 17, 7, 0, tzinfo=UTC)
    assert cap.window_start(wall.astimezone(BRUSSELS), 15) == cap.window_start(wall, 15)


def test_a_one_second_inrush_costs_no_cut_but_a_lasting_load_does() -> None:
    state = charging_at(8)
    cuts = []
    houses = [2.0, 2.0, 6.0, 2.0, 2.0, 6.0, 6.0]  # a fridge's inrush, then a kettle
    for t, house in enumerate(houses):
        d = core.decide(state, read(house, 8, 100.0 + t, 2375.0), 100.0 + t, MEASURED)
        state = d.state
        cuts += [(t, a.amps) for a in d.actions if isinstance(a, core.SetAmps)]
    assert cuts == [(6, 6)]  # 2375/230 - 6 = 4.3 A: the minimum, on the second reading


def test_a_raise_under_the_tariff_needs_half_an_amp_more_than_the_next_amp() -> None:
    # 2375/230 - 2 = 8.3 A of room: the car at 8 stays (9 would need 9.5)
    assert cap.car_amps_cap(2375.0, (2.0,), (230.0,), (0,), setpoint=8) == 8
    # 9.6 A of room raises to 9; with less than the setpoint the cut is exact
    assert cap.car_amps_cap(230.0 * 11.6, (2.0,), (230.0,), (0,), setpoint=8) == 9
    assert cap.car_amps_cap(230.0 * 9.9, (2.0,), (230.0,), (0,), setpoint=8) == 7


# --- several cars: the cars' room under the tariff, by priority ------------------------------


def test_the_cars_room_goes_to_the_highest_priority_first() -> None:
    a = cap.CarPower(priority=1, charging=True, draw_w=3680.0, max_w=3680.0, reading_w=5000.0)
    b = cap.CarPower(priority=0, charging=True, draw_w=3680.0, max_w=3680.0, reading_w=6000.0)
    # real: house 460 W + both cars: the tariff leaves 4000 - 460 = 3540 W for the cars
    ca, cb = cap.fleet_ceilings(4000.0, 460.0 + 2 * 3680.0, (a, b))
    assert ca - (a.reading_w - a.draw_w) == pytest.approx(3540.0)  # A's room: all of it
    assert cb - (b.reading_w - b.draw_w) == pytest.approx(0.0)  # B: none (paused)
    # no room at all: every car gets the shortfall
    ca, cb = cap.fleet_ceilings(400.0, 460.0 + 2 * 3680.0, (a, b))
    assert ca - (a.reading_w - a.draw_w) == pytest.approx(-60.0)
    assert cb - (b.reading_w - b.draw_w) == pytest.approx(-60.0)


def test_a_fleet_gives_each_controller_its_part_of_the_window() -> None:
    def service(amps: int) -> ChargeService:
        svc = ChargeService(MEASURED, Car(), asyncio.Queue())
        svc.state = replace(charging_at(amps), first_look_done=True)
        return svc

    a = FleetCar("5YJ3E1EA7KF000001", "A", 1, service(16))
    b = FleetCar("5YJ3E1EA7KF000002", "B", 0, service(16))
    fleet = Fleet(asyncio.Queue[Event](), [a, b], limit=MEASURED.limit, pause_when_overloaded=False)
    # house 2 A + 16 + 16 on a 30 A main (the breaker's split cuts too); the window allows 4 kW
    real = MeterReading((34.0,), (230.0,), None, True, 5.0)
    fleet.route(Reading(real, import_ceiling_w=4000.0))
    caps = []
    for car in (a, b):
        event = car.service.queue.get_nowait()
        assert isinstance(event, Reading)
        assert event.import_ceiling_w is not None
        house = (event.reading.phase_amps[0] - 16.0,)
        caps.append(cap.car_amps_cap(event.import_ceiling_w, house, (230.0,), (0,)))
    # (4000 - 460) / 230 = 15.4 A for the cars: A (priority 1) gets 15, B nothing
    assert caps == [15, 0]


def test_a_boundary_seen_while_a_car_call_is_in_flight_still_holds_raises() -> None:
    state = replace(charging_at(16), call_in_flight="look")
    d = core.decide(state, read(2.0, 16, 100.0, 2375.0, hold_raises_until=700.0), 100.0, MEASURED)
    assert d.actions == ()  # the cut waits for the call's outcome ...
    assert d.state.act_after_call is True
    assert d.state.raise_hold_until == 700.0  # ... and the delay is not forgotten
    assert d.state.import_ceiling_w == 2375.0


def test_windows_over_the_limit_are_said_once_and_their_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    minute = cap.CapacityConfig(limit_kw=2.5, window_mins=1)
    clock = [T0]
    guard = CapacityGuard(minute, wall=lambda: clock[0])
    caplog.set_level("INFO", logger="tesla_smart_charger.runtime.capacity")
    for watts in [4000.0] * 180 + [1000.0] * 120:  # three windows over, then two under
        guard.observe(MeterReading((watts / 230.0,), (230.0,), None, True, 0.0))
        clock[0] += timedelta(seconds=1)
    over = [r for r in caplog.records if "over the 2.50 kW import limit" in r.getMessage()]
    back = [r for r in caplog.records if "back under" in r.getMessage()]
    assert len(over) == 1
    assert len(back) == 1
    assert "kW" in over[0].getMessage()
    assert "Capacity" not in over[0].getMessage()  # words, no class names
