"""The simulated tesla-http-proxy over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tests.helpers.fixtures import load_fixture
from tests.helpers.tls import write_self_signed_cert

VIN = "5YJ3E1EA7KF000001"
# A JWT-shaped token: three dot-separated parts (the proxy only decodes the payload).
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0LXVzZXIiLCJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJlU0VDUkVU"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Sim:
    """A started proxy, its car, its clock and a client session pointed at it."""

    def __init__(
        self, proxy: SimulatedProxy, clock: FakeClock, base: str, session: aiohttp.ClientSession
    ) -> None:
        self.proxy = proxy
        self.car = proxy.car
        self.clock = clock
        self.base = base
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.request(
            method,
            self.base + path,
            json=json,
            headers=AUTH if headers is None else headers,
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp:
            body: Any = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            return resp.status, body, resp


async def make_sim(car: CarModel, **kwargs: Any) -> tuple[SimulatedProxy, FakeClock, str]:
    clock = FakeClock()
    proxy = SimulatedProxy(car, clock=clock, **kwargs)
    car.advance(clock.t)
    base = await proxy.start()
    return proxy, clock, base


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    proxy, clock, base = await make_sim(CarModel(vin=VIN, ramp_delay=2.0))
    try:
        async with aiohttp.ClientSession() as session:
            yield Sim(proxy, clock, base, session)
    finally:
        await proxy.stop()


async def test_health_is_ok_without_a_token(sim: Sim) -> None:
    status, body, _ = await sim.call("GET", "/health", headers={})
    assert (status, body) == (200, "OK")
    assert sim.proxy.billing.data == 0


async def test_vehicle_list_shape(sim: Sim) -> None:
    status, body, _ = await sim.call("GET", "/api/1/vehicles")
    assert status == 200
    assert {"response", "pagination", "count"} <= set(body)
    (vehicle,) = body["response"]
    assert set(load_fixture("tesla/vehicle_asleep.json")["response"]) <= set(vehicle)
    assert (vehicle["id"], vehicle["vin"], vehicle["state"]) == (100021, VIN, "online")


@pytest.mark.parametrize("id_or_vin", [VIN, "100021"])
async def test_vehicle_state_of_a_sleeping_car_does_not_wake_it(sim: Sim, id_or_vin: str) -> None:
    sim.car.state = "asleep"
    status, body, _ = await sim.call("GET", f"/api/1/vehicles/{id_or_vin}")
    fixture = load_fixture("tesla/vehicle_asleep.json")
    assert status == 200
    assert set(fixture) <= set(body)
    assert set(fixture["response"]) <= set(body["response"])
    assert body["response"]["state"] == "asleep"
    assert sim.car.state == "asleep"
    assert sim.car.wakes == 0


async def test_vehicle_data_shape_when_online(sim: Sim) -> None:
    status, body, _ = await sim.call(
        "GET", f"/api/1/vehicles/{VIN}/vehicle_data?endpoints=charge_state"
    )
    fixture = load_fixture("tesla/vehicle_data_charge_state_stopped.json")
    assert status == 200
    assert set(fixture["response"]) <= set(body["response"])
    charge = body["response"]["charge_state"]
    assert set(fixture["response"]["charge_state"]) <= set(charge)
    assert (charge["charging_state"], charge["charge_current_request"]) == ("Charging", 16)
    assert charge["timestamp"] > 1_700_000_000_000  # wall-clock milliseconds


@pytest.mark.parametrize("state", ["asleep", "offline"])
async def test_vehicle_data_is_408_when_unavailable(sim: Sim, state: str) -> None:
    sim.car.state = state  # type: ignore[assignment]
    status, body, _ = await sim.call(
        "GET", f"/api/1/vehicles/{VIN}/vehicle_data?endpoints=charge_state"
    )
    assert status == 408
    assert body == load_fixture("tesla/vehicle_data_unavailable_408.json")
    assert sim.proxy.billing.data == 1  # 408 is billed
    assert sim.car.wakes == 0


async def test_set_charging_amps_then_the_car_follows_after_the_ramp(sim: Sim) -> None:
    status, body, _ = await sim.call(
        "POST", f"/api/1/vehicles/{VIN}/command/set_charging_amps", json={"charging_amps": 10}
    )
    assert status == 200
    assert load_fixture("tesla/command_ok.json")["response"] == body["response"]
    assert set(load_fixture("tesla/command_refused.json")) <= set(body)
    assert sim.proxy.commands == [(1000.0, "set_charging_amps", {"charging_amps": 10})]
    assert sim.car.current_draw(sim.clock.t + 1.0) == 16.0
    assert sim.car.current_draw(sim.clock.t + 2.0) == 10.0
    assert sim.proxy.billing.command == 1


async def test_refused_command_matches_the_fixture(sim: Sim) -> None:
    status, body, _ = await sim.call("POST", f"/api/1/vehicles/{VIN}/command/charge_start", json={})
    assert (status, body) == (200, load_fixture("tesla/command_refused.json"))
    assert sim.proxy.billing.command == 1  # refusals are billed


async def test_command_with_numeric_id_is_404(sim: Sim) -> None:
    status, body, _ = await sim.call(
        "POST", "/api/1/vehicles/100021/command/set_charging_amps", json={"charging_amps": 8}
    )
    assert status == 404
    assert body["error"] == "expected 17-character VIN in path (do not user Fleet API ID)"
    assert body["response"] is None
    assert sim.car.request_amps == 16
    assert sim.proxy.billing.command == 0  # the proxy answered, Fleet never saw it


async def test_command_must_be_post(sim: Sim) -> None:
    status, body, _ = await sim.call("GET", f"/api/1/vehicles/{VIN}/command/charge_stop")
    assert status == 405
    assert {"response", "error", "error_description"} <= set(body)


async def test_missing_charging_amps_is_400(sim: Sim) -> None:
    status, body, _ = await sim.call(
        "POST", f"/api/1/vehicles/{VIN}/command/set_charging_amps", json={}
    )
    assert status == 400
    assert body["response"] == {"result": False, "reason": "missing charging_amps param"}
    assert sim.proxy.billing.command == 0


async def test_command_to_a_sleeping_car_is_500_unbilled(sim: Sim) -> None:
    sim.car.state = "asleep"
    status, body, _ = await sim.call(
        "POST", f"/api/1/vehicles/{VIN}/command/set_charging_amps", json={"charging_amps": 8}
    )
    assert status == 500
    assert body == load_fixture("tesla/vehicle_data_unavailable_408.json")
    assert sim.proxy.billing.command == 0
    assert sim.proxy.billing.unbilled == 1
    assert sim.car.wakes == 0


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "client did not provide an OAuth token"),
        ({"Authorization": "Bearer "}, "client did not provide an OAuth token"),
        ({"Authorization": "Bearer not-a-jwt"}, "client provided malformed OAuth token"),
        ({"Authorization": "Basic YTpi"}, "client did not provide an OAuth token"),
    ],
)
async def test_proxy_rejects_bad_authorization_with_403(
    sim: Sim, headers: dict[str, str], error: str
) -> None:
    status, body, _ = await sim.call("GET", f"/api/1/vehicles/{VIN}", headers=headers)
    assert status == 403
    assert body == {"response": None, "error": error, "error_description": ""}
    assert sim.proxy.billing.data == 0


async def test_rejected_token_is_401_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def validator(token: str) -> bool:
        seen.append(token)
        return False

    proxy, _, base = await make_sim(CarModel(vin=VIN), token_validator=validator)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/api/1/vehicles/{VIN}/command/charge_stop", json={}, headers=AUTH
            ) as resp,
        ):
            status, body = resp.status, await resp.json()
    finally:
        await proxy.stop()
    assert status == 401
    assert body["error"] == "token expired (401)"
    assert TOKEN not in str(body)
    assert seen == [TOKEN]
    assert proxy.expired_token_requests == 1
    assert proxy.commands == []
    assert TOKEN not in caplog.text


async def test_accepted_token_passes(sim: Sim) -> None:
    sim.proxy.token_validator = lambda token: token == TOKEN
    status, _, _ = await sim.call("GET", f"/api/1/vehicles/{VIN}")
    assert status == 200
    assert sim.proxy.expired_token_requests == 0


async def test_injected_429_carries_retry_after_and_is_billed(sim: Sim) -> None:
    sim.proxy.inject(429, 2, retry_after=7, paths="/command/")
    path = f"/api/1/vehicles/{VIN}/command/set_charging_amps"
    for _ in range(2):
        status, body, resp = await sim.call("POST", path, json={"charging_amps": 8})
        assert status == 429
        assert resp.headers["Retry-After"] == "7"
        assert {"response", "error", "error_description"} <= set(body)
    assert sim.car.request_amps == 16  # the car never saw it
    # Reads were not matched by `paths`, and the fault is used up for commands.
    assert (await sim.call("GET", f"/api/1/vehicles/{VIN}"))[0] == 200
    assert (await sim.call("POST", path, json={"charging_amps": 8}))[0] == 200
    assert sim.proxy.billing.command == 3
    assert len(sim.proxy.commands) == 3


async def test_injected_429_has_a_default_retry_after(sim: Sim) -> None:
    sim.proxy.inject(429)
    status, _, resp = await sim.call("GET", f"/api/1/vehicles/{VIN}")
    assert status == 429
    assert float(resp.headers["Retry-After"]) > 0


@pytest.mark.parametrize("status_code", [500, 502, 503, 504])
async def test_injected_5xx_is_not_billed(sim: Sim, status_code: int) -> None:
    sim.proxy.inject(status_code)
    status, body, _ = await sim.call(
        "GET", f"/api/1/vehicles/{VIN}/vehicle_data?endpoints=charge_state"
    )
    assert status == status_code
    assert body["response"] is None
    assert sim.proxy.billing.data == 0
    assert sim.proxy.billing.unbilled == 1
    assert (await sim.call("GET", f"/api/1/vehicles/{VIN}/vehicle_data"))[0] == 200
    assert sim.proxy.billing.data == 1


async def test_inject_validates_its_arguments(sim: Sim) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        sim.proxy.inject(200)
    with pytest.raises(ValueError, match="count"):
        sim.proxy.inject(503, 0)


async def test_wake_up_is_billed_as_a_wake(sim: Sim) -> None:
    sim.car.state = "asleep"
    status, body, _ = await sim.call("POST", f"/api/1/vehicles/{VIN}/wake_up")
    assert status == 200
    assert body["response"]["state"] == "online"
    assert sim.car.wakes == 1
    assert sim.proxy.billing.wake == 1
    assert sim.proxy.billing.cost() == pytest.approx(0.02)


async def test_billing_by_category(sim: Sim) -> None:
    await sim.call("GET", "/api/1/vehicles")
    await sim.call("GET", f"/api/1/vehicles/{VIN}")
    await sim.call("GET", f"/api/1/vehicles/{VIN}/vehicle_data?endpoints=charge_state")
    await sim.call("POST", f"/api/1/vehicles/{VIN}/command/charge_stop", json={})
    await sim.call("GET", "/health", headers={})
    await sim.call("GET", "/api/1/vehicles", headers={})  # 403 from the proxy itself
    assert (sim.proxy.billing.data, sim.proxy.billing.command, sim.proxy.billing.wake) == (3, 1, 0)
    assert sim.proxy.billing.cost() == pytest.approx(3 * 0.002 + 0.001)
    statuses = [(method, status) for _, method, _, status in sim.proxy.requests]
    assert statuses == [("GET", 200)] * 3 + [("POST", 200), ("GET", 200), ("GET", 403)]


async def test_unknown_vehicle_is_404(sim: Sim) -> None:
    status, body, _ = await sim.call("GET", "/api/1/vehicles/5YJ3E1EA7KF999999")
    assert status == 404
    assert body["response"] is None


async def test_wait_for_command_returns_when_it_arrives(sim: Sim) -> None:
    waiter = asyncio.create_task(sim.proxy.wait_for_command("charge_stop", timeout=5.0))
    await sim.call(
        "POST", f"/api/1/vehicles/{VIN}/command/set_charging_amps", json={"charging_amps": 9}
    )
    assert not waiter.done()
    await sim.call("POST", f"/api/1/vehicles/{VIN}/command/charge_stop", json={})
    t, name, body = await waiter
    assert (t, name, body) == (1000.0, "charge_stop", {})
    # Already there: returns at once; `since` skips what was seen.
    assert (await sim.proxy.wait_for_command(timeout=1.0))[1] == "set_charging_amps"
    with pytest.raises(TimeoutError):
        await sim.proxy.wait_for_command(since=len(sim.proxy.commands), timeout=0.05)


async def test_clock_drives_the_car_to_sleep(sim: Sim) -> None:
    await sim.call("POST", f"/api/1/vehicles/{VIN}/command/charge_stop", json={})
    sim.clock.t += 599.0
    _, body, _ = await sim.call("GET", f"/api/1/vehicles/{VIN}")
    assert body["response"]["state"] == "online"
    sim.clock.t += 1.0
    _, body, _ = await sim.call("GET", f"/api/1/vehicles/{VIN}")
    assert body["response"]["state"] == "asleep"
    assert sim.car.wakes == 0


async def test_serves_https_with_a_given_ssl_context(tmp_path: Path) -> None:
    """Like the real proxy (HTTPS only, self-signed cert for localhost)."""
    cert_file, key_file = write_self_signed_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    proxy = SimulatedProxy(CarModel(vin=VIN))
    base = await proxy.start(ssl=server_ctx)
    try:
        assert base.startswith("https://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/health", ssl=client_ctx) as resp,
        ):
            assert (resp.status, await resp.text()) == (200, "OK")
    finally:
        await proxy.stop()
