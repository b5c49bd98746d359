"""The imperative shell with a fake car: errors become events, state survives a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import Event, Reading
from tesla_smart_charger.control.models import (
    MeterReading,
    VehicleState,
)
from tesla_smart_charger.errors import (
    ChargerError,
    CommandRefused,
    LoginRequired,
    RateLimited,
    TeslaAuthError,
    TeslaProtocolError,
    TeslaTransientError,
    TokenEndpointError,
    VehicleAsleep,
)
from tesla_smart_charger.runtime.service import ChargeService, load_remembered, unavailable
from tests.helpers.service import CFG, FakeCar, make


def reading(amps: float, at: float) -> Reading:
    return Reading(MeterReading((amps,), (230.0,), None, True, at))


async def test_driver_setting_survives_a_restart_while_throttled(tmp_path: Path) -> None:
    state_file = tmp_path / "charger-state.json"
    clock = [1.0]
    car = FakeCar(16)
    service = make(car, state_file, clock)
    await service.handle(reading(10 + 16, 1.0))  # first look: charging at the driver's 16 A
    clock[0] = 2.0
    await service.handle(reading(20 + 16, 2.0))  # the oven: cut to 9 A
    assert car.sent == [9]
    assert json.loads(state_file.read_text()) == {"setpoint": 9, "driver_amps": 16}
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    # The car still says 9 A: that is ours, not the driver's.
    later = [100.0]
    restarted = make(car, state_file, later)
    assert (restarted.state.setpoint, restarted.state.driver_amps) == (9, 16)
    await restarted.handle(reading(10 + 9, 100.0))  # the first look
    assert restarted.state.driver_amps == 16
    for t in range(101, 125):
        later[0] = float(t)
        await restarted.handle(reading(10 + car.request, float(t)))
    assert car.sent[-1] == 16  # raised back to the driver's setting, not capped at 9


def test_unreadable_or_odd_state_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "charger-state.json"
    assert load_remembered(path) == {}
    path.write_text("{not json", encoding="utf-8")
    assert load_remembered(path) == {}
    path.write_text(json.dumps({"setpoint": "9", "driver_amps": 500}), encoding="utf-8")
    assert load_remembered(path) == {}
    path.write_text(json.dumps({"setpoint": 9, "driver_amps": None}), encoding="utf-8")
    assert load_remembered(path) == {"setpoint": 9}


async def _cut_and_log(caplog: pytest.LogCaptureFixture, label: str | None) -> list[str]:
    """One car cut by the oven; the service's log lines."""
    caplog.clear()
    clock = [1.0]
    car = FakeCar(16)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    service = ChargeService(CFG, car, queue, clock=lambda: clock[0], label=label)
    await service.handle(reading(10 + 16, 1.0))
    clock[0] = 2.0
    await service.handle(reading(20 + 16, 2.0))
    assert car.sent == [9]
    return [
        r.getMessage() for r in caplog.records if r.name == "tesla_smart_charger.runtime.service"
    ]


async def test_with_several_cars_each_log_line_names_its_car(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="tesla_smart_charger.runtime.service")
    single = await _cut_and_log(caplog, None)
    assert "controller: worst phase 36.0 A: lowering 16 -> 9 A" in single  # as it always was
    assert "command set_charging_amps 9 A: ok (worst phase 36.0 A: lowering 16 -> 9 A)" in single
    for label in ("Model Y", "5YJ3E1EA7KF000002"):
        lines = await _cut_and_log(caplog, label)
        assert f"controller: {label}: worst phase 36.0 A: lowering 16 -> 9 A" in lines
        # every line names the car, and says what the single car's line says
        unnamed = [
            line.replace(f"controller: {label}: ", "controller: ", 1).removeprefix(f"{label}: ")
            for line in lines
        ]
        assert unnamed == single
        assert all(label in line for line in lines)
    # the state file it could not read
    caplog.clear()
    bad = tmp_path / "charger-state-5YJ3E1EA7KF000002.json"
    bad.write_text("{not json", encoding="utf-8")
    ChargeService(CFG, FakeCar(), asyncio.Queue(), state_file=bad, label="Model Y")
    assert caplog.messages[0].startswith(f"Model Y: ignoring {bad}: ")


def _waits(err: ChargerError, seconds: float) -> ChargerError:
    err.retry_after = seconds  # as the dependency's retry policy sets it
    return err


@pytest.mark.parametrize(
    ("err", "kind", "detail", "retry_after"),
    [
        # a sleeping car and a refusal: the controller's own timers, not the policy's
        (_waits(VehicleAsleep("408"), 5.0), "asleep", "408", 0.0),
        (_waits(CommandRefused("set_charging_amps", "busy"), 5.0), "refused", "busy", 0.0),
        (RateLimited("429", 30.0), "rate_limited", "429", 30.0),  # before "transient"
        (_waits(LoginRequired("login"), 5.0), "auth", "login", 60.0),  # at least a minute
        (_waits(TokenEndpointError("502"), 7.0), "token", "502", 7.0),  # before "transient"
        (_waits(TeslaAuthError("401"), 9.0), "auth", "401", 9.0),
        (_waits(TeslaTransientError("503"), 3.0), "transient", "503", 3.0),
        (_waits(TeslaProtocolError("bad"), 60.0), "error", "bad", 60.0),
    ],
)
def test_each_car_error_becomes_its_event(
    err: ChargerError, kind: str, detail: str, retry_after: float
) -> None:
    event = unavailable(err, command=True)
    assert event == core.VehicleUnavailable(kind, detail, retry_after, command=True)  # type: ignore[arg-type]


async def test_car_errors_become_events_and_are_recorded(tmp_path: Path) -> None:
    clock = [1.0]
    car = FakeCar(16)
    service = make(car, None, clock)
    await service.handle(reading(10 + 16, 1.0))
    car.fail_next = RateLimited("429", retry_after=30.0)
    clock[0] = 2.0
    await service.handle(reading(20 + 16, 2.0))
    assert service.state.blocked_until == 32.0
    assert service.state.setpoint == 16  # the car did not take it
    assert service.last_command is not None
    assert service.last_command.result == "rate_limited"
    clock[0] = 40.0
    car.fail_next = CommandRefused("set_charging_amps", "car could not execute command: busy")
    await service.handle(reading(20 + 16, 40.0))
    assert service.last_command.result == "refused"
    assert "busy" in service.state.reason
    clock[0] = 41.0
    car.fail_next = VehicleAsleep("408")
    await service.handle(reading(20 + 16, 41.0))
    assert service.state.vehicle is not None
    assert service.state.vehicle.state is VehicleState.ASLEEP
    assert car.sent == []


async def test_overload_calls_coalesce_into_one_queued_event() -> None:
    service = make(FakeCar(), None, [0.0])
    service.cfg = replace(CFG, mode="push")
    assert service.overload("http") is True
    assert all(service.overload("http") is False for _ in range(49))
    assert service.queue.qsize() == 1
