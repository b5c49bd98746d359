"""The charging decision as a pure function: table-driven, no I/O, explicit clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import MeterFailed, Overload, Reading, TokenRefreshed
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tests.helpers.control import MEASURED, PUSH, Run, asleep, charging, measured_charging, reading

# --- push mode ----------------------------------------------------------------------------


def test_push_overload_looks_at_car_then_halves() -> None:
    run = Run(PUSH)
    assert run.feed(Overload(at=1.0), 1.0) == (core.RefreshVehicle("overload reported"),)
    actions = run.feed(core.VehicleUpdate(charging(16, at=1.2)), 1.2)
    assert actions == (core.SetAmps(8, "overload: 16 A x 0.5 -> 8 A"),)
    assert run.state.driver_amps == 16


def test_push_burst_of_overloads_is_one_reduction() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=1.0), 1.0)
    for i in range(49):  # queued while the first look was under way
        run.feed(Overload(at=1.0), 1.0 + i * 0.001)
    run.feed(core.VehicleUpdate(charging(16, at=1.1)), 1.1)
    run.feed(core.CommandDone("set_charging_amps", 8), 1.2)
    for i in range(50):
        run.feed(Overload(at=2.0), 2.0 + i * 0.01)
    assert run.amps_sent() == [8]
    refreshes = [a for _, a in run.actions if isinstance(a, core.RefreshVehicle)]
    assert len(refreshes) == 1


@pytest.mark.parametrize(
    ("snapshot", "fragment"),
    [
        (asleep(), "asleep"),
        (VehicleSnapshot(VehicleState.OFFLINE, None, 0.0), "offline"),
        (charging(16, state="Stopped"), "not charging (Stopped)"),
        (charging(16, state="Complete"), "not charging (Complete)"),
    ],
)
def test_push_nothing_sent_unless_charging(snapshot: VehicleSnapshot, fragment: str) -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    assert run.feed(core.VehicleUpdate(snapshot), 0.1) == ()
    assert fragment in run.state.reason
    assert run.amps_sent() == []


def test_push_reduction_clamped_to_min() -> None:
    run = Run(replace(PUSH, down_step=0.25))
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    assert run.amps_sent() == [6]


def test_push_second_overload_after_settling_reduces_again() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    run.feed(core.CommandDone("set_charging_amps", 8), 0.2)
    run.feed(Overload(at=21.0), 21.0)  # car view is stale -> look again
    run.feed(core.VehicleUpdate(charging(8, at=21.1)), 21.1)
    assert run.amps_sent() == [8, 6]
    assert run.state.driver_amps == 16


def test_push_raises_stepwise_after_quiet_periods_and_restores_driver_setting() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    run.feed(core.CommandDone("set_charging_amps", 8), 0.1)
    now = 0.1
    for _ in range(10):
        deadline = core.next_deadline(run.state, PUSH)
        if deadline is None:
            break
        now = deadline
        for action in run.feed(core.Tick(), now):
            if isinstance(action, core.SetAmps):
                run.feed(core.CommandDone("set_charging_amps", action.amps), now)
    # +25 % of the current amps each quiet sleep period (at least 1 A), never above the driver's 16 A
    assert run.amps_sent() == [8, 10, 12, 15, 16]
    assert run.state.driver_amps is None
    assert core.next_deadline(run.state, PUSH) is None


def test_push_new_overload_postpones_raise() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    run.feed(Overload(at=15.0), 15.0)  # absorbed (settling) but restarts the quiet period
    assert run.feed(core.Tick(), 20.2) == ()
    deadline = core.next_deadline(run.state, PUSH)
    assert deadline == pytest.approx(35.0)


def test_push_raise_never_above_charger_max() -> None:
    run = Run(replace(PUSH, charger_max_amps=12))
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)  # driver set 16, our max is 12
    run.feed(core.Tick(), 21.0)
    run.feed(core.Tick(), 42.0)
    assert max(run.amps_sent()[1:]) == 12


def test_push_rate_limited_sends_nothing_until_window_ends() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUnavailable("rate_limited", "429", retry_after=60), 0.1)
    assert "rate limited" in run.state.reason
    assert run.feed(Overload(at=30.0), 30.0) == ()
    assert run.feed(Overload(at=61.0), 61.0) == (core.RefreshVehicle("overload reported"),)


def test_push_asleep_from_look_never_asks_to_wake() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUnavailable("asleep", "408"), 0.1)
    assert run.state.vehicle is not None
    assert run.state.vehicle.state is VehicleState.ASLEEP
    assert all(not isinstance(a, core.SetAmps | core.StartCharging) for _, a in run.actions)


# --- measured mode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("house", "expected"),
    [
        (10.0, None),  # 10 + 16 = 26 <= 29: hold
        (13.0, None),  # 29 exactly: hold
        (14.0, 15),  # 30 > 29: 29 - 14 = 15
        (20.0, 9),  # 29 - 20 = 9
        (22.5, 6),  # 6.5 -> floor 6
        (27.0, 6),  # house alone leaves 2 A: hold the minimum
    ],
)
def test_measured_lowering_is_immediate(house: float, expected: int | None) -> None:
    run = measured_charging()
    actions = run.feed(reading(house + 16, at=1.0), 1.0)
    sent = [a.amps for a in actions if isinstance(a, core.SetAmps)]
    assert sent == ([] if expected is None else [expected])


def test_measured_unresolvable_overload_says_so() -> None:
    run = measured_charging(replace(MEASURED, pause_when_overloaded=False))
    run.feed(reading(27 + 16, at=1.0), 1.0)
    assert "cannot be resolved by the car" in run.state.reason
    assert "never pausing (pauseWhenOverloaded is false)" in run.state.reason
    assert run.state.target == 6
    shipped = measured_charging()  # the default pauses: the reason says so
    shipped.feed(reading(27 + 16, at=1.0), 1.0)
    assert "pausing charging" in shipped.state.reason
    assert shipped.state.target == 6


def test_measured_one_overload_is_one_command_while_car_ramps() -> None:
    cfg = MEASURED
    run = measured_charging(cfg)
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9
    run.feed(core.CommandDone("set_charging_amps", 9), 1.5)
    # the car ramps down over a few seconds; the house stays at 20 A
    for t, car in [
        (2.0, 16),
        (3.0, 16),
        (4.0, 14),
        (5.0, 11),
        (6.0, 9),
        (7.0, 9),
        (10.0, 9),
        (15.0, 9),
    ]:
        run.feed(reading(20 + car, at=t), t)
    assert run.amps_sent() == [9]


def test_measured_house_growing_during_settle_lowers_again() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)
    run.feed(reading(24 + 16, at=2.0), 2.0)  # the house grew by 4 A before the car moved
    assert run.amps_sent() == [9, 6]


def test_measured_raise_waits_for_room_to_last() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    t = 10.0
    run.feed(reading(10 + 9, at=t), t)  # house back to 10 A: room for 16 A
    for t in range(11, 30):
        run.feed(reading(10 + 9, at=t), float(t))
    assert run.amps_sent() == [9]  # 19 s of room is not yet 20 s
    run.feed(reading(10 + 9, at=30.0), 30.0)
    assert run.amps_sent() == [9, 16]


def test_measured_raise_uses_the_lowest_room_seen_while_waiting() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    for t in range(10, 31):
        house = 15.0 if t == 20 else 10.0  # a brief 5 A blip: room for only 14 A
        run.feed(reading(house + 9, at=t), float(t))
    assert run.amps_sent() == [9, 14]


def test_measured_room_interrupted_restarts_the_wait() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    for t in range(10, 25):
        run.feed(reading(10 + 9, at=t), float(t))
    run.feed(reading(19.5 + 9, at=25.0), 25.0)  # no room at all for a moment
    for t in range(26, 40):
        run.feed(reading(10 + 9, at=t), float(t))
    assert run.amps_sent() == [9]


def test_measured_changes_under_one_amp_are_never_sent() -> None:
    run = measured_charging(amps=12)
    run.feed(core.CommandDone("set_charging_amps", 12), 0.0)
    for t in range(10, 80):
        run.feed(reading(16.4 + 12, at=t), float(t))  # headroom 12.6 -> floor 12: same
    assert run.amps_sent() == []


def test_measured_never_above_driver_setting() -> None:
    run = measured_charging(amps=10)
    for t in range(1, 40):
        run.feed(reading(2 + 10, at=t), float(t))
    assert run.amps_sent() == []
    assert run.state.target == 10


def test_measured_charger_channel_gives_exact_car_current() -> None:
    cfg = replace(MEASURED, charger_measured=True)
    run = measured_charging(cfg)
    run.feed(reading(20 + 16, car=16, at=1.0), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    run.feed(reading(20 + 12, car=12, at=2.0), 2.0)
    assert run.amps_sent() == [9]
    assert run.state.verify_at is None  # the meter confirms the car: no billed look needed


def test_measured_three_phase_worst_phase_decides() -> None:
    cfg = replace(MEASURED, supply_phases=3)
    run = Run(cfg)
    charge = ChargeState("Charging", 16, 16, 16, 3, 230)
    run.feed(core.VehicleUpdate(VehicleSnapshot(VehicleState.ONLINE, charge, 0.0)), 0.0)
    run.feed(Reading(MeterReading((5 + 16, 18 + 16, 2 + 16), (230.0,) * 3, None, True, 1.0)), 1.0)
    assert run.amps_sent() == [11]  # 29 - 18 on phase 2


def test_measured_single_phase_car_on_configured_phase() -> None:
    cfg = replace(MEASURED, supply_phases=3, charger_phase=2)
    run = measured_charging(cfg)
    # phase 1 is overloaded by the house alone: the car on phase 2 cannot help and must not be cut
    run.feed(Reading(MeterReading((31.0, 5 + 16, 3.0), (230.0,) * 3, None, True, 1.0)), 1.0)
    assert run.amps_sent() == []


def test_measured_first_reading_takes_one_look_at_the_car() -> None:
    run = Run(MEASURED)
    assert run.feed(reading(12.0, at=1.0), 1.0) == (core.RefreshVehicle("first look at the car"),)
    assert run.feed(reading(12.0, at=2.0), 2.0) == ()  # pending: not twice
    run.feed(core.VehicleUpdate(charging(16, state="Stopped", at=2.5)), 2.5)
    for t in range(3, 100):
        assert run.feed(reading(12.0, at=t), float(t)) == ()


def test_measured_unexplained_overload_looks_at_the_car_once() -> None:
    run = Run(MEASURED)
    run.feed(reading(12.0, at=1.0), 1.0)
    run.feed(core.VehicleUpdate(charging(16, state="Stopped", at=1.5)), 1.5)
    a1 = run.feed(reading(12 + 32, at=20.0), 20.0)  # the car started at 32 A: 44 A
    assert a1 == (core.RefreshVehicle("unexplained overload"),)
    assert run.feed(reading(12 + 32, at=21.0), 21.0) == ()  # look pending: not again
    run.feed(core.VehicleUpdate(charging(32, at=21.5)), 21.5)
    assert run.amps_sent() == [16]  # cut straight to min(max 16, room 17)


def test_measured_house_alone_overloaded_with_idle_car_does_not_poll_the_car() -> None:
    run = Run(MEASURED)
    run.feed(reading(31.0, at=1.0), 1.0)
    run.feed(core.VehicleUpdate(charging(16, state="Stopped", at=1.5)), 1.5)
    refreshes = 0
    for t in range(2, 600):
        refreshes += sum(
            isinstance(a, core.RefreshVehicle) for a in run.feed(reading(31.0, at=t), float(t))
        )
    assert refreshes == 0


def test_measured_failsafe_when_meter_goes_silent() -> None:
    run = measured_charging()
    run.feed(reading(10 + 16, at=1.0), 1.0)
    assert core.next_deadline(run.state, MEASURED) == pytest.approx(11.0)
    for t in range(2, 11):
        run.feed(MeterFailed(at=float(t), error="timeout"), float(t))
    assert run.amps_sent() == []
    actions = run.feed(core.Tick(), 11.0)
    assert (
        actions[0] == core.SetAmps(6, actions[0].reason)
        if isinstance(actions[0], core.SetAmps)
        else False
    )
    assert run.state.failsafe
    assert "fail-safe" in run.state.reason
    # held while readings stay invalid
    for t in range(12, 40):
        run.feed(reading(at=float(t), valid=False), float(t))
    assert run.amps_sent() == [6]


def test_measured_failsafe_recovery_raises_deliberately() -> None:
    run = measured_charging()
    run.feed(core.Tick(), 10.0)
    run.feed(core.CommandDone("set_charging_amps", 6), 10.0)
    run.feed(reading(5 + 6, at=50.0), 50.0)
    assert not run.state.failsafe
    assert run.amps_sent() == [6]
    for t in range(51, 71):
        run.feed(reading(5 + 6, at=t), float(t))
    assert run.amps_sent() == [6, 16]


def test_measured_invalid_readings_count_as_silence() -> None:
    run = measured_charging()
    for t in range(0, 12):
        run.feed(reading(at=float(t), valid=False), float(t))
    assert run.amps_sent() == [6]


def test_measured_pause_and_resume_when_enabled() -> None:
    cfg = replace(MEASURED, pause_when_overloaded=True, pause_after_secs=30)
    run = measured_charging(cfg, amps=6)
    stops = 0
    for t in range(1, 40):
        stops += sum(
            isinstance(a, core.StopCharging) for a in run.feed(reading(27 + 6, at=t), float(t))
        )
    assert stops == 1
    assert run.state.paused
    run.feed(core.CommandDone("charge_stop"), 40.0)
    starts = 0
    for t in range(41, 70):
        starts += sum(
            isinstance(a, core.StartCharging) for a in run.feed(reading(10.0, at=t), float(t))
        )
    assert starts == 1
    assert not run.state.paused


def test_measured_pauses_by_default_and_holds_only_when_opted_out() -> None:
    # 27 + 6 = 33 A on 30 A (1.1 In): the shipped configuration pauses once, on the breaker
    # model's timing (49.6 s from a house at its limit), never after pauseAfterSecs (120 s)
    assert core.ControlConfig("measured", 30, 6, 16, 0.5, 0.25, 20).pause_when_overloaded
    run = measured_charging(amps=6)
    for t in range(1, 400):
        run.feed(reading(27 + 6, at=t), float(t))
    stops = [t for t, a in run.actions if isinstance(a, core.StopCharging)]
    assert stops == [pytest.approx(51.0, abs=1.0)]
    # pauseWhenOverloaded false, given explicitly: held at the minimum for good
    held = measured_charging(replace(MEASURED, pause_when_overloaded=False), amps=6)
    for t in range(1, 400):
        held.feed(reading(27 + 6, at=t), float(t))
    assert not any(isinstance(a, core.StopCharging) for _, a in held.actions)
    assert held.state.setpoint == 6


def test_measured_failed_lowering_is_retried_on_next_reading() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)
    run.feed(core.VehicleUnavailable("transient", "502", command=True), 1.0)
    assert run.state.setpoint == 16
    run.feed(reading(20 + 16, at=2.0), 2.0)
    assert run.amps_sent() == [9, 9]


def test_measured_driver_change_in_app_is_adopted() -> None:
    run = measured_charging()
    run.feed(core.VehicleUpdate(charging(12, at=100.0)), 100.0)
    assert run.state.driver_amps == 12
    for t in range(101, 140):
        run.feed(reading(2 + 12, at=t), float(t))
    assert run.amps_sent() == []


def test_push_overload_during_rate_limit_is_acted_on_when_the_wait_ends() -> None:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUnavailable("rate_limited", "429", retry_after=30), 0.1)
    assert core.next_deadline(run.state, PUSH) == pytest.approx(30.1)
    assert run.feed(core.Tick(), 30.1) == (core.RefreshVehicle("overload reported"),)
    run.feed(core.VehicleUpdate(charging(16, at=30.2)), 30.2)
    assert run.amps_sent() == [8]


def test_measured_charge_end_is_seen_on_the_meter_and_the_driver_setting_restored() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9 A
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    for t in range(2, 40):
        for action in run.feed(reading(20 + 9, at=t), float(t)):
            if isinstance(action, core.RefreshVehicle):  # the settle check, answered by the car
                run.feed(core.VehicleUpdate(charging(9, at=t)), float(t))
    # the car completes while the oven goes off: 3 A on the meter, 9 A expected for the car alone
    looks = run.feed(reading(3.0, at=40.0), 40.0)
    assert looks == (core.RefreshVehicle("car seems to have stopped drawing"),)
    actions = run.feed(core.VehicleUpdate(charging(9, state="Complete", at=40.5)), 40.5)
    assert [a.amps for a in actions if isinstance(a, core.SetAmps)] == [16]
    for t in range(41, 100):  # no more looks for the same drop
        assert run.feed(reading(3.0, at=t), float(t)) == ()


def test_token_refresh_clears_the_login_reason() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUnavailable("auth", "401"), 1.0)
    assert not run.state.auth_ok
    run.feed(TokenRefreshed(at=2.0), 2.0)
    assert run.state.auth_ok
    assert run.state.reason == "Tesla login restored"


def test_measured_command_confirmed_by_the_meter_needs_no_look() -> None:
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    for t in range(2, 60):  # the car follows: the house stays at 20 A on the meter
        car = 16 if t < 4 else 9
        run.feed(reading(20 + car, at=t), float(t))
    assert not [a for _, a in run.actions if isinstance(a, core.RefreshVehicle)]
    assert run.state.verify_at is None


CONFIRM = core.RefreshVehicle("confirm the car followed the last command", known_online=True)


def _follows(sent: list[tuple[float, int]], t: float) -> float:
    """The car's draw at `t`: the last setpoint, from 3 s after it landed (16 A before)."""
    draw = 16.0
    for at, amps in sent:
        if at + 3 <= t:
            draw = float(amps)
    return draw


