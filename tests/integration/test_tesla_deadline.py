"""A car call slower than its deadline, against a real server on 127.0.0.1 that never answers
in time: one failure of the road, not one per in-place attempt (outside the pure layer)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from tenacity import wait_none

from tesla_smart_charger.car.fleet_api import ApiCallCounter, TeslaClient
from tesla_smart_charger.errors import TeslaTransientError
from tests.helpers.fixtures import load_fixture

VIN = "LRWXF7EK4KC700000"


class StaticTokens:
    """A TokenSource whose token never needs refreshing."""

    async def access_token(self) -> str:
        return "access-token-for-the-deadline-test"

    async def handle_unauthorized(self, rejected: str) -> bool:
        return False


async def test_a_car_call_slower_than_its_deadline_fails_once_without_retries(
    session: aiohttp.ClientSession,
) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        seen.append(request.path)
        await release.wait()  # longer than the deadline: answered only when the test ends
        return web.json_response(load_fixture("tesla/command_ok.json"))

    app = web.Application()
    app.router.add_post("/api/1/vehicles/{vin}/command/{name}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client = TeslaClient(
            session,
            f"http://127.0.0.1:{port}",
            VIN,
            StaticTokens(),
            ApiCallCounter(),
            retry_wait=wait_none(),
            deadline=0.5,
        )
        with pytest.raises(TeslaTransientError, match=r"did not answer within 0\.5 s") as err:
            await client.set_charging_amps(4)  # below 5 A: two sends, one deadline for both
        assert err.value.retry_after > 0
        assert client.policy.failures == 1  # one failure of the road, not one per attempt
        assert seen == [f"/api/1/vehicles/{VIN}/command/set_charging_amps"]  # no in-place retry
    finally:
        release.set()
        await runner.cleanup()
