"""Run the real daemon as a child process against a simulated World, black-box."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
            s.get(self.url + path, timeout=aiohttp.ClientTimeout(total=5), **kwargs) as r,
        ):
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def status(self) -> dict[str, Any]:
        """/status as a dict."""
        code, body = await self.get("/status")
        assert code == 200
        assert isinstance(body, dict)
        return body

    async def wait_status(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
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
            code = await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        return code, time.monotonic() - started


async def wait_http(
    url: str, proc: asyncio.subprocess.Process, log: Path, timeout: float = 15.0
) -> None:
    """Wait until the daemon answers /health (any status), or fail with its log."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(url + "/health", timeout=aiohttp.ClientTimeout(total=1)):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not answer in {timeout} s:\n{log.read_text()}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def run_daemon(
    directory: Path,
    config_path: Path,
    *args: str,
    startup_secs: float = 15.0,
    log_mode: str = "wb",
) -> AsyncIterator[DaemonProcess]:
    """Start the daemon on `config_path`; SIGTERM it afterwards.

    `log_mode` "ab" keeps an earlier daemon's log in the same folder (the fault window).
    """
    log_path = directory / "daemon.log"
    port = int(__import__("json").loads(config_path.read_text())["apiPort"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
    with log_path.open(log_mode) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tesla_smart_charger", "--config", str(config_path), *args,
            stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=directory,
        )  # fmt: skip
    daemon = DaemonProcess(proc, f"http://127.0.0.1:{port}", log_path, config_path)
    try:
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
        path = world.write_config(tmp_path, apiPort=free_port(), **config)
        async with run_daemon(tmp_path, path, *args) as daemon:
            yield world, daemon
