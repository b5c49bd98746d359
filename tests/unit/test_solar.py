"""Per-car modes: solar and minsolar in the pure decision, with an explicit clock."""

from __future__ import annotations

from dataclasses import replace

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import ModeChange
from tests.helpers.control import MEASURED, Run, charging, reading

SOLAR = replace(MEASURED, sleep_secs=5, solar_start_secs=10, solar_stop_secs=30)
VIN = "5YJ3E1EA1KF000001"


def solar_run(mode: str = "solar", snapshot_state: str = "Stopped", amps: int = 16) -> Run:
    run = Run(SOLAR)
    run.state = core.initial_state(0.0, charge_mode=mode)
    run.feed(reading(0.0, at=0.0), 0.0)  # first look
    run.feed(core.VehicleUpdate(charging(amps, state=snapshot_state)), 0.1)
    return run


def starts(run: Run) -> list[float]:
    return [t for t, a in run.actions if isinstance(a, core.StartCharging)]


def test_solar_starts_an_awake_stopped_car_after_start_secs_of_surplus() -> None:
    run = solar_run()
    for t in range(1, 10):
        run.feed(reading(-12.0, at=t), float(t))
    assert starts(run) == []
    assert "starting after 10 s" in run.state.reason
    actions = run.feed(reading(-12.0, at=11), 11.0)
    assert [type(a) for a in actions] == [core.SetAmps, core.StartCharging]
    assert isinstance(actions[0], core.SetAmps)
    assert actions[0].amps == 12


def test_solar_never_starts_a_sleeping_car_or_on_a_small_surplus() -> None:
    run = Run(SOLAR)
    run.state = core.initial_state(0.0, charge_mode="solar")
    run.feed(reading(0.0, at=0.0), 0.0)
    run.feed(core.VehicleUnavailable("asleep", "408"), 0.1)
    for t in range(1, 40):
        run.feed(reading(-12.0, at=t), float(t))
    assert run.actions[1:] == []
    small = solar_run()
    for t in range(1, 40):
        small.feed(reading(-4.0, at=t), float(t))  # below chargerMinAmps (6)
    assert starts(small) == []
    assert "waiting for a surplus of 6 A" in small.state.reason


def charging_solar(amps: int = 12) -> Run:
    run = solar_run(snapshot_state="Charging", amps=amps)
    run.feed(core.CommandDone("set_charging_amps", amps), 0.2)
    return run


def test_solar_lowers_at_once_when_export_drops_and_raises_deliberately() -> None:
    run = charging_solar(12)
    run.feed(reading(0.0, at=10), 10.0)  # car 12 A, grid 0: surplus 12 A, holding
    assert run.amps_sent() == []
    actions = run.feed(reading(9.0, at=11), 11.0)  # house without car now -3 A: surplus 3 A
    assert actions == (core.SetAmps(6, "solar: export fell to 3.0 A: lowering 12 -> 6 A"),)
    run.feed(core.CommandDone("set_charging_amps", 6), 11.1)
    for t in range(20, 26):
        run.feed(reading(-4.0, at=t), float(t))  # car 6 A, export 4 A: surplus 10 A
    assert run.amps_sent() == [6, 10]  # raised once, after sleep_secs


def test_a_lowering_the_sun_asks_for_goes_at_once_and_uses_the_cloud_budget() -> None:
    """Not a cut the breaker needs: it is ours to choose, so it counts (a cloudy day's cuts left
    uncounted sent 265 commands instead of 168 in docs/benchmarks.md's solar table)."""
    run = charging_solar(12)
    run.state = replace(run.state, sent_at=())
    run.cfg = replace(run.cfg, cloud_budget=1)
    run.feed(reading(0.0, at=10), 10.0)
    actions = run.feed(reading(9.0, at=11), 11.0)  # the export fell: lowering at once
    assert actions == (core.SetAmps(6, "solar: export fell to 3.0 A: lowering 12 -> 6 A"),)
    assert len(run.state.sent_at) == 1  # the budget of 1 is used
    run.feed(core.CommandDone("set_charging_amps", 6), 11.1)
    for t in range(20, 40):
        run.feed(reading(-4.0, at=t), float(t))  # the sun is back: room for 10 A
    assert run.amps_sent() == [6]  # the raise waits for the hour
    assert "cloud command budget" in run.state.reason


def test_solar_tolerance_stops_flapping() -> None:
    run = charging_solar(12)
    for t in range(10, 40):
        # surplus 11.5 A: the car at 12 A imports 0.5 A, inside the 1 A tolerance
        run.feed(reading(0.5, at=t), float(t))
    assert run.amps_sent() == []