@pytest.mark.parametrize(
    ("house", "car", "amps", "looks"),
    [
        # A 2 s inrush triggers the cut, so the meter cannot vouch for it (the house is 6 A
        # lower afterwards). The look waits; the raise that follows is vouched, so no look.
        (lambda t: 20.0 if t < 3 else 14.0, _follows, [9, 15], []),
        # The car ignored the cut and still draws 16 A: the meter shows the breaker over its
        # rating, so a second cut goes out at once. The look owed by the first is not
        # postponed again: it goes out once the second has settled.
        # (It stays at 36 A: the breaker warms, and the pause goes first, at 18 s.)
        (lambda t: 20.0, lambda sent, t: 16.0, [9, 6], [19.0]),
        # Throttled to 9 A after a restart, the car ignores the raise to 16 A: nothing else
        # to send, so the look waits VERIFY_RETRY_SECS once for the meter, then goes out.
        (lambda t: 10.0, lambda sent, t: 9.0, [16], [90.0]),
    ],
)
def test_measured_confirmation_waits_once_for_the_meter(
    house: Callable[[float], float],
    car: Callable[[list[tuple[float, int]], float], float],
    amps: list[int],
    looks: list[float],
) -> None:
    run = measured_charging()
    if car([], 0.0) != 16.0:  # the car starts below the driver's 16 A: we throttled it before
        run.state = replace(run.state, setpoint=round(car([], 0.0)))
    sent: list[tuple[float, int]] = []
    seen: list[float] = []
    for t in range(1, 200):
        for action in run.feed(reading(house(t) + car(sent, t), at=t), float(t)):
            if isinstance(action, core.SetAmps):
                sent.append((float(t), action.amps))
                run.feed(core.CommandDone("set_charging_amps", action.amps), float(t))
            elif action == CONFIRM:
                seen.append(float(t))
                run.feed(core.VehicleUpdate(charging(run.state.setpoint or 16, at=t)), float(t))
        if seen:
            break
    assert [a for _, a in sent] == amps
    assert seen == looks


