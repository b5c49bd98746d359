"""Token rotation survives a kill, black-box: SIGKILL the real daemon while 2-second tokens rotate.

The kills are aimed, not random: each lands a set delay after the token endpoint has rotated
the refresh token (0 s: its reply is still on the wire; a few ms: the daemon is saving it;
0.3 s: just after). Those are the moments a careless save loses the chain, so four aimed
kills prove more than many random ones, in a fraction of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import stat
import sys
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import WAIT_SECS, wait_http, wait_port_file

pytestmark = pytest.mark.slow

# Seconds after a rotation at which each life is killed.
KILL_DELAYS = (0.0, 0.005, 0.05, 0.3)
FINAL_REFRESHES = 3  # the last life must keep rotating from whatever the kills left


async def _overload_every(url: list[str], period: float) -> None:
    """GET /overload now and then, through restarts (a refused connection is expected).

    `url[0]` is the current life's address (each life listens where the OS put it).
    """
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                if url[0]:
                    async with session.get(
                        url[0] + "/overload", timeout=aiohttp.ClientTimeout(total=2)
                    ) as reply:
                        await reply.read()
            await asyncio.sleep(period)


@pytest.mark.timeout(900)  # five lives, each start with a deadline for a loaded machine
async def test_sigkill_during_token_rotation_never_loses_the_refresh_token(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    # Tesla: refresh tokens are single use, but the most recently used one stays valid 24 h.
    world = World(car=car, manual_house=(8.0,), access_ttl=2.0, refresh_reuse_grace=86400.0)
    async with world:
        # Push mode: an /overload every second cuts the car and it steps back up every second,
        # so the proxy sees the access token in use all the time. (vehicleCheckSecs can no
        # longer be set below 300 s.)
        config = world.write_config(tmp_path, sleepTimeSecs=1)
        original = config.read_bytes()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
        url = [""]
        port_file = tmp_path / "daemon.port"
        log_path = tmp_path / "daemon.log"
        log = log_path.open("ab")
        proc: asyncio.subprocess.Process | None = None
        poker = asyncio.create_task(_overload_every(url, 1.0))
        try:
            for delay in (*KILL_DELAYS, None):
                url[0] = ""
                port_file.unlink(missing_ok=True)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tesla_smart_charger", "--config", str(config),
                    "--port-file", str(port_file),
                    stdout=log, stderr=log, env=env, cwd=tmp_path,
                )  # fmt: skip
                port = await wait_port_file(port_file, proc, log_path)
                url[0] = f"http://127.0.0.1:{port}"
                await wait_http(url[0], proc, log_path)
                seen = world.oauth.refresh_count
                wanted = seen + (1 if delay is not None else FINAL_REFRESHES)
                try:
                    async with asyncio.timeout(WAIT_SECS):
                        await world.oauth.wait_refreshes(wanted)
                except TimeoutError:
                    pytest.fail(f"no token rotation within {WAIT_SECS} s:\n{log_path.read_text()}")
                if delay is None:
                    break
                if delay:
                    await asyncio.sleep(delay)  # aiming the kill, not synchronising
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), WAIT_SECS) == 0
        finally:
            poker.cancel()
            log.close()
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        statuses = [r[3] for r in world.proxy.requests]

    kills = len(KILL_DELAYS)
    assert world.oauth.refresh_count >= kills + FINAL_REFRESHES  # tokens really rotated
    assert world.oauth.login_required_count == 0, log_path.read_text()
    # A kill before the save may need Tesla's fallback once; never more than once per kill.
    assert world.oauth.grace_reuse_count <= kills
    # The proxy may see an expired token at most once before the daemon refreshes: never twice in a row.
    assert all(not (a == 401 and b == 401) for a, b in itertools.pairwise(statuses))
    assert world.proxy.expired_token_requests <= kills + 1
    assert len(statuses) > 5
    store = tmp_path / "tokens.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert config.read_bytes() == original
    assert world.car.wakes == 0
