"""A huge meter reply is a fault that costs no memory, and a reading no
house can produce (|amps| > 10 x homeMaxAmps, NaN, Infinity) is invalid, naming the field.
"""

from __future__ import annotations

import asyncio
import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.errors import MeterError
from tesla_smart_charger.shelly.build import MAX_REPLY_BYTES, ShellyMeter, create_meter
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import run_daemon

MIB = 1024 * 1024
HUGE = 50 * MIB
CHUNK = b" " * (64 * 1024)  # whitespace: valid JSON padding, so only the size can be the fault


def em_status(power: Any, reactive: Any = 0.0, voltage: Any = 230.0) -> bytes:
    body = f'{{"emeters": [{{"power": {power}, "reactive": {reactive}, "voltage": {voltage}, "is_valid": true}}]}}'
    return body.encode()


class Device:
    """A Shelly EM Gen1 on 127.0.0.1 whose /status reply the test chooses."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | huge-chunked | huge-length
        self.body = em_status(2300.0)
        self.requests = 0

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "ok":
            return web.Response(body=self.body, content_type="application/json")
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        if self.mode == "huge-length":
            resp.content_length = HUGE
        await resp.prepare(request)
        try:
            for _ in range(HUGE // len(CHUNK)):
                await resp.write(CHUNK)  # the same object: the server's memory stays flat
        except (ConnectionError, RuntimeError):
            pass  # the meter driver hung up, as it should
        return resp


@asynccontextmanager
async def serve(device: Device) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/status", device.status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.close()


def settings(address: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "home_max_amps": 30,
        "tesla_vehicle_id": "5YJ3E1EA7KF000001",
        "energy_monitor_ip": address,
        "energy_monitor_type": "shelly-em",
    }
    return Settings(**(values | extra))


@pytest.mark.parametrize("mode", ["huge-chunked", "huge-length"])
async def test_huge_reply_is_a_fault_naming_the_cap_without_memory(
    session: aiohttp.ClientSession, mode: str
) -> None:
    device = Device()
    device.mode = mode
    async with serve(device) as address:
        meter = create_meter(settings(address), session)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            with pytest.raises(MeterError) as info:
                await meter.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # And the meter is usable again afterwards (the oversized connection was dropped).
        device.mode = "ok"
        reading = await meter.read()
    assert "larger than 1024 KiB" in str(info.value)
    assert str(info.value).startswith(meter.name)
    assert peak < 4 * MIB, f"reading a 50 MB reply allocated {peak / MIB:.1f} MiB"
    assert reading.valid
    assert reading.phase_amps[0] == pytest.approx(10.0)


async def test_reply_just_under_the_cap_is_still_read(session: aiohttp.ClientSession) -> None:
    device = Device()
    padding = b" " * (MAX_REPLY_BYTES - len(device.body) - 1)
    device.body = device.body + padding
    async with serve(device) as address:
        reading = await create_meter(settings(address), session).read()
    assert reading.valid


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (em_status(3_450_000.0), "emeters[0].power: 15000 A is implausible"),  # 15 kA at 230 V
        (em_status(-3_450_000.0), "emeters[0].power: -15000 A is implausible"),
        (em_status("NaN"), "emeters[0].power: not a finite number"),
        (em_status(1.0, reactive="Infinity"), "emeters[0].reactive: not a finite number"),
        (em_status(1.0, voltage="-Infinity"), "emeters[0].voltage: not a finite number"),
    ],
)
async def test_implausible_readings_are_invalid_naming_the_field(
    session: aiohttp.ClientSession, body: bytes, field: str
) -> None:
    device = Device()
    device.body = body
    async with serve(device) as address:
        reading = await create_meter(settings(address), session).read()
    assert not reading.valid
    assert reading.error is not None
    assert field in reading.error


async def test_the_limit_follows_home_max_amps(session: aiohttp.ClientSession) -> None:
    device = Device()
    device.body = em_status(100 * 230.0)  # 100 A
    async with serve(device) as address:
        small = await create_meter(settings(address, charger_max_amps=6), session).read()
        small_house = settings(address, home_max_amps=8, charger_max_amps=6)
        tiny = await create_meter(small_house, session).read()
        unlimited = await ShellyMeter(f"http://{address}", session, meter_type="shelly-em").read()
    assert small.valid  # 100 A < 10 x 30 A
    assert not tiny.valid  # 100 A > 10 x 8 A
    assert tiny.error is not None
    assert "more than 80 A" in tiny.error
    assert unlimited.valid
    assert math.isclose(unlimited.phase_amps[0], 100.0)


def _vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


async def _until(predicate: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_daemon_rss_stays_flat_under_50_mb_meter_replies(tmp_path: Path) -> None:
    device = Device()
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    async with World(car=car, manual_house=(8.0,)) as world, serve(device) as address:
        config = world.write_config(tmp_path, energyMonitorIp=address, energyMonitorPollSecs=0.5)
        async with run_daemon(tmp_path, config, "--monitor") as daemon:
            await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
            pid = daemon.proc.pid
            # Warm up on normal replies first, so start-up growth is not counted.
            start = device.requests
            await _until(lambda: device.requests >= start + 5, timeout=15)
            before = _vm_kib(pid, "VmHWM")
            device.mode = "huge-chunked"
            start = device.requests
            await _until(lambda: device.requests >= start + 5, timeout=15)
            status = await daemon.wait_status(
                lambda st: "larger than 1024 KiB" in str(st["meter"]["error"])
            )
            after = _vm_kib(pid, "VmHWM")
            assert daemon.proc.returncode is None
    assert not status["meter"]["valid"]
    assert (after - before) < 5 * 1024, f"peak RSS grew {(after - before) / 1024:.1f} MiB"
    assert "Traceback" not in daemon.log()