def test_fleet_api_budget_under_a_steady_load_per_hour() -> None:
    """The Fleet API budget: while charging under a steady house load, at most 15 data calls and
    10 commands an hour, and no wake ever (there is no wake action at all). Three hours, 1 s
    readings."""
    run = Run(MEASURED)
    data = commands = 0
    setpoint_draw = 0
    for t in range(0, 3 * 3600):
        now = float(t)
        for action in run.feed(reading(12.0 + setpoint_draw, at=now), now):
            if isinstance(action, core.RefreshVehicle):
                data += 1 if action.known_online else 2
                run.feed(core.VehicleUpdate(charging(16, at=now)), now)
                setpoint_draw = run.state.setpoint or 0
            elif isinstance(action, core.SetAmps):
                commands += 1
                run.feed(core.CommandDone("set_charging_amps", action.amps), now)
        deadline = core.next_deadline(run.state, MEASURED)
        if deadline is not None and deadline <= now + 1:
            for action in run.feed(core.Tick(), max(deadline, now)):
                if isinstance(action, core.RefreshVehicle):
                    data += 1 if action.known_online else 2
                    run.feed(core.VehicleUpdate(charging(16, at=now)), now)
    assert data / 3 <= 15
    assert commands / 3 <= 10
    assert data >= 2  # it did look at the car: at start-up and then periodically


