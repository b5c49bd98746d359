"""SIGKILL a process that keeps refreshing: the refresh-token chain must survive every kill.

A child process (`python -m tests.helpers.refresh_loop --refresh-loop`) refreshes 1-second
access tokens against the simulated endpoint. It is killed at 5 random moments and restarted
each time. The endpoint must never answer `login_required`, and the final store must hold a
refresh token the endpoint still accepts.

One window no client can close: the endpoint has rotated the token and its reply is on the
wire (or being saved) when the kill lands. Tesla covers it by keeping the most recently used
refresh token valid for 24 h, and the simulator enables that fallback here. So that the
fallback cannot hide a real bug, every kill that left a used token in the store must have
landed within moments of that token's use (a late or missing save would show an old one),
and the fallback may have been used exactly once per such kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import stat
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.car.tokens import TokenPair, TokenStore, post_token_request
from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tests.helpers.e2e import WAIT_SECS

CLIENT = "sim-client"
ROOT = Path(__file__).resolve().parents[2]
KILLS = 5
# Short tokens: a refresh every 0.8 s, so a random kill often lands in or near one.
ACCESS_TTL = 1.0
# A kill this close to the token's use is the in-flight window, not a late save.
IN_FLIGHT_SECS = 0.5


async def start_child(store: Path, token_url: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.helpers.refresh_loop",
            "--refresh-loop",
            str(store),
            token_url,
            CLIENT,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
        )
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT_SECS):
        line = await proc.stdout.readline()
    assert line == b"ready\n", f"the refresh loop did not start; see {log}"
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.kill()
    await proc.communicate()
    assert proc.returncode == -9


@pytest.mark.slow
async def test_sigkill_at_random_moments_never_loses_the_refresh_token(tmp_path: Path) -> None:
    sim = SimulatedOAuth(access_ttl=ACCESS_TTL, client_id=CLIENT, reuse_grace=86400)
    await sim.start()
    try:
        path = tmp_path / "tokens.json"
        log = tmp_path / "child.log"
        access, refresh = sim.issue_initial()
        now = time.time()
        TokenStore(path).save(TokenPair(access, refresh, now + ACCESS_TTL, now, "na"))
        rng = random.Random(20260705)
        in_flight_kills = 0
        for _ in range(KILLS):
            life_start = time.time()
            proc = await start_child(path, sim.token_url, log)
            # A random moment: during a refresh, between refreshes, or right at start.
            await asyncio.sleep(rng.uniform(0.05, 1.3 * ACCESS_TTL))  # aiming, not synchronising
            killed_at = time.time()
            await kill(proc)
            pair = TokenStore(path).load()
            assert pair is not None  # never corrupt, never missing
            if not sim.is_live_refresh(pair.refresh_token):
                used = sim.consumed_at(pair.refresh_token)
                assert used is not None, "the store holds a token the endpoint never issued"
                if used >= life_start:  # used in this life, yet not replaced in the store
                    assert abs(killed_at - used) < IN_FLIGHT_SECS, (
                        f"the store holds a token used {killed_at - used:.2f} s before the "
                        "kill: the new pair was saved late or not at all"
                    )
                    in_flight_kills += 1
        # One last life: it must carry on refreshing from whatever the kills left behind.
        # Wait for its own report (sent after the save), not the endpoint's count.
        proc = await start_child(path, sim.token_url, log)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT_SECS):
                saved = 0
                while saved < 2:
                    if await proc.stdout.readline() == b"TokenRefreshed\n":
                        saved += 1
        finally:
            await kill(proc)

        assert sim.login_required_count == 0, f"see {log}"
        assert sim.grace_reuse_count == in_flight_kills
        assert sim.refresh_count >= KILLS
        final = TokenStore(path).load()
        assert final is not None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert sim.is_live_refresh(final.refresh_token)
        async with aiohttp.ClientSession() as session:
            reply = await post_token_request(
                session,
                sim.token_url,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": final.refresh_token,
                    "client_id": CLIENT,
                },
            )
        assert reply["refresh_token"] != final.refresh_token
        assert sim.login_required_count == 0
    finally:
        await sim.stop()