def test_solar_stops_after_stop_secs_of_import_and_minsolar_never_stops() -> None:
    run = charging_solar(6)
    stops = []
    for t in range(10, 50):
        for a in run.feed(reading(4.0, at=t), float(t)):  # car 6 A importing 4 A
            if isinstance(a, core.StopCharging):
                stops.append(t)
    assert stops == [40]
    assert run.state.solar_stopped
    mins = solar_run("minsolar", snapshot_state="Charging", amps=6)
    for t in range(10, 80):
        mins.feed(reading(4.0, at=t), float(t))
    assert [a for _, a in mins.actions if isinstance(a, core.StopCharging)] == []


def test_breaker_wins_over_the_sun() -> None:
    # export on the meter's only phase, but homeMaxAmps 30: the breaker caps the car anyway
    cfg = replace(SOLAR, home_max_amps=12, charger_max_amps=12)
    run = Run(cfg)
    run.state = core.initial_state(0.0, charge_mode="minsolar")
    run.feed(reading(0.0, at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(12)), 0.1)
    run.feed(core.CommandDone("set_charging_amps", 12), 0.2)
    actions = run.feed(reading(20.0, at=10), 10.0)  # house 8 A, limit 11 A: 3 A left
    assert actions
    assert isinstance(actions[0], core.SetAmps)
    assert actions[0].amps == 6  # chargerMinAmps: the most the breaker allows here


def test_mode_change_to_solar_lowers_a_fast_charge_at_once() -> None:
    run = Run(SOLAR)
    run.feed(reading(0.0, at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    run.feed(core.CommandDone("set_charging_amps", 16), 0.2)
    run.feed(reading(8.0, at=10), 10.0)  # car 16 A, house -8 A: surplus 8 A
    assert run.amps_sent() == []
    actions = run.feed(ModeChange(VIN, "solar"), 10.5)
    assert actions == (core.SetAmps(9, "solar: export fell to 8.0 A: lowering 16 -> 9 A"),)
    assert run.state.charge_mode == "solar"


def test_mode_change_to_fast_restarts_a_charge_solar_stopped() -> None:
    run = charging_solar(6)
    for t in range(10, 41):
        run.feed(reading(4.0, at=t), float(t))
    run.feed(core.CommandDone("charge_stop"), 41.0)
    actions = run.feed(ModeChange(VIN, "fast"), 42.0)
    assert [type(a) for a in actions] == [core.StartCharging]
    assert not run.state.solar_stopped


def test_cloud_budget_holds_raises_but_never_cuts_nor_counts_them() -> None:
    run = Run(replace(SOLAR, cloud_budget=2))
    run.feed(reading(0.0, at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(16)), 0.1)
    run.feed(core.CommandDone("set_charging_amps", 16), 0.2)
    t = 10.0
    phases = []
    for house in (20.0, 10.0, 20.0, 10.0, 20.0, 10.0):  # overload, room, ... three times
        for _ in range(20):
            for a in run.feed(reading(house + (run.state.setpoint or 0), at=t), t):
                assert isinstance(a, core.SetAmps)
                run.feed(core.CommandDone("set_charging_amps", a.amps), t)
            t += 1.0
        phases.append(list(run.amps_sent()))
    assert phases[0] == [9]  # the cut: it goes, and uses none of the budget
    assert phases[1] == [9, 16]  # raise 1 of 2
    assert phases[2] == [9, 16, 9]  # a cut still goes
    assert phases[3] == [9, 16, 9, 16]  # raise 2 of 2: the cuts did not use the budget up
    assert phases[4] == [9, 16, 9, 16, 9]  # with the budget used, a cut still goes
    assert phases[5] == [9, 16, 9, 16, 9]  # the raise waits for the hour
    assert "cloud command budget" in run.state.reason


def test_solar_lowering_says_what_the_sun_did_and_the_breaker_keeps_its_words() -> None:
    run = charging_solar(12)
    run.feed(reading(0.0, at=10), 10.0)
    # a cloud: the house without the car imports 2 A (supply 14 A with the car at 12 A)
    actions = run.feed(reading(14.0, at=11), 11.0)
    assert actions == (
        core.SetAmps(
            6, "solar: no export: the house imports 2.0 A without the car: lowering 12 -> 6 A"
        ),
    )
    # three phases: the car's phase is loaded, the others export; the breaker binds, not the sun
    three = Run(replace(SOLAR, supply_phases=3))
    three.state = core.initial_state(0.0, charge_mode="solar")
    three.feed(reading(0.0, 0.0, 0.0, at=0.0), 0.0)
    three.feed(core.VehicleUpdate(charging(12)), 0.1)
    three.feed(core.CommandDone("set_charging_amps", 12), 0.2)
    # house 20 A on L1 (+ the car's 12 A), 20 A export on L2 and L3: surplus 20 A, room 9 A
    actions = three.feed(reading(32.0, -20.0, -20.0, at=10), 10.0)
    assert actions == (core.SetAmps(9, "worst phase 32.0 A: lowering 12 -> 9 A"),)
