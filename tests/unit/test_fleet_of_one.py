"""One car is a fleet of one: one path from the configuration to the commands.

A seed config (teslaVehicleId and the top-level keys) and the same car written as a one-entry
`vehicles` list build the same daemon; one car and several show /status in one shape; a fleet
of one hands its car every event exactly as it came (it has nothing to share).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from tesla_smart_charger import control as core
from tesla_smart_charger.app.daemon import Daemon, api_context, build_daemon
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.control.events import DriverLimit, Overload, Reading
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar
from tesla_smart_charger.runtime.queue import EventQueue
from tesla_smart_charger.runtime.service import ChargeService

VIN_A, VIN_B = "5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002"
PUSH = core.ControlConfig(
    mode="push",
    home_max_amps=30,
    charger_min_amps=6,
    charger_max_amps=16,
    down_step=0.5,
    up_step=0.25,
    sleep_secs=20,
)
MEASURED = replace(PUSH, mode="measured")
# The car's own keys, once at the top level (the seed's way) and once in its `vehicles` entry.
CAR_KEYS: dict[str, Any] = {
    "chargerMinAmps": 8,
    "chargerMaxAmps": 20,
    "chargerPhase": 1,
    "mode": "minsolar",
    "teslaBleProxy": "http://127.0.0.1:9",
}
# Everything that builds an escalation, a relay, alerts and a BLE road; nothing is contacted.
WIRED: dict[str, Any] = {
    "energyMonitorIp": "127.0.0.1:9",
    "safetyRelayIp": "127.0.0.1:9",
    "alertWebhook": "http://127.0.0.1:9/hook",
}


def charging(amps: int, at: float = 0.0) -> VehicleSnapshot:
    """The car online and charging at `amps`."""
    return VehicleSnapshot(VehicleState.ONLINE, ChargeState("Charging", amps, 32, amps, 1, 230), at)


def _without_clock(doc: dict[str, Any]) -> dict[str, Any]:
    """The /status document without the figures that move with the wall clock."""
    out = {**doc, "daemon": {**doc["daemon"], "uptime_secs": None}}
    # ages and wall-clock times: the two daemons are built a moment apart (a second may turn)
    out["auth"] = {k: v for k, v in doc["auth"].items() if not k.endswith(("_secs", "_at"))}
    return out


def _shape(value: Any) -> Any:
    """The keys of a JSON document, nested, without the values (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


async def _build(path: Path, *, monitor: bool) -> Daemon:
    async with aiohttp.ClientSession() as session:
        return await build_daemon(load_config(path), session, monitor=monitor)


async def test_a_seed_config_and_a_one_car_vehicles_list_build_the_same_fleet(
    write_config: Any, tmp_path: Path
) -> None:
    for monitor in (True, False):
        built = []
        for name, extra in (
            ("seed", {"teslaVehicleId": VIN_A, **CAR_KEYS}),
            ("listed", {"teslaVehicleId": ..., "vehicles": [{"vin": VIN_A, **CAR_KEYS}]}),
        ):
            (tmp_path / name).mkdir(exist_ok=True)
            path = write_config(tokenFile=str(tmp_path / name / "tokens.json"), **WIRED, **extra)
            built.append(await _build(path, monitor=monitor))
        seed, listed = built
        for daemon in built:
            (car,) = daemon.fleet.cars  # a fleet of one, either way
            assert car.vin == VIN_A
            assert car.service is daemon.service
            assert car.service.label is None  # its log lines name no car, as always
            assert daemon.roads is not None  # its own BLE road, first
            # /overload goes to the fleet's queue, whatever the number of cars
            assert api_context(daemon).overload("test")
            assert isinstance(daemon.queue.get_nowait(), Overload)
        assert seed.service.cfg == listed.service.cfg
        assert seed.service.cfg.charger_min_amps == 8  # the car's own keys, both ways
        assert seed.service.cfg.cloud_budget is None  # BLE commands are free
        assert seed.service.state.charge_mode == listed.service.state.charge_mode == "minsolar"
        assert seed.service._state_file == tmp_path / "seed" / "charger-state.json"
        assert listed.service._state_file == tmp_path / "listed" / "charger-state.json"
        assert seed.controls is not None
        assert listed.controls is not None
        assert (seed.controls.min_amps, seed.controls.max_amps) == (8, 20)
        assert (listed.controls.min_amps, listed.controls.max_amps) == (8, 20)
        assert _without_clock(seed.status().as_json()) == _without_clock(listed.status().as_json())
        assert seed.status().as_json()["vehicles"] == [
            {
                "vin": VIN_A,
                "name": None,
                "mode": "minsolar",
                "state": "unknown",
                "charging_state": None,
                "setpoint_amps": None,
                "target_amps": None,
                "driver_amps": None,
                "driver_limit_amps": None,
                "reason": seed.service.state.reason,
                "escalation": "none",
            }
        ]
        if not monitor:  # push mode: a failed cut is not seen, so there is no escalation
            assert seed.escalations() == listed.escalations() == []
            continue
        escalations = [e for d in built if (e := d.escalator) is not None]
        assert len(escalations) == 2
        assert escalations[0].cfg == escalations[1].cfg
        assert not escalations[0].cfg.judge_by_look  # one car: the meter judges its cut
        assert escalations[0].cfg.charger_min_amps == 8.0
        for daemon, escalator in zip(built, escalations, strict=True):
            assert escalator.label is None
            escalator.state = replace(escalator.state, level="charge_stop")
            problems = daemon.health()
            assert "escalation charge_stop: the car did not follow a cut" in " ".join(problems)
            assert daemon.status().as_json()["controller"]["escalation"] == "charge_stop"
            assert daemon.status().as_json()["vehicles"][0]["escalation"] == "charge_stop"


async def test_one_car_and_several_show_status_in_one_shape(
    write_config: Any, tmp_path: Path
) -> None:
    one = await _build(
        write_config(tokenFile=str(tmp_path / "tokens.json"), teslaVehicleId=VIN_A, **WIRED),
        monitor=True,
    )
    two = await _build(
        write_config(
            tokenFile=str(tmp_path / "tokens.json"),
            teslaVehicleId=...,
            vehicles=[{"vin": VIN_A}, {"vin": VIN_B, "name": "Blue"}],
            **WIRED,
        ),
        monitor=True,
    )
    assert _shape(one.status().as_json()) == _shape(two.status().as_json())
    assert [v["vin"] for v in one.status().as_json()["vehicles"]] == [VIN_A]
    assert [v["vin"] for v in two.status().as_json()["vehicles"]] == [VIN_A, VIN_B]
    assert [label for label, _ in one.escalations()] == ["the car"]
    assert [label for label, _ in two.escalations()] == [VIN_A, "Blue"]


def _car(vin: str, *, looked_up: str | None = None, priority: int = 0) -> FleetCar:
    state = replace(core.initial_state(0.0), vehicle=charging(16), setpoint=16)
    service = SimpleNamespace(state=state, cfg=MEASURED, queue=EventQueue())
    return FleetCar(
        vin,
        None,
        priority,
        service,  # type: ignore[arg-type]
        looked_up=lambda: looked_up,
    )


def test_a_fleet_of_one_hands_its_car_every_event_as_it_came() -> None:
    """Nothing to share: the car's controller sees the meter as measured (no share of the
    room, no `whole`), and the driver may name it by its numeric id or the VIN looked up."""
    car = _car("1234567", looked_up=VIN_A)
    fleet = Fleet(EventQueue(), [car], limit=29.0, pause_when_overloaded=True)
    reading = Reading(MeterReading((24.0,), (230.0,), 16.0, valid=True, at=5.0))
    fleet.route(reading)
    assert car.service.queue.get_nowait() is reading
    assert fleet.last_reading is reading.reading
    for vin in (VIN_A, "1234567", VIN_A.lower()):
        limit = DriverLimit(vin, 10)
        fleet.route(limit)
        assert car.service.queue.get_nowait() is limit
    overload = Overload(at=6.0, source="shelly")
    fleet.route(overload)
    assert car.service.queue.get_nowait() is overload
    # With a second car the same reading is shared out: each sees its part, not the meter's.
    other = _car(VIN_B)
    pair = Fleet(EventQueue(), [_car(VIN_A), other], limit=29.0, pause_when_overloaded=True)
    pair.route(reading)
    shared = other.service.queue.get_nowait()
    assert isinstance(shared, Reading)
    assert shared is not reading
    assert shared.whole is reading.reading


class _StoppableService:
    """A controller that runs until asked to stop, and may hold a push-mode cut to keep."""

    def __init__(self, *, pending: bool) -> None:
        self.state = core.initial_state(0.0)
        self.cfg = MEASURED
        self.queue: asyncio.Queue[Any] = EventQueue()
        self.in_flight = object() if pending else None
        self.pending = pending
        self.persisted = 0
        self._stop = asyncio.Event()
        self.started = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.started.set()
        await self._stop.wait()

    def persist_pending(self) -> bool:
        self.persisted += 1
        return self.pending


async def test_stopping_lets_every_cars_call_land_and_keeps_every_cars_pending_cut() -> None:
    """SIGTERM: the fleet's task ends once every controller has stopped (not after the whole
    drain), and a pending cut is kept for each car, not only the first."""
    services = [_StoppableService(pending=False), _StoppableService(pending=True)]
    cars = [
        FleetCar(vin, None, 0, svc)  # type: ignore[arg-type]
        for vin, svc in zip((VIN_A, VIN_B), services, strict=True)
    ]
    fleet = Fleet(EventQueue(), cars, limit=29.0, pause_when_overloaded=True)
    task = asyncio.create_task(fleet.run())
    for svc in services:
        await asyncio.wait_for(svc.started.wait(), timeout=30)
    assert fleet.in_flight  # the second car's call
    assert not task.done()
    fleet.request_stop()
    await asyncio.wait_for(task, timeout=30)
    assert task.exception() is None
    assert fleet.persist_pending()
    assert [s.persisted for s in services] == [1, 1]


async def test_a_controller_that_fails_ends_the_fleet_with_its_own_error() -> None:
    """The daemon's log names the error itself (as with one car before), not a group of one."""

    class Broken(_StoppableService):
        async def run(self) -> None:
            raise RuntimeError("controller task died")

    cars = [
        FleetCar(VIN_A, None, 0, _StoppableService(pending=False)),  # type: ignore[arg-type]
        FleetCar(VIN_B, None, 0, Broken(pending=False)),  # type: ignore[arg-type]
    ]
    fleet = Fleet(EventQueue(), cars, limit=29.0, pause_when_overloaded=True)
    task = asyncio.create_task(fleet.run())
    await asyncio.wait({task}, timeout=30)
    assert task.done()
    error = task.exception()
    assert isinstance(error, RuntimeError)
    assert str(error) == "controller task died"


class _ChargingCar:
    """A `Vehicle` charging at 16 A that records its commands."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, int | None]] = []

    async def snapshot(self, **_: Any) -> VehicleSnapshot:
        return charging(16, at=time.monotonic())

    async def set_charging_amps(self, amps: int) -> None:
        self.commands.append(("set_charging_amps", amps))

    async def charge_start(self) -> None:
        self.commands.append(("charge_start", None))

    async def charge_stop(self) -> None:
        self.commands.append(("charge_stop", None))


async def test_an_overload_counts_as_queued_until_the_cars_controller_takes_it() -> None:
    """/overload's `queued`: a burst is one overload until the controller has taken it, as with
    one car before the fleet (not only until the fleet has handed it on)."""
    car = _ChargingCar()
    service = ChargeService(PUSH, car, EventQueue())
    fleet = Fleet(EventQueue(), [FleetCar(VIN_A, None, 0, service)], limit=29.0,
                  pause_when_overloaded=True)  # fmt: skip
    assert fleet.overload("shelly")
    assert not fleet.overload("shelly")  # waits in the fleet's queue
    fleet.route(fleet.queue.get_nowait())
    assert not fleet.overload("shelly")  # handed on, still waiting for the controller
    assert fleet.queue.empty()
    await service.handle(service.queue.get_nowait())  # the controller takes it: cut 16 -> 8 A
    assert car.commands == [("set_charging_amps", 8)]
    assert fleet.overload("shelly")  # the next overload is a new one