def _vouch_run(follows: bool) -> tuple[Run, list[core.Action]]:
    """Two cuts 10 min apart; the meter vouches for the first, so the second is owed no look."""
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9 A
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    for t in range(2, 12):
        run.feed(reading(20 + (16 if t < 4 else 9), at=t), float(t))  # the car follows
    run.feed(reading(22 + 9, at=600.0), 600.0)  # 2 A more in the house -> 7 A
    run.feed(core.CommandDone("set_charging_amps", 7), 600.0)
    for t in range(601, 625):  # (before a raise could follow the odd case's room)
        car = 9 if t < 603 else 7 if follows else 4  # it follows, or draws 3 A less than told
        run.feed(reading(22 + car, at=t), float(t))
    return run, [a for _, a in run.actions if isinstance(a, core.RefreshVehicle)]


@pytest.mark.parametrize(
    ("follows", "last_look_at"),
    [
        (True, 609.0),  # the meter vouches for the second command too: it counts as a look
        (False, 10.0),  # the meter contradicts it: the first vouched command stays the last look
    ],
)
def test_measured_meter_checks_every_command_and_a_vouched_one_counts_as_a_look(
    follows: bool, last_look_at: float
) -> None:
    run, looks = _vouch_run(follows)
    assert run.amps_sent() == [9, 7]
    # No billed look at all: the first was vouched by the meter, the second was not due one
    # (one confirmation per 30 min), and the periodic look counts from the last vouched command.
    assert looks == []
    assert run.state.verify_at is None
    assert run.state.last_look_at == last_look_at
    assert core.next_deadline(replace(run.state, last_valid_at=1e9), MEASURED) == (
        last_look_at + MEASURED.vehicle_check_secs
    )


