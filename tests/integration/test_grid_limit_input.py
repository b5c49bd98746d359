"""The grid limit's Shelly input driver against the simulated Gen1 and Gen2 devices on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tesla_smart_charger.control.events import Event, GridLimitChanged
from tesla_smart_charger.control.grid_limit import SourceReading
from tesla_smart_charger.errors import InputAuthError, InputError
from tesla_smart_charger.httpapi.server import ApiContext, build_app
from tesla_smart_charger.runtime.grid_limit import GridLimitWatch, input_policy, poll_input
from tesla_smart_charger.shelly.input import ShellyInput, parse_gen1_inputs, parse_input_status
from tesla_smart_charger.simulator.shelly_input import SimulatedShellyInput
from tests.helpers.e2e import WAIT_SECS
from tests.helpers.status import sample_status


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("gen", [1, 2])
async def test_reads_the_input_of_each_generation(gen: int, session: aiohttp.ClientSession) -> None:
    sim = SimulatedShellyInput(1 if gen == 1 else 2, inputs=2, password="input-pw-SECRET")
    url = await sim.start()
    try:
        shelly = ShellyInput(url, session, input_id=1, password="input-pw-SECRET")
        assert await shelly.read() is False
        sim.set_input(1, True)
        assert await shelly.read() is True
        sim.set_input(0, False)
        assert await shelly.read() is True  # input 0 is not ours
        assert sim.reads == 3
        assert "SECRET" not in repr(shelly)
    finally:
        await sim.stop()


@pytest.mark.parametrize("gen", [1, 2])
async def test_wrong_password_and_missing_input_are_named(
    gen: int, session: aiohttp.ClientSession
) -> None:
    sim = SimulatedShellyInput(1 if gen == 1 else 2, password="right-SECRET")
    url = await sim.start()
    try:
        with pytest.raises(InputAuthError, match="gridLimitInputPassword") as info:
            await ShellyInput(url, session, password="wrong-SECRET").read()
        assert "SECRET" not in str(info.value)
        with pytest.raises(InputError, match="gridLimitInputId"):
            await ShellyInput(url, session, input_id=3, password="right-SECRET").read()
    finally:
        await sim.stop()


async def test_refused_then_back(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShellyInput(2)
    url = await sim.start()
    shelly = ShellyInput(url, session)
    assert await shelly.read() is False
    await sim.refuse()
    errors = []
    for _ in range(2):  # the first may meet the pooled connection closing
        with pytest.raises(InputError) as info:
            await shelly.read()
        errors.append(str(info.value))
    assert f"nothing listens on {url.removeprefix('http://')}" in errors[-1]
    await sim.accept()
    try:
        sim.set_input(0, True)
        assert await shelly.read() is True
    finally:
        await sim.stop()


def test_parsers_name_the_field() -> None:
    with pytest.raises(InputError, match=r"inputs\[2\]: this Shelly has 1 input"):
        parse_gen1_inputs({"inputs": [{"input": 0}]}, 2)
    with pytest.raises(InputError, match="switch type"):
        parse_input_status({"id": 0, "state": None}, 0)
    assert parse_gen1_inputs({"inputs": [{"input": 1, "event": "S"}]}, 0) is True


def test_watch_says_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Event] = []
    now = [0.0]
    watch = GridLimitWatch(
        limit_kw=4.2, cars=2, send=sent.append, sources=("input", "api"), clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO)
    watch.report("input", SourceReading("inactive"))
    assert sent == []
    for i in range(5):  # the input keeps failing: one line, one event
        now[0] += 1.0
        watch.report("input", SourceReading("lost", f"nothing listens ({i})"))
    assert len(sent) == 1
    assert isinstance(sent[0], GridLimitChanged)
    assert sent[0].car_watts == 2100.0
    watch.set_api(True)  # a second reason while on: said, but no new event
    watch.report("input", SourceReading("inactive"))
    watch.set_api(False)
    assert [type(e) for e in sent] == [GridLimitChanged, GridLimitChanged]
    assert sent[-1] == GridLimitChanged(None, "")
    lines = [r.getMessage() for r in caplog.records if "Grid limit" in r.getMessage()]
    assert len(lines) == 4, lines
    assert lines[0].startswith("Grid limit on: the Shelly input on the control box cannot be read")
    assert "4.2 kW" in lines[0]
    assert lines[-1].startswith("Grid limit ended after")
    assert watch.status().active is False


def test_silent_source_counts_as_lost_after_the_grace() -> None:
    sent: list[Event] = []
    now = [0.0]
    watch = GridLimitWatch(
        limit_kw=4.2, cars=1, send=sent.append, sources=("mqtt", "api"), clock=lambda: now[0]
    )
    watch.check_pending()
    assert watch.status().sources["mqtt"].state == "unknown"
    assert not watch.active
    now[0] = 10.0
    watch.check_pending()
    assert watch.active
    assert watch.status().lost == ["mqtt"]
    assert sent == [GridLimitChanged(4200.0, watch.combined.reason)]
    assert watch.warning() is not None


def test_input_policy_is_quiet_and_backs_off_to_five_seconds() -> None:
    policy = input_policy()
    for _ in range(10):
        wait = policy.failure("transient", "nothing listens")
    assert 5.0 <= wait <= 6.0


# --- GET/POST /grid-limit on aiohttp's test server -------------------------------------------


async def _api(token: str | None) -> tuple[TestClient[Any, Any], GridLimitWatch, list[Event]]:
    sent: list[Event] = []
    watch = GridLimitWatch(limit_kw=4.2, cars=1, send=sent.append, sources=("input", "api"))
    ctx = ApiContext(lambda _: True, sample_status, dict, list, api_token=token, grid_limit=watch)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx), host="127.0.0.1"))
    await client.start_server()
    return client, watch, sent


async def test_post_grid_limit_needs_the_token_and_a_boolean() -> None:
    client, watch, sent = await _api("grid-token-SECRET")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await client.post("/grid-limit", json={"active": True}, headers=headers)
            assert r.status == 401
        assert sent == []
        good = {"Authorization": "Bearer grid-token-SECRET"}
        for body in ({"on": True}, {"active": "maybe"}, [True]):
            r = await client.post("/grid-limit", json=body, headers=good)
            assert r.status == 400
            assert "active" in (await r.json())["error"]
        r = await client.post("/grid-limit", data=b"\xff\x8f", headers=good)
        assert r.status == 400
        assert sent == []
        r = await client.post("/grid-limit?active=true&token=grid-token-SECRET")
        assert r.status == 200
        body = await r.json()
        assert (body["accepted"], body["active"], body["source"]) == (True, True, "api")
        assert sent == [GridLimitChanged(4200.0, watch.combined.reason)]
        r = await client.get("/grid-limit")
        assert r.status == 200
        shown = await r.json()
        assert shown["sources"] == {
            "input": {"state": "unknown", "detail": "not heard from yet"},
            "api": {"state": "active", "detail": None},
        }
        r = await client.post("/grid-limit", json={"active": False}, headers=good)
        assert (await r.json())["active"] is False
        assert sent[-1] == GridLimitChanged(None, "")
    finally:
        await client.close()


async def test_post_grid_limit_without_a_token_refuses_other_sites() -> None:
    client, watch, _ = await _api(None)
    try:
        r = await client.post(
            "/grid-limit", json={"active": True}, headers={"Origin": "https://evil.example"}
        )
        assert r.status == 403
        assert watch.active is False
        r = await client.post("/grid-limit", json={"active": True})
        assert r.status == 200
        assert watch.active is True
    finally:
        await client.close()


async def test_poll_input_inverted_contact(session: aiohttp.ClientSession) -> None:
    """A normally closed contact: the input off means the limit is on."""
    sim = SimulatedShellyInput(1)
    url = await sim.start()
    sent: list[Event] = []
    watch = GridLimitWatch(limit_kw=4.2, cars=1, send=sent.append, sources=("input", "api"))
    task = asyncio.create_task(
        poll_input(watch, ShellyInput(url, session), input_policy(), every=0.2, inverted=True)
    )
    try:
        await _until(lambda: watch.active, "open contact read as on")
        assert watch.combined.source == "input"
        sim.set_input(0, True)  # the contact closes: normal
        await _until(lambda: not watch.active, "closed contact read as off")
        assert [e.car_watts for e in sent if isinstance(e, GridLimitChanged)] == [4200.0, None]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


async def _until(check: Callable[[], bool], what: str, timeout: float = WAIT_SECS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
