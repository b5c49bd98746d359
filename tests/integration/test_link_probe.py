"""After a long proxy outage the cut goes within seconds of recovery, not at the next back-off.

The car link backs off to a minute; while a cut waits and the proxy refused the connection, a
TCP probe (no HTTP request, nothing billed) notices the port accepting again, the policy allows
the next attempt at once and the controller acts. Real servers on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from tesla_smart_charger import control as core
from tesla_smart_charger.car.fleet_api import ApiCallCounter, TeslaClient
from tesla_smart_charger.control.events import CarLinkBack
from tesla_smart_charger.errors import TeslaTransientError
from tests.helpers.control import MEASURED, PUSH, charging, reading
from tests.helpers.tesla import VIN, FakeTokens


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def test_probe_notices_the_port_accepting_and_lets_the_next_attempt_go() -> None:
    # Bound but not listening: refused until the server below listens on this very socket,
    # and no other process can take the port meanwhile.
    with socket.socket() as reserved:  # closed also when the test fails early
        reserved.bind(("127.0.0.1", 0))
        port = int(reserved.getsockname()[1])
        async with aiohttp.ClientSession() as session:
            client = TeslaClient(
                session, f"http://127.0.0.1:{port}", VIN, FakeTokens(), ApiCallCounter()
            )
            with pytest.raises(TeslaTransientError, match="nothing listens"):
                await client.snapshot()
            assert client.connect_failed
            assert client.policy.wait_secs() > 0
            assert await client.probe() is False

            probes = 0
            real_probe = client.probe

            async def counted() -> bool:
                nonlocal probes
                probes += 1
                return await real_probe()

            client.probe = counted  # type: ignore[method-assign]
            backs: list[float] = []
            watcher = asyncio.create_task(
                client.watch_link(lambda: True, lambda: backs.append(time.monotonic()), every=0.05)
            )
            try:
                await until(lambda: probes >= 3)
                assert backs == []  # refused: no wake-up, and the policy still waits
                assert client.policy.wait_secs() > 0
                server = await asyncio.start_server(lambda r, w: w.close(), sock=reserved)
                try:
                    # The next attempt would otherwise wait out the policy's backoff (seconds);
                    # how soon the probe notices is its 50 ms period, not a wall-clock assertion.
                    await until(lambda: bool(backs))
                    assert client.policy.allowed()
                    assert client.policy.failing  # a probe is no success; the next real call is
                finally:
                    server.close()
                    await server.wait_closed()
            finally:
                watcher.cancel()


async def test_no_probe_for_a_proxy_that_answers_5xx() -> None:
    async def fail(_: web.Request) -> web.Response:
        return web.json_response({"response": None, "error": "upstream"}, status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            client = TeslaClient(
                session, f"http://127.0.0.1:{port}", VIN, FakeTokens(), ApiCallCounter()
            )
            with pytest.raises(TeslaTransientError):
                await client.snapshot()
            assert client.policy.wait_secs() > 0
            # The proxy is up: a TCP probe proves nothing, the policy paces the attempts.
            assert not client.connect_failed
    finally:
        await runner.cleanup()


def test_link_back_sends_the_waiting_cut_at_once() -> None:
    state = core.decide(
        core.initial_state(0.0), core.VehicleUpdate(charging(16)), 0.0, MEASURED
    ).state
    down = core.VehicleUnavailable("transient", "refused", retry_after=60.0, command=True)
    d = core.decide(state, reading(20 + 16, at=1.0), 1.0, MEASURED)
    state = core.decide(core.call_started(d.state, d.actions[0]), down, 1.1, MEASURED).state
    state = core.decide(state, reading(20 + 16, at=2.0), 2.0, MEASURED).state
    assert state.target == 9
    assert state.setpoint == 16
    assert state.blocked_until == pytest.approx(61.1)
    d = core.decide(state, CarLinkBack(at=3.0), 3.0, MEASURED)
    assert d.actions == (core.SetAmps(9, "worst phase 36.0 A: lowering 16 -> 9 A"),)


def test_link_back_does_not_cut_a_rate_limit_short() -> None:
    state = core.decide(core.initial_state(0.0), core.Tick(), 0.0, PUSH).state
    limited = core.VehicleUnavailable("rate_limited", "429", retry_after=30.0)
    state = core.decide(state, limited, 1.0, PUSH).state
    d = core.decide(state, CarLinkBack(at=2.0), 2.0, PUSH)
    assert d.actions == ()
    assert d.state.blocked_until == pytest.approx(31.0)