@pytest.mark.parametrize(
    ("first_due", "second_amps", "billed"),
    [
        (True, 7, 1),  # a look owed by the first command survives a second command before it
        (False, 7, 0),  # nothing owed, nothing due: the meter alone checks
        (False, 4, 1),  # sub-5 A is always looked at
    ],
)
def test_measured_owed_confirmation_is_not_dropped_by_a_quick_second_command(
    first_due: bool, second_amps: int, billed: int
) -> None:
    run = measured_charging()
    if not first_due:
        run.state = replace(run.state, last_verify_at=0.5)
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9 A
    run.feed(core.CommandDone("set_charging_amps", 9), 1.0)
    run.state = replace(run.state, setpoint=second_amps)
    run.feed(core.CommandDone("set_charging_amps", second_amps), 3.0)
    looks = []
    for t in range(4, 30):  # the meter cannot vouch: the house estimate moves by 5 A
        looks += [
            a
            for a in run.feed(reading(25 + 16, at=t), float(t))
            if isinstance(a, core.RefreshVehicle)
        ]
        if looks:
            break
    assert len(looks) == billed


class CarOnMeter:
    """One car behind `decide()` on a simulated meter: it draws a command LAG s after it went out.

    Commands are acknowledged at once; the house is given as step changes.
    """

    LAG = 3

    def __init__(self, cfg: core.ControlConfig, amps: int = 16) -> None:
        self.run = measured_charging(cfg, amps)
        self.draw = float(amps)
        self.pending: list[tuple[float, float]] = []
        self.on = True

    def step(self, t: float, house: float) -> tuple[core.Action, ...]:
        for due, amps in [p for p in self.pending if p[0] <= t]:
            self.pending.remove((due, amps))
            self.draw = amps
        actions = self.run.feed(reading(house + self.draw, at=t), t)
        for a in actions:
            if isinstance(a, core.SetAmps):
                self.run.feed(core.CommandDone("set_charging_amps", a.amps), t)
                self.pending.append((t + self.LAG, float(a.amps) if self.on else 0.0))
            elif isinstance(a, core.StopCharging | core.StartCharging):
                self.on = isinstance(a, core.StartCharging)
                done = core.CommandDone("charge_start" if self.on else "charge_stop")
                self.run.feed(done, t)
                amps = float(self.run.state.setpoint or 0) if self.on else 0.0
                self.pending.append((t + self.LAG, amps))
        return actions

    def house(self, steps: dict[int, float], until: int, start: int = 1) -> None:
        load = 0.0
        for t in range(start, until):
            load = steps.get(t, load)
            self.step(float(t), load)


