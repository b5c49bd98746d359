"""Issue 5 acceptance, black-box: SIGKILL the real daemon while 5-second tokens rotate."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import stat
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.e2e import free_port, wait_http

pytestmark = pytest.mark.slow

RUN_SECS = 60.0
KILLS = 5


async def _overload_every(url: str, period: float) -> None:
    """GET /overload now and then, through restarts (a refused connection is expected)."""
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(
                    url + "/overload", timeout=aiohttp.ClientTimeout(total=2)
                ) as reply:
                    await reply.read()
            await asyncio.sleep(period)


async def test_sigkill_during_token_rotation_never_loses_the_refresh_token(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    # Tesla: refresh tokens are single use, but the most recently used one stays valid 24 h.
    world = World(car=car, manual_house=(8.0,), access_ttl=5.0, refresh_reuse_grace=86400.0)
    rng = random.Random(20261124)
    kill_at = sorted(rng.uniform(3.0, RUN_SECS - 3.0) for _ in range(KILLS))
    async with world:
        # Push mode: an /overload every 3 s cuts the car and it steps back up every second, so
        # the proxy sees the access token in use all the time. (vehicleCheckSecs can no longer be
        # set below 300 s, which is what this test used to rely on.)
        config = world.write_config(tmp_path, apiPort=free_port(), sleepTimeSecs=1)
        original = config.read_bytes()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
        url = f"http://127.0.0.1:{json.loads(original)['apiPort']}"
        started = time.monotonic()
        restarts = 0
        poker = asyncio.create_task(_overload_every(url, 3.0))
        log = (tmp_path / "daemon.log").open("ab")
        try:
            while True:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tesla_smart_charger", "--config", str(config),
                    stdout=log, stderr=log, env=env, cwd=tmp_path,
                )  # fmt: skip
                await wait_http(url, proc, tmp_path / "daemon.log")
                next_kill = kill_at[restarts] if restarts < KILLS else RUN_SECS
                await asyncio.sleep(max(0.0, started + next_kill - time.monotonic()))
                if restarts < KILLS:
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    restarts += 1
                    continue
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 10) == 0
                break
        finally:
            poker.cancel()
            log.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        statuses = [r[3] for r in world.proxy.requests]

    assert restarts == KILLS
    assert world.oauth.refresh_count >= 8  # 5 s tokens over 60 s: they really rotated
    assert world.oauth.login_required_count == 0
    # The proxy may see an expired token at most once before the daemon refreshes: never twice in a row.
    assert all(not (a == 401 and b == 401) for a, b in itertools.pairwise(statuses))
    assert world.proxy.expired_token_requests <= KILLS + 1
    assert len(statuses) > 20
    store = tmp_path / "tokens.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert config.read_bytes() == original
    assert world.car.wakes == 0
