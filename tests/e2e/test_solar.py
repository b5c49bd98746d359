"""Solar modes, black-box: solar mode and the mode endpoint against a real daemon."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, world_and_daemon

pytestmark = pytest.mark.slow

START_SECS = 3
STOP_SECS = 5


async def test_solar_starts_on_export_follows_it_down_and_stops_without_sun(
    tmp_path: Path,
) -> None:
    car = CarModel(request_amps=16, charging_state="Stopped", ramp_delay=1.0, capacity_kwh=None)
    world = World(car=car, manual_house=(-12.0,))  # a Shelly EM reading 12 A of export
    config = {
        "mode": "solar",
        "solarStartSecs": START_SECS,
        "solarStopSecs": STOP_SECS,
        "sleepTimeSecs": 2,
    }
    async with world_and_daemon(tmp_path, world, "--monitor", **config) as (world, daemon):
        # solarStartSecs on the daemon's clock, then a loaded machine's slack
        _, _, _ = await world.proxy.wait_for_command("charge_start", START_SECS + 8 * LOADED)
        set_amps = [
            b["charging_amps"] for _, n, b in world.proxy.commands if n == "set_charging_amps"
        ]
        assert set_amps
        assert 10 <= set_amps[-1] <= 12
        assert world.car.wakes == 0
        st = await daemon.wait_status(lambda s: s["vehicles"][0]["mode"] == "solar")
        assert st["controller"]["charge_mode"] == "solar"
        deadline = time.monotonic() + 5 * LOADED
        while world.car.current_draw(time.monotonic()) < 9:  # the car ramps up
            assert time.monotonic() < deadline, "the car never drew the solar setpoint"
            await asyncio.sleep(0.1)
        await daemon.wait_status(lambda s: s["vehicles"][0]["charging_state"] == "Charging")

        since = len(world.proxy.commands)
        world.set_house(-3.0)  # export drops: only 3 A of sun
        dropped = time.monotonic()
        _, _, body = await world.proxy.wait_for_command(
            "set_charging_amps", 3 * LOADED, since=since
        )
        assert body["charging_amps"] < set_amps[-1]

        # at chargerMinAmps (6 A) the car imports 3 A > the 1 A tolerance: stop after STOP_SECS
        await world.proxy.wait_for_command("charge_stop", STOP_SECS + 5 * LOADED, since=since)
        assert time.monotonic() - dropped >= STOP_SECS - 0.5
        assert world.car.wakes == 0


async def test_mode_endpoint_needs_the_token_and_shows_in_status(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    token = "mode-token-SECRET-789"
    async with world_and_daemon(tmp_path, World(car=car), apiToken=token) as (world, daemon):
        url = f"{daemon.url}/vehicles/{world.car.vin}/mode"
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json={"mode": "solar"}) as r:
                assert r.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with s.post(url, json={"mode": "turbo"}, headers=headers) as r:
                assert r.status == 400
                assert "turbo" in (await r.json())["error"]
            async with s.post(url + "?mode=minsolar", headers=headers) as r:
                assert r.status == 200
                assert (await r.json())["mode"] == "minsolar"
        st = await daemon.wait_status(lambda s: s["vehicles"][0]["mode"] == "minsolar")
        assert st["vehicles"][0]["vin"] == world.car.vin
        assert token not in daemon.log()
    # the mode chosen at runtime outlives a restart
    state = (tmp_path / "charger-state.json").read_text()
    assert '"mode": "minsolar"' in state