def test_measured_pause_comes_sooner_when_the_overload_would_heat_the_breaker() -> None:
    cfg = replace(MEASURED, pause_when_overloaded=True, pause_after_secs=120)
    car = CarOnMeter(cfg)
    # house 30 A: with the car at 6 A the supply is 36 A on a 30 A breaker (1.2 In): the
    # conservative replica trips from a house at its limit in 40 s and reaches /health's
    # warning in 16.6 s. The car still draws 16 A for 3 s after the cut (46 A), which heats
    # it further: the replica the controller tracks on the meter reaches the warning sooner,
    # and the pause comes then (never before a command could have landed)
    car.house({1: 30.0}, 60)
    stops = [t for t, a in car.run.actions if isinstance(a, core.StopCharging)]
    assert len(stops) == 1
    assert 1.0 + cfg.settle_secs <= stops[0] < 1.0 + 16.6
    assert car.run.amps_sent() == [6]
    stop = next(a for _, a in car.run.actions if isinstance(a, core.StopCharging))
    assert stop.reason.startswith(
        "house 36.0 A with the car at 6 A on a 30 A supply would heat the main breaker:"
        " pausing charging after "
    )
    # without the ramp (the car already at its minimum) the closed form's 16.6 s applies
    steady = CarOnMeter(cfg, amps=6)
    steady.house({1: 30.0}, 60)
    assert [t for t, a in steady.run.actions if isinstance(a, core.StopCharging)] == [18.0]
    # on the way there the reason says why, in words that do not move with every reading
    # (one log line for the countdown, however noisy the meter)
    early = CarOnMeter(cfg)
    early.house({1: 30.0}, 10)
    assert early.run.state.reason == (
        "house over the limit even with the car at its minimum (6 A) would heat the main"
        " breaker: pausing charging before it does"
    )
    noisy = CarOnMeter(cfg)
    noisy.house({1: 30.0, 3: 30.4, 5: 29.7, 7: 31.2}, 10)
    assert noisy.run.state.reason == early.run.state.reason


