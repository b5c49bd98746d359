"""Held, slow, aborted and hostile requests must not lock out /overload and /health.

Black-box against the real daemon on 127.0.0.1 (raw sockets for the slow and aborted ones):
300 slow POST bodies plus 300 /events streams, 2,000 aborted POSTs, a deeply nested JSON body
and thousands of /overload calls in measured mode, each counted at the daemon's log or at the
simulated meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.httpapi.server import BODY_READ_SECS
from tesla_smart_charger.runtime.service import extra_read_due
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import DaemonProcess, world_and_daemon

SLOW_BODIES = 300
STREAMS = 300
ABORTED = 2000

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _world() -> World:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    return World(car=car, manual_house=(8.0,))


def _enough_descriptors(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this test needs {wanted} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _open(port: int, head: bytes) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _gather_bounded(factories: list[Callable[[], Awaitable[Conn]]]) -> list[Conn]:
    """Open the connections 50 at a time (a connect storm would only measure the backlog)."""
    out: list[Conn] = []
    for i in range(0, len(factories), 50):
        batch = await asyncio.gather(*(f() for f in factories[i : i + 50]), return_exceptions=True)
        out += [c for c in batch if not isinstance(c, BaseException)]
    return out


def _close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.transport.abort()


async def _answered_within(daemon: DaemonProcess, path: str, secs: float) -> int:
    """The status of GET `path`, sent on a fresh connection, that must come within `secs`."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(daemon.url + path, timeout=aiohttp.ClientTimeout(total=secs)) as r,
    ):
        await r.read()
        return r.status


async def _status_line(reader: asyncio.StreamReader, secs: float) -> bytes:
    """The reply's status line, or b"" if the daemon closed without one."""
    async with asyncio.timeout(secs):
        line = await reader.readline()
    return line.strip()


