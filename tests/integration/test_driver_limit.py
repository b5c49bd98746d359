"""The driver's ceiling set through the API or Home Assistant (DriverLimit), both modes.

It acts like the driver's own setting in the app: lowers at once, raises by the normal rules,
survives the next look at the car and a restart, and the driver's next app change wins.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import DriverLimit, Event, ModeChange, Overload
from tesla_smart_charger.httpapi.server import ApiContext, build_app
from tesla_smart_charger.runtime.driver import DriverControls, parse_driver_limit
from tesla_smart_charger.runtime.queue import EventQueue
from tesla_smart_charger.runtime.status import controller_view
from tests.helpers.control import MEASURED, PUSH, Run, asleep, charging, reading
from tests.helpers.service import FakeCar, make
from tests.helpers.status import sample_status

VIN = "5YJ3E7EB2KF000001"


def limit(amps: int) -> DriverLimit:
    return DriverLimit(VIN, amps)


def push_charging(amps: int = 16) -> Run:
    run = Run(PUSH)
    run.feed(Overload(at=0.0), 0.0)
    run.feed(core.VehicleUpdate(charging(amps)), 0.1)  # halves to amps/2
    run.feed(core.CommandDone("set_charging_amps", amps // 2), 0.2)
    return run


# --- push mode ----------------------------------------------------------------------------


def test_push_limit_below_the_car_lowers_at_once() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    actions = run.feed(limit(10), 1.0)
    assert actions == (core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),)
    assert (run.state.driver_amps, run.state.driver_pinned) == (10, True)


def test_push_limit_before_any_look_looks_then_lowers() -> None:
    run = Run(PUSH)
    actions = run.feed(limit(10), 1.0)
    assert actions == (core.RefreshVehicle("driver's ceiling changed: looking at the car"),)
    assert run.feed(core.VehicleUpdate(charging(16, at=1.1)), 1.1) == (
        core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),
    )
    assert run.state.driver_amps == 10


def test_push_limit_survives_the_next_look_and_is_never_exceeded() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(limit(10), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 10), 1.2)
    run.feed(core.VehicleUpdate(charging(10, at=30.0)), 30.0)  # the car now says 10 A
    assert (run.state.driver_amps, run.state.driver_pinned) == (10, True)
    for t in range(31, 200, 10):
        run.feed(core.Tick(), float(t))
    assert run.amps_sent() == [10]
    # At the ceiling there is nothing to wait for: no deadline that would spin the loop.
    deadline = core.next_deadline(run.state, PUSH)
    assert deadline is None or deadline > 200.0


def test_push_limit_above_raises_only_after_quiet_periods_and_stays() -> None:
    run = push_charging(16)  # throttled to 8 A at 0.1, the driver's 16 A remembered
    assert run.feed(limit(12), 1.0) == ()  # no raise at once
    run.feed(core.Tick(), 20.0)
    assert run.amps_sent() == [8]  # 20 s of quiet since the cut not yet over
    run.feed(core.Tick(), 20.1)
    run.feed(core.CommandDone("set_charging_amps", 10), 20.2)
    run.feed(core.Tick(), 40.2)
    run.feed(core.CommandDone("set_charging_amps", 12), 40.3)
    run.feed(core.Tick(), 60.3)
    run.feed(core.Tick(), 80.3)
    assert run.amps_sent() == [8, 10, 12]
    assert (run.state.driver_amps, run.state.driver_pinned) == (12, True)  # kept, not forgotten


def test_last_writer_wins_app_then_api_then_app() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(limit(10), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 10), 1.1)
    # The driver sets 14 A in the app afterwards: their change wins.
    run.feed(core.VehicleUpdate(charging(14, at=50.0)), 50.0)
    assert (run.state.driver_amps, run.state.driver_pinned) == (14, False)
    assert run.amps_sent() == [10]
    # And a later ceiling wins again.
    assert run.feed(limit(8), 60.0) == (core.SetAmps(8, "driver's ceiling: lowering 14 -> 8 A"),)


def test_push_limit_while_rate_limited_goes_out_when_the_wait_ends() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(core.VehicleUnavailable("rate_limited", "429", retry_after=30.0), 1.0)
    assert run.feed(limit(10), 2.0) == ()
    assert "sending it when the wait ends" in run.state.reason
    assert core.next_deadline(run.state, PUSH) == pytest.approx(31.0)
    assert run.feed(core.Tick(), 31.0) == (
        core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),
    )


def test_limit_for_a_sleeping_car_is_sent_when_it_is_next_seen_online() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(asleep()), 0.0)
    run.feed(core.VehicleUpdate(charging(16, at=0.5)), 0.5)
    run.feed(core.VehicleUpdate(asleep(at=1.0)), 1.0)
    assert run.feed(limit(10), 2.0) == ()  # never woken
    actions = run.feed(core.VehicleUpdate(charging(16, at=100.0)), 100.0)
    assert actions == (core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),)


def test_a_refused_limit_is_not_retried_in_a_tight_loop() -> None:
    run = Run(PUSH)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(limit(10), 1.0)
    run.feed(core.VehicleUnavailable("refused", "busy", command=True), 1.1)
    assert run.state.setpoint == 16
    deadline = core.next_deadline(run.state, PUSH)
    assert deadline is not None
    assert deadline >= 1.0 + core.LIMIT_RETRY_SECS - 1e-9
    assert run.feed(core.Tick(), 3.0) == ()
    assert run.feed(core.Tick(), deadline) == (
        core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),
    )


# --- measured mode ------------------------------------------------------------------------


def test_measured_limit_lowers_at_once_and_caps_every_raise() -> None:
    run = Run(MEASURED)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(reading(5 + 16, at=0.5), 0.5)
    assert run.feed(limit(10), 1.0) == (core.SetAmps(10, "driver's ceiling: lowering 16 -> 10 A"),)
    run.feed(core.CommandDone("set_charging_amps", 10), 1.1)
    for t in range(2, 100):
        run.feed(reading(5 + 10, at=t), float(t))  # plenty of room
    assert run.amps_sent() == [10]


def test_measured_limit_raised_waits_for_room_to_last() -> None:
    run = Run(MEASURED)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(limit(10), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 10), 1.1)
    run.feed(reading(5 + 10, at=10.0), 10.0)
    assert run.feed(limit(14), 11.0) == ()
    for t in range(12, 31):
        run.feed(reading(5 + 10, at=t), float(t))
    assert run.amps_sent() == [10]  # 20 s of room not yet over
    run.feed(reading(5 + 10, at=32.0), 32.0)
    assert run.amps_sent() == [10, 14]


def test_measured_first_look_keeps_a_limit_set_before_it() -> None:
    run = Run(MEASURED)
    run.feed(limit(10), 0.0)  # before the first look: one look, then the ceiling applies
    run.feed(core.VehicleUpdate(charging(16)), 0.5)
    assert run.state.driver_amps == 10
    assert run.amps_sent() == [10]


def test_measured_app_change_replaces_the_limit() -> None:
    run = Run(MEASURED)
    run.feed(core.VehicleUpdate(charging(16)), 0.0)
    run.feed(limit(10), 1.0)
    run.feed(core.CommandDone("set_charging_amps", 10), 1.1)
    run.feed(core.VehicleUpdate(charging(13, at=60.0)), 60.0)
    assert (run.state.driver_amps, run.state.driver_pinned) == (13, False)


def test_limit_events_coalesce_in_the_queue() -> None:
    queue = EventQueue()
    for amps in (12, 11, 10):
        queue.put_nowait(limit(amps))
    assert queue.qsize() == 1
    assert queue.get_nowait() == limit(10)


# --- persistence (the shell) --------------------------------------------------------------


async def test_limit_is_kept_across_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "charger-state.json"
    clock = [1.0]
    car = FakeCar(16)
    service = make(car, state_file, clock)
    await service.handle(reading(10 + 16, at=1.0))  # first look: 16 A
    clock[0] = 2.0
    await service.handle(limit(10))
    assert car.sent == [10]
    saved = json.loads(state_file.read_text())
    assert saved == {"setpoint": 10, "driver_amps": 10, "driver_limit": True}
    restarted = make(car, state_file, [100.0])
    assert (restarted.state.driver_amps, restarted.state.driver_pinned) == (10, True)
    assert controller_view(restarted, "none").driver_limit_amps == 10


# --- the one validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(10, 10), (10.0, 10), ("6", 6), (" 16 ", 16), (b"12", 12)]
)
def test_parse_driver_limit_accepts(value: object, expected: int) -> None:
    assert parse_driver_limit(value, min_amps=6, max_amps=16) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "amps: expected a whole number"),
        (None, "amps: expected a whole number"),
        ([10], "amps: expected a whole number of amps, got list"),
        ("ten", "amps: 'ten' is not a number"),
        (10.5, "amps: 10.5 is not a whole number of amps from 6 to 16"),
        (5, "from 6 to 16"),
        (17, "from 6 to 16"),
        ("inf", "from 6 to 16"),
    ],
)
def test_parse_driver_limit_rejects_naming_the_field(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        parse_driver_limit(value, min_amps=6, max_amps=16)


def test_controls_queue_known_cars_and_modes() -> None:
    queue: asyncio.Queue[Event] = EventQueue()
    controls = DriverControls(queue, lambda: (VIN, "1234"), min_amps=6, max_amps=16)
    assert controls.set_driver_limit(VIN.lower(), 10) is None
    assert queue.get_nowait() == limit(10)
    assert controls.set_driver_limit("1234", 11) is None
    assert queue.get_nowait() == DriverLimit("1234", 11)
    assert controls.set_driver_limit("OTHER", 10) == "unknown vehicle 'OTHER'"
    assert controls.set_driver_limit(VIN, 40) is not None
    assert controls.set_mode(VIN, "Solar ") is None
    assert queue.get_nowait() == ModeChange(VIN, "solar")
    refused = controls.set_mode(VIN, "turbo")
    assert refused is not None
    assert "'turbo' is not one of fast, solar, minsolar" in refused
    assert controls.set_mode("OTHER", "fast") == "unknown vehicle 'OTHER'"
    assert queue.empty()


# --- POST /vehicles/{vin}/limit -----------------------------------------------------------


async def api(token: str | None = None) -> tuple[TestClient[web.Request, web.Application], Any]:
    queue: asyncio.Queue[Event] = EventQueue()
    controls = DriverControls(queue, lambda: (VIN,), min_amps=6, max_amps=16)
    ctx = ApiContext(lambda _: True, sample_status, dict, list, api_token=token, controls=controls)
    client = TestClient(TestServer(build_app(ctx), host="127.0.0.1"))
    await client.start_server()
    return client, queue


async def test_http_limit_json_and_query() -> None:
    client, queue = await api()
    try:
        r = await client.post(f"/vehicles/{VIN}/limit", json={"amps": 10})
        assert r.status == 202
        assert await r.json() == {"accepted": True, "vin": VIN, "amps": 10}
        assert queue.get_nowait() == limit(10)
        r = await client.post(f"/vehicles/{VIN.lower()}/limit?amps=12")
        assert r.status == 202
        assert queue.get_nowait() == limit(12)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        (f"/vehicles/{VIN}/limit", None, 400, "amps: required"),
        (f"/vehicles/{VIN}/limit", b"{", 400, "body: not JSON"),
        (f"/vehicles/{VIN}/limit", b"[10]", 400, "body: expected a JSON object"),
        (f"/vehicles/{VIN}/limit", b'{"amp": 10}', 400, "amps: required"),
        (f"/vehicles/{VIN}/limit", b'{"amps": "x"}', 400, "amps: 'x' is not a number"),
        (f"/vehicles/{VIN}/limit", b'{"amps": 40}', 400, "amps: 40 is not a whole number"),
        (f"/vehicles/{VIN}/limit?amps=5", None, 400, "from 6 to 16"),
        ("/vehicles/5YJ3E7EB0KF999999/limit?amps=10", None, 404, "unknown vehicle"),
    ],
)
async def test_http_limit_rejects(path: str, body: bytes | None, status: int, words: str) -> None:
    client, queue = await api()
    try:
        r = await client.post(path, data=body)
        assert r.status == status
        assert words in (await r.json())["error"]
        assert queue.empty()
    finally:
        await client.close()


async def test_http_limit_needs_the_token_and_refuses_cross_site() -> None:
    client, queue = await api()
    try:
        r = await client.post(f"/vehicles/{VIN}/limit?amps=10", headers={"Origin": "http://evil"})
        assert r.status == 403
    finally:
        await client.close()
    client, queue = await api(token="t0ken-SECRET")
    try:
        r = await client.post(f"/vehicles/{VIN}/limit?amps=10")
        assert r.status == 401
        r = await client.post(
            f"/vehicles/{VIN}/limit?amps=10", headers={"Authorization": "Bearer t0ken-SECRET"}
        )
        assert r.status == 202
        assert queue.get_nowait() == limit(10)
    finally:
        await client.close()