@pytest.mark.parametrize(("house", "pause_at"), [(25.0, 121.0), (27.0, 1 + 50.0), (28.0, 1 + 30.0)])
@pytest.mark.parametrize("amps", [6, 16])
def test_measured_pause_deadline_follows_the_breaker_never_later_than_pause_after(
    house: float, pause_at: float, amps: int
) -> None:
    # 25 + 6 = 31 A (1.03 In) never nears the conservative replica's warning: pauseAfterSecs
    # (120 s); 27 + 6 = 33 A (1.1 In) reaches the 90 % warning from a house at its limit in
    # 49.6 s, 28 + 6 = 34 A in 29.7 s: the pause comes then. A car at 16 A when the house
    # rises draws that for 3 s more: the breaker is warmer, and the pause may come sooner
    cfg = replace(MEASURED, pause_when_overloaded=True, pause_after_secs=120)
    car = CarOnMeter(cfg, amps=amps)
    car.house({1: house}, 130)
    stops = [t for t, a in car.run.actions if isinstance(a, core.StopCharging)]
    assert len(stops) == 1
    if amps == 6 or pause_at > 120:
        assert stops[0] == pytest.approx(pause_at, abs=1.0)
    else:
        assert 1.0 + cfg.settle_secs <= stops[0] < pause_at


