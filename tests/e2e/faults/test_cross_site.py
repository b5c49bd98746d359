"""Without apiToken, a web page cannot change state through a browser.

Browsers label cross-site requests (`Sec-Fetch-Site`, `Origin`); Shelly URL actions and curl
send neither header. First the rules against the HTTP app on a real 127.0.0.1 server, then the
acceptance line against the real daemon process and a simulated car.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tesla_smart_charger.httpapi.server import ApiContext, build_app
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, Recorder, world_and_daemon
from tests.helpers.status import sample_status


async def _client(rec: Recorder, token: str | None) -> TestClient[Any, Any]:
    ctx = ApiContext(rec.overload, sample_status, dict, list, api_token=token)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def open_api(rec: Recorder) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(rec, None)
    yield client
    await client.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # same host, other port: another origin
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_browser_cross_site_overload_is_403_json(
    open_api: TestClient[Any, Any], rec: Recorder, headers: dict[str, str], method: str
) -> None:
    async with open_api.request(method, "/overload", headers=headers) as r:
        assert r.status == 403
        body = await r.json()
    assert body["status"] == 403
    assert "cross-site request refused" in body["error"]
    assert "apiToken" in body["error"]
    assert rec.overloads == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # Shelly URL action, curl, scripts
        {"User-Agent": "Shelly/20230913-114008/v1.14.0-gcb84623"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
async def test_shelly_and_same_origin_still_accepted(
    open_api: TestClient[Any, Any], rec: Recorder, headers: dict[str, str]
) -> None:
    async with open_api.get("/overload?source=shelly", headers=headers) as r:
        assert r.status == 202
    assert rec.overloads == ["shelly"]


async def test_same_origin_header_is_accepted(
    open_api: TestClient[Any, Any], rec: Recorder
) -> None:
    own = f"http://127.0.0.1:{open_api.port}"
    async with open_api.post("/overload", headers={"Origin": own}) as r:
        assert r.status == 202
    assert len(rec.overloads) == 1


async def test_read_only_views_are_not_refused(open_api: TestClient[Any, Any]) -> None:
    # No CORS headers: a page cannot read these anyway; refusing them would break nothing safe.
    async with open_api.get("/health", headers={"Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 200


async def test_with_api_token_the_token_decides(rec: Recorder) -> None:
    client = await _client(rec, "tok-123")
    try:
        cross = {"Sec-Fetch-Site": "cross-site"}
        async with client.get("/overload", headers=cross) as r:
            assert r.status == 401
        async with client.get("/overload?token=tok-123", headers=cross) as r:
            assert r.status == 202
    finally:
        await client.close()
    assert len(rec.overloads) == 1


@pytest.mark.slow
async def test_daemon_refuses_cross_site_overload_and_accepts_shelly(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    world = World(car=car, manual_house=(8.0,))
    async with world_and_daemon(tmp_path, world) as (world, daemon):
        assert "apiToken" not in daemon.config_path.read_text()
        # What <img src="http://charger.local:8000/overload"> on any web page sends.
        page = {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "no-cors",
            "Referer": "https://x.example/",
        }
        code, body = await daemon.get("/overload", headers=page)
        assert code == 403
        assert "cross-site" in body["error"]
        # Give a wrongly queued overload time to reach the car, then check none did.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert world.proxy.commands_named("set_charging_amps") == []
            await asyncio.sleep(0.1)
        # A Shelly URL action: no browser headers.
        code, body = await daemon.get("/overload?source=shelly")
        assert code == 202
        _, _, sent = await world.proxy.wait_for_command("set_charging_amps", timeout=5 * LOADED)
        assert sent["charging_amps"] == 8  # 16 x downStepPercentage 0.5
