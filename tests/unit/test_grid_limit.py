"""The grid operator's limit in the pure core: the sources combined, the ceiling, the decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.control import grid_limit as gl
from tesla_smart_charger.control.events import DriverLimit, GridLimitChanged
from tesla_smart_charger.control.models import ChargeState, VehicleSnapshot, VehicleState
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.runtime.queue import EventQueue
from tests.helpers.control import MEASURED, PUSH, Run, charging, measured_charging, reading

WriteConfig = Callable[..., Path]
OFF = gl.SourceReading("inactive")
ON = gl.SourceReading("active")


# --- the sources combined -------------------------------------------------------------------


def test_combine_off_only_when_every_source_reads_inactive() -> None:
    assert gl.combine({}).active is False
    assert gl.combine({"input": OFF, "mqtt": OFF, "api": OFF}).active is False
    on = gl.combine({"input": OFF, "mqtt": ON, "api": OFF})
    assert on.active is True
    assert on.source == "mqtt"
    assert on.lost == ()
    assert "the MQTT topic says the grid operator limits us" in on.reason


def test_combine_a_lost_source_counts_as_on_and_says_why() -> None:
    lost = gl.SourceReading("lost", "nothing listens on 127.0.0.1:9")
    c = gl.combine({"input": lost, "api": OFF})
    assert c.active is True
    assert c.lost == ("input",)
    assert c.source == "input"
    assert "cannot be read: nothing listens on 127.0.0.1:9" in c.reason
    assert "to be safe" in c.reason
    both = gl.combine({"input": lost, "mqtt": ON})
    assert both.source == "input+mqtt"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"ON", True),
        (b" on\n", True),
        (b"true", True),
        (b"1", True),
        ("True", True),
        (b"OFF", False),
        (b"false", False),
        (b"0", False),
        ("off", False),
    ],
)
def test_parse_switch(payload: bytes | str, expected: bool) -> None:
    assert gl.parse_switch(payload) is expected


@pytest.mark.parametrize("payload", [b"", b"maybe", b"2", b"{}"])
def test_parse_switch_refuses_anything_else(payload: bytes) -> None:
    with pytest.raises(ValueError, match="expected ON/OFF, true/false or 1/0"):
        gl.parse_switch(payload)


# --- the ceiling ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("watts", "volts", "phases", "amps"),
    [
        (4200, 230, 1, 18),  # 18 A x 230 V = 4.14 kW
        (4200, 230, 3, 6),  # 6 A x 690 V = 4.14 kW
        (2100, 230, 1, 9),  # two cars sharing 4.2 kW
        (4200, 240, 1, 17),  # higher volts: fewer amps
        (4140, 230, 1, 18),  # exactly 18 A is allowed
    ],
)
def test_ceiling_amps_never_exceeds_the_watts(
    watts: float, volts: float, phases: int, amps: int
) -> None:
    got = gl.ceiling_amps(watts, volts=volts, phases=phases)
    assert got == amps
    assert got * volts * phases <= watts
    assert (got + 1) * volts * phases > watts


def test_car_watts_split_evenly() -> None:
    assert gl.car_watts(4.2, 1) == pytest.approx(4200)
    assert gl.car_watts(4.2, 2) == pytest.approx(2100)


@pytest.mark.parametrize(
    ("supply", "meter", "charger", "phases"),
    [
        (1, None, None, 1),
        (3, None, 1, 1),
        (3, None, 3, 3),
        (3, None, 2, 3),
        (3, None, None, 3),  # not known yet: all of them (fewer amps)
        (0, 3, None, 3),  # auto: what the meter reports
        (0, 1, 3, 1),
        (0, None, None, 3),  # nothing known at all
    ],
)
def test_car_phase_count_errs_to_more(
    supply: int, meter: int | None, charger: int | None, phases: int
) -> None:
    assert gl.car_phase_count(supply, meter, charger) == phases


def test_phase_volts_prefers_the_meter() -> None:
    assert gl.phase_volts((229.0, None, 233.0), 230.0) == 233.0
    assert gl.phase_volts((), 120.0) == 120.0
    assert gl.phase_volts((None,), 230.0) == 230.0


# --- the decision ---------------------------------------------------------------------------


def test_measured_limit_on_lowers_at_once_and_off_raises_deliberately() -> None:
    run = measured_charging()
    run.feed(reading(10 + 16, at=1.0), 1.0)
    assert run.amps_sent() == []
    actions = run.feed(GridLimitChanged(2100.0, "test"), 1.5)
    assert actions == (core.SetAmps(9, "grid operator's limit: lowering 16 -> 9 A"),)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.6)
    # While on, plenty of room is never used beyond the limit.
    for t in range(2, 60):
        run.feed(reading(10 + 9, at=t), float(t))
    assert run.amps_sent() == [9]
    assert run.state.grid_watts == 2100.0
    # Off: nothing at once, the raise waits for the room to last sleep_secs (20 s).
    assert run.feed(GridLimitChanged(None), 60.0) == ()
    for t in range(61, 80):
        run.feed(reading(10 + 9, at=t), float(t))
    assert run.amps_sent() == [9]
    for t in range(80, 83):
        run.feed(reading(10 + 9, at=t), float(t))
    assert run.amps_sent() == [9, 16]


def test_measured_breaker_still_wins_below_the_grid_limit() -> None:
    run = measured_charging()
    run.feed(GridLimitChanged(4200.0), 0.5)  # 18 A: above the car's 16 A, nothing to do
    assert run.amps_sent() == []
    run.feed(reading(22 + 16, at=1.0), 1.0)  # the house needs the car at 29 - 22 = 7 A
    assert run.amps_sent() == [7]


def test_driver_ceiling_below_the_grid_limit_wins() -> None:
    run = measured_charging()
    run.feed(DriverLimit(vin="x", amps=8), 0.5)
    run.feed(core.CommandDone("set_charging_amps", 8), 0.6)
    assert run.feed(GridLimitChanged(2100.0), 1.0) == ()  # 9 A would be more than 8
    assert run.amps_sent() == [8]


def test_grid_limit_uses_the_meters_volts_and_three_phases() -> None:
    cfg = replace(MEASURED, supply_phases=3)
    run = Run(cfg)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(reading(5, 5, 5, at=0.5), 0.5)
    actions = run.feed(GridLimitChanged(4200.0), 1.0)
    # The test car reports one phase: 4200 / 230 = 18.26 -> stays at 16 A.
    assert actions == ()
    three = ChargeState("Charging", 16, 32, 16, 3, 230)
    run.feed(core.VehicleUpdate(VehicleSnapshot(VehicleState.ONLINE, three, 2.0)), 2.0)
    assert run.amps_sent() == [6]  # 4200 / (3 x 230) = 6.08


def test_push_limit_on_lowers_and_off_restores_step_by_step() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16, at=0.0)), 0.0)
    actions = run.feed(GridLimitChanged(2100.0), 1.0)
    assert actions == (core.SetAmps(9, "grid operator's limit: lowering 16 -> 9 A"),)
    run.feed(core.CommandDone("set_charging_amps", 9), 1.1)
    # While on, the quiet time never raises past the limit.
    assert core.next_deadline(run.state, PUSH) is None
    run.feed(core.Tick(), 100.0)
    assert run.amps_sent() == [9]
    run.feed(GridLimitChanged(None), 120.0)
    deadline = core.next_deadline(run.state, PUSH)
    assert deadline is not None
    t = deadline
    for _ in range(10):
        run.feed(core.Tick(), t)
        t += PUSH.sleep_secs
    sent = run.amps_sent()
    assert sent[0] == 9
    assert sent[-1] == 16  # the driver's setting is back
    assert sent == sorted(sent)
    assert len(sent) > 2  # deliberately: more than one step


def test_the_limit_event_replaces_an_older_one_in_the_queue() -> None:
    q = EventQueue()
    q.put_nowait(GridLimitChanged(2100.0))
    q.put_nowait(GridLimitChanged(None))
    assert q.qsize() == 1
    assert q.get_nowait() == GridLimitChanged(None)


# --- the configuration ----------------------------------------------------------------------


def test_config_keys_are_bounded_and_named(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(gridLimitKw=0.5, gridLimitTopic="grid/#", gridLimitInputId=7))
    text = "\n".join(info.value.problems)
    assert "gridLimitKw" in text
    assert "gridLimitTopic" in text
    assert "gridLimitInputId" in text


def test_topic_needs_mqtt_url(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match="gridLimitTopic needs mqttUrl"):
        load_config(write_config(gridLimitTopic="house/grid-limit"))


def test_default_limit_is_4_2_kw_per_car(write_config: WriteConfig) -> None:
    s = load_config(write_config(gridLimitInput="192.168.1.50")).settings
    assert s.grid_limit_input == "http://192.168.1.50"
    assert s.grid_limit_total_kw == pytest.approx(4.2)
    assert load_config(write_config(gridLimitKw=11)).settings.grid_limit_total_kw == 11


@pytest.mark.parametrize("mode", ["measured", "push"])
def test_limit_arriving_during_a_car_call_is_kept_and_sent_when_it_lands(mode: str) -> None:
    cfg = MEASURED if mode == "measured" else PUSH
    run = measured_charging(cfg) if mode == "measured" else Run(PUSH)
    if mode == "push":
        run.feed(core.VehicleUpdate(charging(16)), 0.0)
    look = core.RefreshVehicle("periodic check while charging", known_online=True)
    run.state = core.call_started(run.state, look)  # a look at the car is out
    assert run.feed(GridLimitChanged(2100.0), 1.0) == ()  # held: one call at a time
    assert run.state.grid_watts == 2100.0  # but not forgotten
    actions = run.feed(core.VehicleUpdate(charging(16, at=1.5)), 1.5)
    assert actions == (core.SetAmps(9, "grid operator's limit: lowering 16 -> 9 A"),)


def test_driver_ceiling_arriving_during_a_car_call_is_kept() -> None:
    run = measured_charging()
    look = core.RefreshVehicle("periodic check while charging", known_online=True)
    run.state = core.call_started(run.state, look)
    assert run.feed(DriverLimit(vin="x", amps=8), 1.0) == ()
    assert run.state.driver_amps == 8
    actions = run.feed(core.VehicleUpdate(charging(16, at=1.5)), 1.5)
    assert actions == (core.SetAmps(8, "driver's ceiling: lowering 16 -> 8 A"),)


def test_a_limit_below_the_cars_minimum_is_warned_about(write_config: WriteConfig) -> None:
    low = load_config(write_config(gridLimitKw=1.2)).warnings
    assert any("gridLimitKw 1.2 kW" in w and "chargerMinAmps" in w for w in low)
    ok = load_config(write_config(gridLimitKw=4.2)).warnings
    assert not any("gridLimitKw" in w for w in ok)