def test_measured_resumed_car_raises_only_after_its_start_settles_and_room_lasts() -> None:
    # A raise timer runs (room for 9 A) when the house goes over: the car is paused with the
    # timer still set. On resume the car draws nothing for a few seconds while counted at its
    # setpoint: with the old timer it raised at once to room it did not have, then cut back.
    cfg = replace(MEASURED, pause_when_overloaded=True, pause_after_secs=30)
    car = CarOnMeter(cfg)
    car.house({1: 28.0, 10: 20.0, 15: 26.0, 50: 21.0}, 140)
    sent = [(t, a) for t, a in car.run.actions if isinstance(a, core.SetAmps | core.StartCharging)]
    start = next(t for t, a in sent if isinstance(a, core.StartCharging))
    after = [(t, a.amps) for t, a in sent if t > start and isinstance(a, core.SetAmps)]
    # house 21 A: room for 8 A; one raise, after the start settled and room lasted sleepTimeSecs
    assert [amps for _, amps in after] == [8]
    assert after[0][0] >= start + cfg.settle_secs + cfg.sleep_secs


def test_while_a_cut_settles_the_reason_says_the_car_is_following_not_holding() -> None:
    """The demo showed 'holding 7 A: worst phase 37.6 A of 30 A' right after a cut: it reads
    as if nothing were done. Until the car has ramped down the reason says it is following."""
    run = measured_charging()
    run.feed(reading(20 + 16, at=1.0), 1.0)  # -> 9
    run.feed(core.CommandDone("set_charging_amps", 9), 1.5)
    run.feed(reading(20 + 16, at=2.0), 2.0)  # the car has not moved yet
    assert run.state.reason == (
        "9 A sent: waiting for the car to follow (worst phase 36.0 A of 30 A until it has)"
    )
    run.feed(reading(20 + 9, at=12.0), 12.0)  # settled (settle_secs 8) and followed
    assert run.state.reason == "holding 9 A: worst phase 29.0 A of 30 A"
    assert run.amps_sent() == [9]


def test_unresolved_overload_is_a_health_problem_only_over_the_rating() -> None:
    run = measured_charging(amps=6)
    run.feed(reading(27 + 6, at=1.0), 1.0)  # 33 A on 30 A with the car at its minimum
    counting = run.state
    assert counting.unresolvable_since == 1.0
    over, under = reading(33.0, at=2.0).reading, reading(29.5, at=2.0).reading
    problem = core.unresolved_problem((counting,), over, MEASURED)
    assert problem == (
        "supply 33.0 A on a 30 A main breaker even with the car at the minimum: pausing"
        " charging before the breaker heats up"
    )
    # within the rating (the margin only) it is no breaker problem
    assert core.unresolved_problem((counting,), under, MEASURED) is None
    dead = reading(33.0, at=2.0, valid=False).reading
    assert core.unresolved_problem((counting,), dead, MEASURED) is None
    paused = replace(counting, paused=True)
    assert "charging is paused for it" in str(core.unresolved_problem((paused,), over, MEASURED))
    # a turn given to an equal car, or a car not charging, is not this overload
    turn = replace(counting, giving_turn=True)
    assert core.unresolved_problem((turn,), over, MEASURED) is None
    idle = replace(counting, vehicle=charging(6, state="Stopped"))
    assert core.unresolved_problem((idle,), over, MEASURED) is None
    held = core.unresolved_problem(
        (counting,), over, replace(MEASURED, pause_when_overloaded=False)
    )
    assert held is not None
    assert "pauseWhenOverloaded is false" in held
    assert "the main breaker is not protected" in held
