"""The car link when it is slow or points at a car that is not there, and a meter that freezes:
the real daemon against the simulated proxy, BLE bridge and Shelly on 127.0.0.1, black-box.

Each test counts what the fault costs (billed requests, log lines) and watches /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import DaemonProcess, world_and_daemon

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


# --- a proxy that answers every command after 11 s ------------------------------------------


async def overload_with_slow_commands(world: World, daemon: DaemonProcess) -> float:
    """Car charging at 16 A under control, then every command slow and the house 20 A."""
    await meter_valid(daemon)
    await daemon.wait_status(lambda st: st["vehicle"]["charging_state"] == "Charging", 30)
    world.proxy.fail("slow", paths="/command/")
    world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
    return time.monotonic()


async def watch_health(daemon: DaemonProcess, seen: list[tuple[float, int, str]]) -> None:
    """Sample /health every 0.2 s into `seen` as (monotonic, status, body)."""
    while True:
        code, body = await daemon.get("/health")
        seen.append((time.monotonic(), code, str(body)))
        await asyncio.sleep(0.2)


async def test_slow_proxy_cut_is_a_failure_of_the_road_and_health_says_so(
    tmp_path: Path,
) -> None:
    # tesla-http-proxy's road: a slow proxy still delivers the command at 11 s; on the signed
    # road the car would refuse it as expired (a 10 s lifetime), a plain failure.
    world = World(car=charging_car(), manual_house=(10.0,), road="proxy")
    async with world_and_daemon(tmp_path, world, "--monitor") as (world, daemon):
        seen: list[tuple[float, int, str]] = []
        stepped = await overload_with_slow_commands(world, daemon)
        watcher = asyncio.create_task(watch_health(daemon, seen))
        try:

            async def car_followed() -> bool:
                return world.car.actual_amps <= 9.0

            landed = await until(car_followed, 60, daemon)

            async def healthy_again() -> bool:
                return bool(seen) and seen[-1][1] == 200

            await until(healthy_again, 60, daemon)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        late = [t - stepped for t, code, body in seen if code == 503 and "has not landed" in body]
        assert late, f"/health never said the cut was late: {seen[-5:]}"
        first_late = late[0]
        assert first_late < landed  # said while the cut had not landed, not afterwards
        status = await daemon.status()
        link = status["dependencies"]["car_link"]
        commands = len(world.proxy.commands_named("set_charging_amps"))
    log = daemon.log()
    assert log.count("did not answer within 10 s") >= 1
    assert "Traceback" not in log
    print(
        f"\nslow proxy, cloud only: car followed {landed:.1f} s after the step, /health 503 "
        f"from {first_late:.1f} s for {len(late)} samples; {commands} set_charging_amps sent; "
        f"car link {link['state']} ({link['failures']} failures)"
    )


async def test_slow_proxy_with_ble_the_cut_fails_over_to_the_bridge(tmp_path: Path) -> None:
    world = World(car=charging_car(), manual_house=(10.0,), ble=True, road="proxy")
    async with world_and_daemon(tmp_path, world, "--monitor") as (world, daemon):
        assert world.bridge is not None
        bridge = world.bridge
        bridge.set_mode("down")  # the car out of Bluetooth range: the cloud carries the cut
        stepped = await overload_with_slow_commands(world, daemon)

        async def cut_on_the_cloud() -> bool:
            # BLE failed at once; the cut waits at the slow proxy (it records it when it answers)
            st = await daemon.status()
            return bool(st["controller"]["command_in_flight"]) and st["roads"]["ble"]["failed"] > 0

        await until(cut_on_the_cloud, 30, daemon)
        sent = time.monotonic() - stepped
        bridge.set_mode("up")  # back in range while the cloud's answer is still 11 s away

        async def bridge_took_the_cut() -> bool:
            return bool(bridge.commands_named("set_charging_amps"))

        took = await until(bridge_took_the_cut, 30, daemon)
        failover = sent + took
        _, _, body = bridge.commands_named("set_charging_amps")[0]
        assert 6 <= body["charging_amps"] <= 9

        async def car_followed() -> bool:
            return world.car.actual_amps <= 9.0

        await until(car_followed, 30, daemon)
        followed = time.monotonic() - stepped
        status = await daemon.status()
        assert status["roads"]["cloud"]["failed"] >= 1
        assert "did not answer within 10 s" in (status["roads"]["cloud"]["last_error"] or "")
    log = daemon.log()
    assert "Traceback" not in log
    print(
        f"\nslow proxy, BLE down then back: cut on the cloud {sent:.1f} s after the step, "
        f"on the BLE bridge {failover:.1f} s after it, the car followed at {followed:.1f} s"
    )


# --- a meter whose values freeze ------------------------------------------------------------


async def test_a_frozen_meter_is_treated_as_silent(tmp_path: Path) -> None:
    world = World(car=charging_car(), manual_house=(10.0,))  # 26 A with the car at 16 A
    settle, stale = 2, 4
    async with world_and_daemon(
        tmp_path, world, "--monitor", carSettleSecs=settle, energyMonitorStaleSecs=stale
    ) as (world, daemon):
        await meter_valid(daemon)
        await daemon.wait_status(lambda st: st["vehicle"]["charging_state"] == "Charging", 30)
        code, _ = await daemon.get("/health")
        assert code == 200
        world.meter.set_frozen(True)  # the chip hangs: 26.0 A from now on, bit for bit
        mark = len(daemon.log().splitlines())
        async with aiohttp.ClientSession() as s:  # the driver lowers the car to 8 A
            url = f"{daemon.url}/vehicles/{world.car.vin}/limit?amps=8"
            async with s.post(url) as r:
                assert r.status == 202, await r.text()
        lowered = time.monotonic()
        await world.proxy.wait_for_command("set_charging_amps", timeout=10)

        async def failsafe() -> bool:
            code, body = await daemon.get("/health")
            return code == 503 and any("frozen" in p for p in body.get("problems", []))

        secs = await until(failsafe, 60, daemon)
        since_command = time.monotonic() - lowered
        status = await daemon.status()
        assert status["controller"]["failsafe"] is True
        assert status["meter"]["valid"] is False
        assert "frozen" in status["meter"]["error"]
        await until(lambda: _at(world, 6), 20, daemon)  # fail-safe: the car at chargerMinAmps

        world.meter.set_frozen(False)  # values move again: readings are trusted again
        world.feed()

        async def healthy() -> bool:
            code, _ = await daemon.get("/health")
            return code == 200

        await until(healthy, 30, daemon)
        lines = daemon.log().splitlines()[mark:]
    frozen_lines = [line for line in lines if "frozen" in line]
    assert len([line for line in frozen_lines if "WARNING" in line or "ERROR" in line]) == 1
    assert any("readings are back" in line for line in lines)
    print(
        f"\nfrozen meter: /health 503 {since_command:.1f} s after an 8 A lowering "
        f"(carSettleSecs {settle}, energyMonitorStaleSecs {stale}; polled {secs:.1f} s); "
        f"{len(frozen_lines)} log lines name it, {len(lines)} lines in all"
    )


async def _at(world: World, amps: int) -> bool:
    return world.car.request_amps == amps