@pytest.mark.slow
async def test_held_bodies_and_streams_leave_room_for_overload_status_and_health(
    tmp_path: Path,
) -> None:
    _enough_descriptors(SLOW_BODIES + STREAMS + 300)
    async with world_and_daemon(tmp_path, _world()) as (world, daemon):
        port = int(daemon.url.rsplit(":", 1)[1])
        slow_head = (
            b"POST /overload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000\r\n\r\n{"
        )
        stream_head = (
            b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        slow = await _gather_bounded([lambda: _open(port, slow_head)] * SLOW_BODIES)
        streams = await _gather_bounded([lambda: _open(port, stream_head)] * STREAMS)
        opened = time.monotonic()
        try:
            # Every stream got an answer at once: a few are served, the rest refused (or cut at
            # the client's connection cap before their request was read).
            lines = await asyncio.gather(
                *(_status_line(r, 30) for r, _ in streams), return_exceptions=True
            )
            served = sum(1 for x in lines if isinstance(x, bytes) and b" 200 " in x + b" ")
            refused = sum(
                1 for x in lines if isinstance(x, bytes) and (b" 429 " in x or b" 503 " in x)
            )
            # The controls still answer while all of that is held open.
            assert await _answered_within(daemon, "/health", 10) in (200, 503)
            assert await _answered_within(daemon, "/status", 10) == 200
            assert await _answered_within(daemon, "/overload?source=shelly", 10) == 202
            _, _, sent = await world.proxy.wait_for_command("set_charging_amps", timeout=10.0)
            # The slow bodies are cut: refused at once or after the body's read deadline.
            cut = await asyncio.gather(
                *(_until_closed(r, BODY_READ_SECS + 20) for r, _ in slow), return_exceptions=True
            )
            cut_after = time.monotonic() - opened
        finally:
            _close_all(slow + streams)
    assert len(slow) == SLOW_BODIES
    assert len(streams) == STREAMS
    assert served <= 16, lines[:5]  # the per-client cap on streams (8, with room to spare)
    assert refused >= 1
    assert not [x for x in lines if isinstance(x, TimeoutError)]  # none left hanging
    assert sent["charging_amps"] == 8
    assert all(c is True for c in cut), [c for c in cut if c is not True][:3]
    assert cut_after < BODY_READ_SECS + 20
    text = daemon.log()
    assert "Traceback" not in text


async def _until_closed(reader: asyncio.StreamReader, secs: float) -> bool:
    """True once the daemon closed the connection (a reset counts: it was cut)."""
    async with asyncio.timeout(secs):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(4096):
                pass
    return True


async def _aborted_post(port: int, n: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /overload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100
    )
    await writer.drain()
    if n % 2:
        writer.transport.abort()  # a reset
    else:
        writer.close()  # a clean close in the middle of the body
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.slow
async def test_2000_aborted_posts_log_one_line_and_no_traceback(tmp_path: Path) -> None:
    async with world_and_daemon(tmp_path, _world()) as (_, daemon):
        port = int(daemon.url.rsplit(":", 1)[1])
        before = len(daemon.log().splitlines())
        for start in range(0, ABORTED, 100):
            await asyncio.gather(*(_aborted_post(port, n) for n in range(start, start + 100)))
        # The daemon has worked through them once it answers a request sent after the last.
        assert await _answered_within(daemon, "/health", 10) in (200, 503)
        new = daemon.log().splitlines()[before:]
    assert "Traceback" not in "\n".join(new)
    about_it = [line for line in new if "before sending the whole request" in line]
    assert len(about_it) == 1, new[:5]
    assert len(new) <= 5, new[:10]


@pytest.mark.slow
async def test_deeply_nested_json_is_400_naming_the_problem(tmp_path: Path) -> None:
    world = _world()
    async with world_and_daemon(tmp_path, world) as (world, daemon):
        vin = world.car.vin
        async with aiohttp.ClientSession() as s:
            for body in (b"[" * 50_000, b'{"amps": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"):
                async with s.post(
                    f"{daemon.url}/vehicles/{vin}/limit",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    assert r.status == 400
                    reply = await r.json()
                assert "nested" in reply["error"]
                assert reply["error"].startswith("body:")
            # Still answering, and nothing was set.
            assert await _answered_within(daemon, "/health", 10) in (200, 503)
    assert "Traceback" not in daemon.log()
    assert "RecursionError" not in daemon.log()


OVERLOAD_CALLS = 5000


@pytest.mark.slow
async def test_overload_bursts_in_measured_mode_cost_at_most_one_extra_meter_read_a_period(
    tmp_path: Path,
) -> None:
    period = 1.0
    async with world_and_daemon(tmp_path, _world(), "--monitor", energyMonitorPollSecs=period) as (
        world,
        daemon,
    ):
        await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector) as s:

            async def call(n: int) -> int:
                async with s.get(f"{daemon.url}/overload?source=burst{n % 7}") as r:
                    await r.read()
                    return r.status

            reads_before = world.meter.requests
            started = time.monotonic()
            codes: list[int] = []
            for i in range(0, OVERLOAD_CALLS, 500):
                codes += await asyncio.gather(*(call(n) for n in range(i, i + 500)))
            elapsed = time.monotonic() - started
            reads = world.meter.requests - reads_before
    assert codes.count(202) == OVERLOAD_CALLS
    # The regular poll plus at most one extra read a period, and a read in flight at each end.
    bound = 2 * (elapsed / period + 1) + 3
    assert reads <= bound, f"{reads} meter reads for {OVERLOAD_CALLS} calls in {elapsed:.1f} s"
    assert reads >= 1  # the meter was read meanwhile: the bound is not vacuous


def test_a_kick_reads_the_meter_at_most_once_a_period() -> None:
    assert extra_read_due(100.0, None, 1.0)
    assert not extra_read_due(100.5, 100.0, 1.0)
    assert extra_read_due(101.0, 100.0, 1.0)
