"""Tesla client against mocked proxy replies (aioresponses), shapes from tests/fixtures/tesla/."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr
from tenacity import wait_none
from yarl import URL

from tesla_smart_charger import const
from tesla_smart_charger.car.fleet_api import (
    ApiCallCounter,
    StaticTokenSource,
    TeslaClient,
    is_vin,
    parse_charge_state,
    parse_retry_after,
    ssl_context_for,
)
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import (
    CommandRefused,
    ConfigError,
    RateLimited,
    TeslaAuthError,
    TeslaProtocolError,
    TeslaTransientError,
    VehicleAsleep,
)
from tests.helpers.fixtures import load_fixture
from tests.helpers.tesla import NEW_TOKEN, TOKEN, VIN, FakeTokens

BASE = "https://localhost:4443"
VEHICLE_URL = f"{BASE}/api/1/vehicles/{VIN}"
DATA_URL = f"{VEHICLE_URL}/vehicle_data?endpoints=charge_state"
AMPS_URL = f"{VEHICLE_URL}/command/set_charging_amps"
START_URL = f"{VEHICLE_URL}/command/charge_start"
LIST_URL = f"{BASE}/api/1/vehicles?page=1&per_page=100"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def vehicle_reply(state: str) -> dict[str, Any]:
    """`GET /api/1/vehicles/{vin}` in the recorded shape, with the given state."""
    reply: dict[str, Any] = copy.deepcopy(load_fixture("tesla/vehicle_asleep.json"))
    reply["response"]["state"] = state
    return reply


def urls(mocked: aioresponses) -> list[str]:
    """Every requested URL, once per request."""
    return [str(url) for (_, url), calls in mocked.requests.items() for _ in calls]


def calls(mocked: aioresponses, method: str, url: str) -> list[Any]:
    """The recorded calls for one method and URL."""
    result: list[Any] = mocked.requests.get((method, URL(url)), [])
    return result


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    """aioresponses, plus the one rule no test may break: nothing ever calls wake_up."""
    with aioresponses() as m:
        yield m
        assert not [u for u in urls(m) if "wake_up" in u]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def counter() -> ApiCallCounter:
    return ApiCallCounter(clock=FakeClock(1_700_000_000.0))


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def client(
    session: aiohttp.ClientSession, tokens: FakeTokens, counter: ApiCallCounter, clock: FakeClock
) -> TeslaClient:
    return TeslaClient(
        session, BASE + "/", VIN, tokens, counter, clock=clock, retry_wait=wait_none()
    )


# --- snapshot --------------------------------------------------------------------------------


async def test_snapshot_online_and_charging(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter, clock: FakeClock
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("online"))
    mocked.get(DATA_URL, payload=load_fixture("tesla/charge_state_charging.json"))
    clock.now = 1234.5

    snap = await client.snapshot()

    assert snap.state is VehicleState.ONLINE
    assert snap.charging
    assert snap.at == 1234.5
    assert snap.charge is not None
    assert snap.charge.charging_state == "Charging"
    assert snap.charge.charge_current_request == 24
    assert snap.charge.charge_current_request_max == 25
    assert snap.charge.charger_actual_current == 24
    assert (snap.charge.charger_phases, snap.charge.charger_voltage) == (1, 226)
    kwargs = calls(mocked, "GET", DATA_URL)[0].kwargs
    assert kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert kwargs["headers"]["Content-Type"] == "application/json"
    assert kwargs["timeout"].total == const.TESLA_TOTAL_TIMEOUT
    assert kwargs["timeout"].connect == const.TESLA_CONNECT_TIMEOUT
    assert counter.by_outcome()["data"] == {"ok": 2}


async def test_snapshot_stopped_keeps_null_phases(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("online"))
    mocked.get(DATA_URL, payload=load_fixture("tesla/vehicle_data_charge_state_stopped.json"))
    snap = await client.snapshot()
    assert snap.charge is not None
    assert snap.charge.charging_state == "Stopped"
    assert snap.charge.charger_phases is None
    assert not snap.charging


async def test_snapshot_asleep_makes_exactly_one_request(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.get(VEHICLE_URL, payload=load_fixture("tesla/vehicle_asleep.json"))
    snap = await client.snapshot()
    assert snap.state is VehicleState.ASLEEP
    assert snap.charge is None
    assert urls(mocked) == [VEHICLE_URL]


async def test_snapshot_without_charge_state_skips_vehicle_data(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("online"))
    snap = await client.snapshot(with_charge_state=False)
    assert (snap.state, snap.charge) == (VehicleState.ONLINE, None)
    assert urls(mocked) == [VEHICLE_URL]


async def test_known_online_skips_the_state_call(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(DATA_URL, payload=load_fixture("tesla/charge_state_charging.json"))
    mocked.get(
        DATA_URL, status=408, payload=load_fixture("tesla/vehicle_data_unavailable_408.json")
    )
    snap = await client.snapshot(known_online=True)
    assert snap.charging
    asleep = await client.snapshot(known_online=True)
    assert (asleep.state, asleep.charge) == (VehicleState.ASLEEP, None)
    assert urls(mocked) == [DATA_URL, DATA_URL]
    assert counter.counts()["data"] == 2


async def test_408_on_vehicle_data_means_asleep(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("online"))
    mocked.get(
        DATA_URL, status=408, payload=load_fixture("tesla/vehicle_data_unavailable_408.json")
    )
    snap = await client.snapshot()
    assert (snap.state, snap.charge) == (VehicleState.ASLEEP, None)
    assert len(urls(mocked)) == 2  # no retry
    assert counter.by_outcome()["data"] == {"asleep": 1, "ok": 1}
    assert counter.cost_usd() == pytest.approx(2 * 0.002)  # the 408 is billed


@pytest.mark.parametrize(
    ("charge_state", "message"),
    [
        ({"charge_current_request": 16, "charger_actual_current": 0}, "charging_state missing"),
        (
            {
                "charging_state": "Charging",
                "charge_current_request": "x",
                "charger_actual_current": 1,
            },
            "response.charge_state.charge_current_request: expected a number",
        ),
    ],
)
async def test_missing_or_bad_field_names_it(
    client: TeslaClient, mocked: aioresponses, charge_state: dict[str, Any], message: str
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("online"))
    mocked.get(DATA_URL, payload={"response": {"charge_state": charge_state}})
    with pytest.raises(TeslaProtocolError, match=message):
        await client.snapshot()


async def test_malformed_json_is_a_protocol_error(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(VEHICLE_URL, body="<html>oops", content_type="text/html")
    with pytest.raises(TeslaProtocolError, match="not a JSON object"):
        await client.snapshot()
    assert counter.by_outcome()["data"] == {"error": 1}


def test_parse_charge_state_reads_the_recorded_fixture() -> None:
    charge = parse_charge_state(load_fixture("tesla/vehicle_data_charge_state_stopped.json"))
    assert (charge.charge_current_request, charge.charge_current_request_max) == (16, 16)
    assert charge.charger_voltage == 2


async def test_unknown_vehicle_state_is_a_protocol_error(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.get(VEHICLE_URL, payload=vehicle_reply("hibernating"))
    with pytest.raises(TeslaProtocolError, match=r"response\.state"):
        await client.snapshot()


# --- commands --------------------------------------------------------------------------------


async def test_set_charging_amps_body_and_path(
    client: TeslaClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.post(AMPS_URL, payload=load_fixture("tesla/command_ok.json"))
    with caplog.at_level(logging.DEBUG, logger="tesla_smart_charger.car.fleet_api"):
        await client.set_charging_amps(8)
    (call,) = calls(mocked, "POST", AMPS_URL)
    assert call.kwargs["json"] == {"charging_amps": 8}
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert "set_charging_amps amps=8 result=ok" in caplog.text


@pytest.mark.parametrize(("amps", "sends"), [(0, 2), (1, 2), (4, 2), (5, 1), (16, 1)])
async def test_below_5_amps_is_sent_twice(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter, amps: int, sends: int
) -> None:
    mocked.post(AMPS_URL, payload=load_fixture("tesla/command_ok.json"), repeat=True)
    await client.set_charging_amps(amps)
    sent = calls(mocked, "POST", AMPS_URL)
    assert [c.kwargs["json"] for c in sent] == [{"charging_amps": amps}] * sends
    assert counter.counts()["command"] == sends


async def test_below_5_amps_second_send_only_after_success(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.post(AMPS_URL, payload=load_fixture("tesla/command_refused.json"), repeat=True)
    with pytest.raises(CommandRefused):
        await client.set_charging_amps(3)
    assert len(calls(mocked, "POST", AMPS_URL)) == 1


async def test_charge_start_and_stop_send_empty_bodies(
    client: TeslaClient, mocked: aioresponses
) -> None:
    mocked.post(START_URL, payload=load_fixture("tesla/command_ok.json"))
    mocked.post(f"{VEHICLE_URL}/command/charge_stop", payload=load_fixture("tesla/command_ok.json"))
    await client.charge_start()
    await client.charge_stop()
    assert [c.kwargs["json"] for c in calls(mocked, "POST", START_URL)] == [{}]
    assert len(calls(mocked, "POST", f"{VEHICLE_URL}/command/charge_stop")) == 1


def refused_with(field: str) -> dict[str, Any]:
    return {"response": {"result": False, field: "car could not execute command: is_charging"}}


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (200, load_fixture("tesla/command_refused.json")),
        (200, refused_with("string")),  # the proxy's field name before v0.3.4
        (400, refused_with("reason")),
    ],
)
async def test_refusal_raises_command_refused_with_reason(
    client: TeslaClient,
    mocked: aioresponses,
    counter: ApiCallCounter,
    caplog: pytest.LogCaptureFixture,
    *,
    status: int,
    payload: dict[str, Any],
) -> None:
    mocked.post(START_URL, status=status, payload=payload, repeat=True)
    with (
        caplog.at_level(logging.INFO, logger="tesla_smart_charger.car.fleet_api"),
        pytest.raises(CommandRefused) as info,
    ):
        await client.charge_start()
    assert info.value.command == "charge_start"
    assert info.value.reason == "car could not execute command: is_charging"
    assert len(calls(mocked, "POST", START_URL)) == 1  # not retried
    assert counter.by_outcome()["command"] == {"refused": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is_charging" in r.getMessage() for r in warnings)


async def test_command_to_sleeping_car_via_proxy_500_is_asleep(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    body = load_fixture("tesla/vehicle_data_unavailable_408.json")
    mocked.post(AMPS_URL, status=500, payload=body, repeat=True)
    with pytest.raises(VehicleAsleep):
        await client.set_charging_amps(10)
    assert len(calls(mocked, "POST", AMPS_URL)) == 1
    assert counter.by_outcome()["command"] == {"asleep": 1}
    assert counter.cost_usd() == 0.0  # 5xx is not billed


async def test_other_4xx_is_a_protocol_error(client: TeslaClient, mocked: aioresponses) -> None:
    mocked.post(AMPS_URL, status=404, payload={"response": None, "error": "expected VIN"})
    with pytest.raises(TeslaProtocolError, match="HTTP 404: expected VIN"):
        await client.set_charging_amps(10)


async def test_negative_amps_are_rejected_before_sending(
    client: TeslaClient, mocked: aioresponses
) -> None:
    with pytest.raises(ValueError, match="negative"):
        await client.set_charging_amps(-1)
    assert urls(mocked) == []


# --- VIN resolution --------------------------------------------------------------------------


def vehicle_list(*vehicles: dict[str, Any], next_page: int | None = None) -> dict[str, Any]:
    return {
        "response": list(vehicles),
        "pagination": {"previous": None, "next": next_page, "current": 1, "per_page": 100},
        "count": len(vehicles),
    }


@pytest.mark.parametrize("vehicle_id", ["100021", "99999"])
async def test_numeric_id_is_resolved_to_vin_exactly_once(
    session: aiohttp.ClientSession,
    mocked: aioresponses,
    counter: ApiCallCounter,
    vehicle_id: str,
) -> None:
    car = load_fixture("tesla/vehicle_asleep.json")["response"]
    other = {**car, "id": 1, "id_s": "1", "vehicle_id": 2, "vin": "5YJ3E1EA7KF000001"}
    mocked.get(LIST_URL, payload=vehicle_list(other, car))
    mocked.get(VEHICLE_URL, payload=load_fixture("tesla/vehicle_asleep.json"), repeat=True)
    mocked.post(AMPS_URL, payload=load_fixture("tesla/command_ok.json"), repeat=True)
    client = TeslaClient(session, BASE, vehicle_id, FakeTokens(), counter, retry_wait=wait_none())
    assert client.vin is None

    assert list(await asyncio.gather(client.resolve_vin(), client.resolve_vin())) == [VIN, VIN]
    await client.snapshot()
    await client.snapshot()
    await client.set_charging_amps(12)

    assert client.vin == VIN
    assert len(calls(mocked, "GET", LIST_URL)) == 1
    assert len(calls(mocked, "POST", AMPS_URL)) == 1  # the command used the VIN


async def test_vin_lookup_follows_pages(
    session: aiohttp.ClientSession, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    car = load_fixture("tesla/vehicle_asleep.json")["response"]
    mocked.get(LIST_URL, payload=vehicle_list(next_page=2))
    mocked.get(f"{BASE}/api/1/vehicles?page=2&per_page=100", payload=vehicle_list(car))
    client = TeslaClient(session, BASE, "100021", FakeTokens(), counter, retry_wait=wait_none())
    assert await client.resolve_vin() == VIN
    assert counter.counts()["data"] == 2


async def test_unknown_numeric_id_names_the_key(
    session: aiohttp.ClientSession, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(
        LIST_URL, payload=vehicle_list(load_fixture("tesla/vehicle_asleep.json")["response"])
    )
    client = TeslaClient(session, BASE, "4242", FakeTokens(), counter, retry_wait=wait_none())
    with pytest.raises(TeslaProtocolError, match="teslaVehicleId"):
        await client.set_charging_amps(10)
    assert not [u for u in urls(mocked) if "/command/" in u]


async def test_unknown_numeric_id_is_a_fault_paced_by_the_cap(
    session: aiohttp.ClientSession, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(
        LIST_URL,
        payload=vehicle_list(load_fixture("tesla/vehicle_asleep.json")["response"]),
        repeat=True,
    )
    client = TeslaClient(session, BASE, "4242", FakeTokens(), counter, retry_wait=wait_none())
    with pytest.raises(TeslaProtocolError, match="vehicle 4242 is not on this account") as first:
        await client.snapshot()
    assert first.value.retry_after >= 60.0  # the policy's cap: a fault
    assert client.unknown_vehicle is not None
    assert "vehicle 4242 is not on this account" in client.unknown_vehicle
    assert client.policy.state_now() == "down"
    for _ in range(10):  # ten more readings that want a look: none is sent
        with pytest.raises((TeslaProtocolError, TeslaTransientError), match="4242"):
            await client.snapshot()
    assert len(calls(mocked, "GET", LIST_URL)) == 1
    assert counter.counts()["data"] == 1


def test_is_vin() -> None:
    assert is_vin(VIN)
    assert not is_vin("12345678901234567")  # the seed's placeholder is a numeric id
    assert not is_vin("100021")


async def test_vin_is_used_as_is_without_lookup(client: TeslaClient, mocked: aioresponses) -> None:
    assert client.vin == VIN
    assert await client.resolve_vin() == VIN
    assert urls(mocked) == []


# --- rate limits -----------------------------------------------------------------------------


async def test_429_backs_off_without_touching_the_network(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter, clock: FakeClock
) -> None:
    mocked.post(AMPS_URL, status=429, headers={"Retry-After": "30"}, payload={"response": None})
    with pytest.raises(RateLimited) as info:
        await client.set_charging_amps(10)
    assert info.value.retry_after == 30.0
    assert client.rate_limited_until == clock.now + 30.0
    assert counter.by_outcome()["command"] == {"rate_limited": 1}
    assert counter.cost_usd() == pytest.approx(0.001)  # a 429 is billed

    clock.now += 10.0
    with pytest.raises(RateLimited) as second:
        await client.snapshot()
    assert second.value.retry_after == pytest.approx(20.0)
    assert len(urls(mocked)) == 1  # nothing sent inside the window
    assert counter.counts() == {"data": 0, "command": 1, "wake": 0}

    clock.now += 21.0
    mocked.get(VEHICLE_URL, payload=load_fixture("tesla/vehicle_asleep.json"))
    assert (await client.snapshot()).state is VehicleState.ASLEEP
    assert client.rate_limited_until == 0.0


@pytest.mark.parametrize(
    ("retry_after", "reset", "expected"),
    [
        ("45", None, 45.0),
        ("Thu, 01 Jan 2026 00:02:00 GMT", None, 120.0),
        (None, "90", 90.0),
        ("garbage", "12", 12.0),
        (None, None, const.TESLA_DEFAULT_RETRY_AFTER),
        ("999999", None, const.TESLA_MAX_RETRY_AFTER),
        ("0", None, 1.0),
    ],
)
def test_parse_retry_after(retry_after: str | None, reset: str | None, expected: float) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after(retry_after, reset, now) == pytest.approx(expected)


# --- transient faults and retries ------------------------------------------------------------


async def test_5xx_is_retried_then_succeeds(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(VEHICLE_URL, status=502, body="Bad Gateway")
    mocked.get(VEHICLE_URL, exception=aiohttp.ClientConnectionError("reset by peer"))
    mocked.get(VEHICLE_URL, payload=load_fixture("tesla/vehicle_asleep.json"))
    snap = await client.snapshot()
    assert snap.state is VehicleState.ASLEEP
    assert len(urls(mocked)) == 3
    assert counter.by_outcome()["data"] == {"ok": 1, "transient": 2}
    assert counter.cost_usd() == pytest.approx(0.002)  # only the 200 is billed


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 503, "payload": {"response": None, "error": "VIN lock timeout"}},
        {"status": 504, "body": ""},
        {"exception": TimeoutError()},
        {"exception": OSError("network unreachable")},
    ],
)
async def test_transient_faults_exhaust_into_tesla_transient_error(
    client: TeslaClient, mocked: aioresponses, counter: ApiCallCounter, failure: dict[str, Any]
) -> None:
    mocked.post(AMPS_URL, repeat=True, **failure)
    with pytest.raises(TeslaTransientError):
        await client.set_charging_amps(10)
    # A call that hung until its timeout is not repeated in place: the policy paces it.
    attempts = (
        1 if isinstance(failure.get("exception"), TimeoutError) else const.TESLA_RETRY_ATTEMPTS
    )
    assert len(calls(mocked, "POST", AMPS_URL)) == attempts
    assert counter.by_outcome()["command"] == {"transient": attempts}
    assert counter.cost_usd() == 0.0


# --- authentication --------------------------------------------------------------------------


async def test_401_refreshes_and_retries_once_with_the_new_token(
    client: TeslaClient, mocked: aioresponses, tokens: FakeTokens, counter: ApiCallCounter
) -> None:
    mocked.get(VEHICLE_URL, status=401, payload={"error": "token expired (401)"})
    mocked.get(VEHICLE_URL, payload=load_fixture("tesla/vehicle_asleep.json"))
    await client.snapshot()
    sent = calls(mocked, "GET", VEHICLE_URL)
    auth = [c.kwargs["headers"]["Authorization"] for c in sent]
    assert auth == [f"Bearer {TOKEN}", f"Bearer {NEW_TOKEN}"]
    assert tokens.rejected == [TOKEN]
    assert counter.by_outcome()["data"] == {"auth": 1, "ok": 1}


async def test_second_401_is_an_auth_error(
    client: TeslaClient, mocked: aioresponses, tokens: FakeTokens
) -> None:
    mocked.post(AMPS_URL, status=401, repeat=True)
    with pytest.raises(TeslaAuthError):
        await client.set_charging_amps(10)
    assert len(calls(mocked, "POST", AMPS_URL)) == 2
    assert tokens.rejected == [TOKEN]


async def test_401_without_refresh_is_an_auth_error(
    session: aiohttp.ClientSession, mocked: aioresponses, counter: ApiCallCounter
) -> None:
    mocked.get(VEHICLE_URL, status=401, payload={"error": "invalid bearer token"}, repeat=True)
    static = StaticTokenSource(SecretStr(TOKEN))
    client = TeslaClient(session, BASE, VIN, static, counter, retry_wait=wait_none())
    with pytest.raises(TeslaAuthError, match="invalid bearer token"):
        await client.snapshot()
    assert len(urls(mocked)) == 1


async def test_403_is_an_auth_error(client: TeslaClient, mocked: aioresponses) -> None:
    mocked.get(VEHICLE_URL, status=403, payload={"error": "missing scopes"}, repeat=True)
    with pytest.raises(TeslaAuthError, match="403"):
        await client.snapshot()
    assert len(urls(mocked)) == 1


async def test_static_token_source() -> None:
    for empty in (None, SecretStr("")):
        with pytest.raises(TeslaAuthError, match=r"teslaAccessToken"):
            await StaticTokenSource(empty).access_token()
    source = StaticTokenSource(SecretStr(TOKEN))
    assert await source.access_token() == TOKEN
    assert await source.handle_unauthorized(TOKEN) is False
    assert TOKEN not in repr(source)


async def test_no_token_in_any_error_or_log_line(
    session: aiohttp.ClientSession,
    mocked: aioresponses,
    counter: ApiCallCounter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A hostile proxy echoing the token back must not get it into our messages either.
    echo = {"response": None, "error": f"bad token {TOKEN}"}
    mocked.get(VEHICLE_URL, status=401, payload=echo)
    mocked.get(VEHICLE_URL, status=403, payload=echo)
    mocked.get(VEHICLE_URL, status=502, payload=echo, repeat=True)
    mocked.post(AMPS_URL, status=418, payload=echo)
    mocked.post(AMPS_URL, payload={"response": {"result": False, "reason": f"no {TOKEN}"}})
    mocked.post(AMPS_URL, exception=aiohttp.ClientConnectionError(f"conn {TOKEN}"), repeat=True)
    client = TeslaClient(
        session, BASE, VIN, StaticTokenSource(SecretStr(TOKEN)), counter, retry_wait=wait_none()
    )
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            try:
                await client.snapshot()
            except Exception as err:
                messages.append(str(err))
        for _ in range(3):
            try:
                await client.set_charging_amps(10)
            except Exception as err:
                messages.append(str(err))
    assert len(messages) == 6
    assert all(TOKEN not in m for m in messages), messages
    assert "***" in " ".join(messages)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)


# --- call counter ----------------------------------------------------------------------------


def test_counter_categories_outcomes_billing_and_cost() -> None:
    wall = FakeClock(1_700_000_000.0)
    counter = ApiCallCounter(clock=wall)
    assert counter.counts() == {"data": 0, "command": 0, "wake": 0}
    counter.record("data", "ok", billed=True)
    counter.record("data", "asleep", billed=True)
    counter.record("data", "transient", billed=False)
    counter.record("command", "ok", billed=True)
    counter.record("command", "refused", billed=True)
    counter.record("wake", "ok", billed=True)

    assert counter.counts() == {"data": 3, "command": 2, "wake": 1}
    assert counter.by_outcome() == {
        "data": {"asleep": 1, "ok": 1, "transient": 1},
        "command": {"ok": 1, "refused": 1},
        "wake": {"ok": 1},
    }
    expected = 2 * 0.002 + 2 * 0.001 + 0.02
    assert counter.cost_usd() == pytest.approx(expected)
    assert counter.cost_last_24h_usd() == pytest.approx(expected)

    wall.now += 23 * 3600
    counter.record("command", "ok", billed=True)
    wall.now += 2 * 3600  # the first six calls are now older than 24 h
    assert counter.cost_last_24h_usd() == pytest.approx(0.001)
    assert counter.cost_usd() == pytest.approx(expected + 0.001)
    status = counter.as_dict()
    assert status["data"] == 3
    assert status["command"] == 3
    assert status["wake"] == 1
    assert status["cost_usd"] == round(expected + 0.001, 6)
    assert status["cost_last_24h_usd"] == 0.001
    assert status["by_outcome"]["command"] == {"ok": 2, "refused": 1}


# --- TLS settings ----------------------------------------------------------------------------


def test_ssl_context_for(tmp_path: Path) -> None:
    assert ssl_context_for("http://localhost:4443", None) is None
    ctx = ssl_context_for("https://localhost:4443", None)
    assert ctx is not None
    assert ctx.check_hostname
    with pytest.raises(ConfigError, match="teslaHttpProxyCaFile"):
        ssl_context_for("https://localhost:4443", tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(ConfigError, match="teslaHttpProxyCaFile"):
        ssl_context_for("https://localhost:4443", junk)
