"""File descriptors and connections: many clients must not starve the cut.

Idle, half-open or malformed connections to the API must neither exhaust descriptors nor
delay a cut nor flood the log. First the pieces against a real server on 127.0.0.1, then the
acceptance line: the real daemon at `ulimit -n 1024`, 1,100 idle connections, then an overload.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tesla_smart_charger.httpapi.server import (
    ApiContext,
    ConnectionLimiter,
    build_app,
    connection_cap,
    listen,
    make_runner,
    quiet_server_logs,
    raise_fd_limit,
)
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, WAIT_SECS, DaemonProcess, wait_http, wait_port_file
from tests.helpers.status import sample_status

IDLE_CONNECTIONS = 1100
DAEMON_FD_LIMIT = 1024


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Api:
    """The real HTTP app behind `listen()`, with a /slow route a test can hold open."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.overloads = 0
        self.in_slow = 0  # requests inside /slow: busy, as the limiter counts busy
        self.limiter: ConnectionLimiter | None = None
        self.port = 0

    def overload(self, source: str) -> bool:
        self.overloads += 1
        return True

    async def slow(self, request: web.Request) -> web.Response:
        self.in_slow += 1
        await self.release.wait()
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def serve(
    limit: int, keepalive_secs: float = 30.0, per_client: int | None = None
) -> AsyncIterator[Api]:
    api = Api()
    ctx = ApiContext(
        api.overload, sample_status, dict, list, extra_routes=[web.get("/slow", api.slow)]
    )
    runner = make_runner(build_app(ctx), keepalive_secs=keepalive_secs)
    await runner.setup()
    listener, api.limiter = await listen(
        runner, "127.0.0.1", 0, max_connections=limit, per_client=per_client
    )
    api.port = listener.sockets[0].getsockname()[1]
    try:
        yield api
    finally:
        api.release.set()
        listener.close()
        await runner.cleanup()


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connected TCP sockets that never send a byte."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            assert err in (0, errno.EINPROGRESS), os.strerror(err)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from another loopback address (another client)."""
    s = socket.socket()
    s.bind((source, 0))
    s.setblocking(False)
    err = s.connect_ex(("127.0.0.1", port))
    assert err in (0, errno.EINPROGRESS), os.strerror(err)
    return s


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    async with serve(limit=4) as api:
        assert api.limiter is not None
        with idle_sockets(api.port, 4) as socks:
            limiter = api.limiter
            await until(lambda: limiter.open_connections == 4, 5 * LOADED, "4 connections")
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{api.port}/overload") as r,
            ):
                assert r.status == 202
            await until(
                lambda: closed_by_peer(socks[0]), 5 * LOADED, "the oldest idle one to close"
            )
            assert not closed_by_peer(socks[3])
        assert api.limiter.evicted >= 1
        assert api.overloads == 1


async def test_one_client_address_cannot_take_every_place() -> None:
    async with serve(limit=16, per_client=3) as api:
        assert api.limiter is not None
        limiter = api.limiter
        socks = [connect_from("127.0.0.2", api.port) for _ in range(5)]
        try:
            await until(lambda: limiter.client_capped >= 2, 5, "two over the client's cap")
            await until(
                lambda: closed_by_peer(socks[0]) and closed_by_peer(socks[1]), 5, "oldest closed"
            )
            assert not closed_by_peer(socks[4])
            assert limiter.evicted == 0  # far below the global cap: only the client's own went
            # Another address still gets in and is served.
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{api.port}/overload") as r,
            ):
                assert r.status == 202
        finally:
            for sock in socks:
                sock.close()
    assert api.overloads == 1


async def test_when_every_connection_is_busy_a_newcomer_is_reset() -> None:
    async with serve(limit=3) as api, aiohttp.ClientSession() as s:
        assert api.limiter is not None
        url = f"http://127.0.0.1:{api.port}"
        slow = [asyncio.create_task(s.get(url + "/slow")) for _ in range(3)]
        limiter = api.limiter
        # Busy means mid-request: three open connections whose requests the server has not
        # read yet are idle, and a newcomer would rightly evict one (seen on a busy machine).
        await until(lambda: limiter.open_connections == 3, 5 * LOADED, "3 connections")
        await until(lambda: api.in_slow == 3, 5 * LOADED, "3 busy")
        async with aiohttp.ClientSession() as other:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with other.get(url + "/health") as r:
                    await r.read()
        assert api.limiter.refused >= 1
        api.release.set()
        for task in slow:
            async with await task as r:
                assert r.status == 200  # the busy ones were never cut


async def test_silent_or_slow_connections_are_closed_after_the_keepalive_time() -> None:
    async with serve(limit=16, keepalive_secs=0.5) as api:
        with idle_sockets(api.port, 2) as (silent, slow):
            await asyncio.sleep(0)  # let the connects complete before sending
            await until(
                lambda: slow.connect_ex(("127.0.0.1", api.port)) in (errno.EISCONN, 0),
                5 * LOADED,
                "connect",
            )
            slow.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            # without the keepalive deadline neither would ever be closed
            await until(
                lambda: closed_by_peer(silent) and closed_by_peer(slow), 5 * LOADED, "closed"
            )


