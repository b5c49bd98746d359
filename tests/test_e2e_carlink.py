"""The car link when it is slow or points at a car that is not there, and a meter that freezes:
the real daemon against the simulated proxy, BLE bridge and Shelly on 127.0.0.1, black-box.

Each test counts what the fault costs (billed requests, log lines) and watches /health.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.e2e import DaemonProcess, world_and_daemon

pytestmark = pytest.mark.slow

SLOW_SECS = 11.0  # the proxy's answer to every command: longer than a cut may take


def charging_car(**kwargs: object) -> CarModel:
    return CarModel(
        request_amps=16,
        charging_state="Charging",
        ramp_delay=0.5,
        capacity_kwh=None,
        **kwargs,  # type: ignore[arg-type]
    )


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, daemon: DaemonProcess
) -> float:
    """Await `predicate()` every 0.1 s; the seconds it took, or fail with the daemon's log."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met in {timeout} s:\n{daemon.log()[-5000:]}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def meter_valid(daemon: DaemonProcess) -> None:
    await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"], 30)


# --- a numeric teslaVehicleId that is not on the account ------------------------------------


async def test_unknown_numeric_vehicle_is_capped_named_and_unhealthy(tmp_path: Path) -> None:
    world = World(car=charging_car(), manual_house=(20.0,))  # 36 A on a 30 A main
    async with world_and_daemon(tmp_path, world, "--monitor", teslaVehicleId="123") as (
        world,
        daemon,
    ):
        await meter_valid(daemon)
        words = "vehicle 123 is not on this account"

        async def unhealthy() -> bool:
            code, body = await daemon.get("/health")
            return code == 503 and words in str(body)

        await until(unhealthy, 30, daemon)
        billed_before = world.proxy.billing.data + world.proxy.billing.command
        mark = len(daemon.log().splitlines())
        started = time.monotonic()
        while time.monotonic() - started < 20.0:  # ~20 meter readings a second apart
            code, body = await daemon.get("/health")
            assert code == 503, body
            assert words in str(body)
            await asyncio.sleep(1.0)
        billed = world.proxy.billing.data + world.proxy.billing.command - billed_before
        readings = (await daemon.status())["meter"]
        assert readings["valid"]
        # the policy's cap (60 s) paces the lookup: at most one more in the window
        assert billed <= 1, world.proxy.requests
        new_lines = daemon.log().splitlines()[mark:]
        assert len(new_lines) <= 2, new_lines
    log = daemon.log()
    assert log.count(words) >= 1
    assert "Traceback" not in log
    assert world.proxy.commands == []  # nothing was ever sent to a car we cannot name
    total = world.proxy.billing.data + world.proxy.billing.command
    print(f"\nunknown vehicle: {total} billed requests in all, {billed} in the 20 s window")
