"""Run the real daemon as a child process against a simulated World, black-box."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World

VIN_A = "5YJ3E1EA7KF000001"
VIN_B = "5YJ3E1EA7KF000002"


def two_cars(*, house: float = 10.0, ramp_delay: float = 1.0, **second: Any) -> World:
    """Two cars asking 16 A behind one simulated proxy; `second` sets the second car apart."""
    a = CarModel(vin=VIN_A, request_amps=16, ramp_delay=ramp_delay, capacity_kwh=None)
    b = CarModel(
        vin=VIN_B,
        numeric_id=100022,
        vehicle_id=99998,
        request_amps=16,
        ramp_delay=ramp_delay,
        capacity_kwh=None,
        **second,
    )
    return World(cars=(a, b), manual_house=(house,))


# Deadlines for waits on a condition. They bound a failure, not a success: a wait returns as soon
# as its condition holds, so a generous deadline costs nothing when the behaviour works, and a
# loaded machine (CI, several suites side by side on 2 cores) never turns it red. See
# docs/testing.md.
# A daemon's start: ~0.6 s of CPU, but a suite starts 20 at once, and beside other suites at a
# lower priority (nice 5) one took over 60 s of wall clock.
STARTUP_SECS = 180.0
WAIT_SECS = 30.0  # a behaviour that takes well under a second on an idle machine
# A behaviour specified as "within N s" is waited for N * LOADED s: a loaded 2-core machine runs
# a daemon several times slower than an idle one. How fast it really is, is measured by
# `python -m tesla_smart_charger.bench.timing` (docs/benchmarks.md), not by the suite.
LOADED = 4.0


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, and may not be by the time it is used.

    Racy when suites run side by side: prefer apiPort 0 (the default of `World.config`, the
    daemon reports its port) and `closed_port()` for "nothing listens there".
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections and that nobody else can take meanwhile.

    The socket is bound but never listens: a connect gets "connection refused" at once.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        yield port


class Recorder:
    """Stands in for the service behind an in-process API: counts the overloads it queued."""

    def __init__(self) -> None:
        self.overloads: list[str] = []

    def overload(self, source: str) -> bool:
        self.overloads.append(source)
        return True


@dataclass
class DaemonProcess:
    """A running `python -m tesla_smart_charger` and how to reach it."""

    proc: asyncio.subprocess.Process
    url: str
    log_path: Path
    config_path: Path

    def log(self) -> str:
        """Everything the daemon printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        """GET a path of the daemon's API; (status, parsed JSON or text)."""
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.url + path, timeout=aiohttp.ClientTimeout(total=WAIT_SECS), **kwargs) as r,
        ):
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def status(self) -> dict[str, Any]:
        """/status as a dict."""
        code, body = await self.get("/status")
        assert code == 200
        assert isinstance(body, dict)
        return body

    async def wait_status(self, predicate: Any, timeout: float = WAIT_SECS) -> dict[str, Any]:
        """Poll /status until `predicate(status)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            body = await self.status()
            if predicate(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched; last: {body}")
            await asyncio.sleep(0.1)

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took)."""
        started = time.monotonic()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), WAIT_SECS)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        return code, time.monotonic() - started


async def wait_port_file(
    path: Path, proc: asyncio.subprocess.Process, log: Path, timeout: float = STARTUP_SECS
) -> int:
    """Wait until the daemon wrote the port it listens on (`--port-file`), or fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text(encoding="utf-8"))
        if proc.returncode is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon did not listen in {timeout} s:\n{log.read_text()}")
        await asyncio.sleep(0.05)


async def wait_http(
    url: str, proc: asyncio.subprocess.Process, log: Path, timeout: float = STARTUP_SECS
) -> None:
    """Wait until the daemon answers /health (any status), or fail with its log."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not answer in {timeout} s:\n{log.read_text()}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def run_daemon(
    directory: Path,
    config_path: Path,
    *args: str,
    startup_secs: float = STARTUP_SECS,
    log_mode: str = "wb",
) -> AsyncIterator[DaemonProcess]:
    """Start the daemon on `config_path`; SIGTERM it afterwards.

    The daemon writes the port it listens on to a `--port-file`: with apiPort 0 (the simulated
    World's default) the OS picks it, so suites side by side never race for a port.
    `log_mode` "ab" keeps an earlier daemon's log in the same folder (the fault window).
    """
    log_path = directory / "daemon.log"
    port_file = directory / "daemon.port"
    port_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
    with log_path.open(log_mode) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tesla_smart_charger", "--config", str(config_path),
            "--port-file", str(port_file), *args,
            stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=directory,
        )  # fmt: skip
    daemon = DaemonProcess(proc, "http://127.0.0.1:0", log_path, config_path)
    try:
        port = await wait_port_file(port_file, proc, log_path, timeout=startup_secs)
        daemon.url = f"http://127.0.0.1:{port}"
        await wait_http(daemon.url, proc, log_path, timeout=startup_secs)
        yield daemon
    finally:
        await daemon.terminate()


@contextlib.asynccontextmanager
async def world_and_daemon(
    tmp_path: Path, world: World, *args: str, **config: Any
) -> AsyncIterator[tuple[World, DaemonProcess]]:
    """Start `world`, write a config pointing at it, run the daemon on it."""
    async with world:
        path = world.write_config(tmp_path, **config)
        async with run_daemon(tmp_path, path, *args) as daemon:
            yield world, daemon