MALFORMED = [
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /overload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /health HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on the HTTP port
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_requests_get_400_and_no_error_log(
    caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.INFO)
    async with serve(limit=16) as api:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(request_bytes)
        await writer.drain()
        async with asyncio.timeout(WAIT_SECS):
            reply = await reader.read()
        writer.close()
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"413", b"431", b"505")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    assert api.overloads == 0


async def test_malformed_request_tracebacks_stay_available_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(limit=16) as api:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(MALFORMED[0])
        await writer.drain()
        async with asyncio.timeout(WAIT_SECS):
            await reader.read()
        writer.close()
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server_records
    assert all(r.levelno == logging.DEBUG for r in server_records)


def test_accept_errors_are_one_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    quiet_server_logs()
    log = logging.getLogger("asyncio")
    exc = OSError(errno.EMFILE, "Too many open files")
    for _ in range(500):
        log.error(
            "socket.accept() out of system resource\nsocket: <socket>\nOSError: %s",
            "x",
            exc_info=(type(exc), exc, None),
        )
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) <= 1  # one per 10 minutes per process (an earlier test may have used it)
    for record in records:
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert "out of file descriptors" in record.getMessage()


def test_soft_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        raised = raise_fd_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY:
            assert raised == (hard, hard)
        else:
            assert raised[0] >= 65536
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connection_cap_leaves_descriptors_for_the_meter_and_the_car() -> None:
    assert connection_cap(1024) == 256
    assert connection_cap(256) == 96
    assert connection_cap(100) == 18
    assert connection_cap(20) == 8
    assert connection_cap(1_048_576) == 256


# --- acceptance: the real daemon ------------------------------------------------------------


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_FD_LIMIT, DAEMON_FD_LIMIT))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
async def test_1100_idle_connections_at_ulimit_1024_do_not_delay_the_cut(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 200:
        if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 200:
            pytest.skip(
                f"this test needs {IDLE_CONNECTIONS + 200} descriptors; the hard limit is {hard}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (IDLE_CONNECTIONS + 200, hard))
    car = CarModel(request_amps=16, charging_state="Charging", ramp_delay=1.0, capacity_kwh=None)
    try:
        async with World(car=car, manual_house=(10.0,)) as world:
            config = world.write_config(tmp_path)
            port_file = tmp_path / "daemon.port"
            log_path = tmp_path / "daemon.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tesla_smart_charger", "--config", str(config), "--monitor",
                    "--port-file", str(port_file),
                    stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path,
                    preexec_fn=_limit_fds,
                )  # fmt: skip
            daemon = DaemonProcess(proc, "http://127.0.0.1:0", log_path, config)
            try:
                port = await wait_port_file(port_file, proc, log_path)
                daemon.url = f"http://127.0.0.1:{port}"
                await wait_http(daemon.url, proc, log_path)
                limits = Path(f"/proc/{proc.pid}/limits").read_text()
                assert any(
                    line.startswith("Max open files") and " 1024 " in line
                    for line in limits.splitlines()
                )
                await daemon.wait_status(
                    lambda st: st["meter"] is not None and st["meter"]["valid"]
                )
                lines_before = len(daemon.log().splitlines())

                with idle_sockets(port, IDLE_CONNECTIONS):
                    # The daemon accepts them all (evicting the oldest idle ones at its cap).
                    await until(
                        lambda: open_fds(proc.pid) > 256, 20 * LOADED, "the daemon to hold its cap"
                    )
                    world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
                    # Not a deadline the descriptors could break: a full table would stall
                    # the meter poll and the car call for good, not slow them down.
                    _, _, body = await world.proxy.wait_for_command(
                        "set_charging_amps", timeout=5 * LOADED
                    )
                    fds = open_fds(proc.pid)
                    code, _ = await daemon.get("/health")  # and the API still answers
                assert proc.returncode is None
            finally:
                await daemon.terminate()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert 6 <= body["charging_amps"] <= 9
    assert code in (200, 503)
    assert fds < 400, f"{fds} descriptors open"
    text = daemon.log()
    assert "Traceback" not in text
    assert "Too many open files" not in text
    new_lines = text.splitlines()[lines_before:]
    assert len(new_lines) <= 10, new_lines


def test_deployments_set_the_descriptor_limit() -> None:
    root = Path(__file__).resolve().parents[3]
    unit = (root / "docs/deploy/tesla-smart-charger.service").read_text(encoding="utf-8")
    assert "\nLimitNOFILE=8192\n" in unit
    compose = (root / "compose.yaml").read_text(encoding="utf-8")
    assert "      nofile:\n        soft: 8192\n        hard: 8192\n" in compose
