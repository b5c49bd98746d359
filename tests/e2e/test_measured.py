"""Measured mode, black-box: against simulated Shelly meters and car."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, run_daemon, world_and_daemon
from tests.helpers.fixtures import load_fixture

pytestmark = pytest.mark.slow


def car_at(amps: int, ramp: float = 2.0) -> CarModel:
    return CarModel(
        request_amps=amps, charging_state="Charging", ramp_delay=ramp, capacity_kwh=None
    )


async def test_house_step_is_cut_within_three_seconds_and_restored(tmp_path: Path) -> None:
    world = World(car=car_at(16, ramp=2.0), manual_house=(10.0,))
    async with world_and_daemon(tmp_path, world, "--monitor", sleepTimeSecs=5) as (world, daemon):
        await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
        world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=3 * LOADED)
        assert 6 <= body["charging_amps"] <= 9
        world.set_house(10.0)
        await world.proxy.wait_until(
            lambda: world.car.current_draw(time.monotonic()) == 16, timeout=5 + 15 * LOADED
        )
        assert len(world.proxy.commands) <= 4
        assert world.car.wakes == 0
        status = await daemon.status()
        assert status["meter"]["type"] == "shelly-em"
        assert status["controller"]["mode"] == "measured"


async def test_meter_silence_commands_minimum_within_stale_plus_two(tmp_path: Path) -> None:
    world = World(car=car_at(16, ramp=0.5), manual_house=(8.0,))
    async with world_and_daemon(tmp_path, world, "--monitor", energyMonitorStaleSecs=4) as (
        world,
        daemon,
    ):
        await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
        world.meter.set_responding(False)
        # the stale time runs on the daemon's clock; its reaction gets a loaded machine's slack
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=4 + 2 * LOADED)
        assert body == {"charging_amps": 6}
        code, health = await daemon.get("/health")
        assert code == 503
        assert any("fail-safe" in p for p in health["problems"])
        world.meter.set_responding(True)
        await daemon.wait_status(lambda st: not st["controller"]["failsafe"])
    log = daemon.log()
    assert log.count("no reading") == 1  # one line on loss, not one per failed poll
    assert "readings are back" in log


async def test_pro3em_fixture_is_reported_per_phase(tmp_path: Path) -> None:
    world = World(
        meter_kind="pro3em", phases=3, car=CarModel(state="asleep", charging_state="Stopped")
    )
    async with world:
        world.meter.set_status_override(load_fixture("shelly/pro3em_em_status.json"))
        path = world.write_config(tmp_path, homeMaxAmps=25, chargerMaxAmps=16)
        async with run_daemon(tmp_path, path, "--monitor") as daemon:
            status = await daemon.wait_status(
                lambda st: st["meter"] is not None and st["meter"]["amps"] is not None
            )
            assert status["meter"]["amps"] == [9.592, 0.044, 1.479]
            assert status["meter"]["valid"] is True


async def test_wrong_meter_password_is_named_and_daemon_stays_in_failsafe(tmp_path: Path) -> None:
    world = World(meter_kind="pro3em", phases=3, meter_password="right-pass-SECRET", car=car_at(16))
    async with world_and_daemon(
        tmp_path,
        world,
        "--monitor",
        energyMonitorPassword="wrong-pass-SECRET",
        energyMonitorStaleSecs=3,
    ) as (_, daemon):
        status = await daemon.wait_status(lambda st: st["controller"]["failsafe"])
        assert "authentication failed" in (status["meter"]["error"] or "")
        code, health = await daemon.get("/health")
        assert code == 503
        assert any("authentication" in p for p in health["problems"])
        assert daemon.proc.returncode is None
    log = daemon.log()
    assert "Traceback" not in log
    assert "authentication failed" in log
    assert "wrong-pass-SECRET" not in log
    assert "right-pass-SECRET" not in log


async def test_car_starting_at_full_current_into_a_loaded_house_is_caught(tmp_path: Path) -> None:
    car = CarModel(
        request_amps=32,
        pilot_amps=32,
        plugged=False,
        charging_state="Disconnected",
        ramp_delay=1.0,
        capacity_kwh=None,
    )
    world = World(car=car, manual_house=(20.0,))
    async with world_and_daemon(tmp_path, world, "--monitor", chargerMaxAmps=16) as (world, daemon):
        # The daemon has looked at the car once (start-up) and knows it is not charging.
        await daemon.wait_status(lambda st: st["vehicle"]["charging_state"] == "Disconnected")
        world.car.plug_in(time.monotonic())  # starts at 32 A: 52 A on a 30 A main
        world.feed()
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=4 * LOADED)
        assert body == {"charging_amps": 9}  # 30 - 1 (margin) - 20 (house)
        status = await daemon.status()
        assert status["controller"]["driver_amps"] == 32
        assert world.car.wakes == 0


async def test_429_storm_is_waited_out_not_hammered(tmp_path: Path) -> None:
    world = World(car=car_at(16, ramp=0.5), manual_house=(10.0,))
    async with world_and_daemon(tmp_path, world, "--monitor", sleepTimeSecs=5) as (world, daemon):
        await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
        world.proxy.inject(429, count=3, retry_after=2.0)
        world.set_house(20.0)
        started = time.monotonic()

        await world.proxy.wait_until(
            lambda: bool(world.proxy.commands_named("set_charging_amps")), timeout=15 * LOADED
        )
        _, _, body = world.proxy.commands_named("set_charging_amps")[-1]
        assert 6 <= body["charging_amps"] <= 9
        limited = [r for r in world.proxy.requests if r[3] == 429]
        assert len(limited) == 3
        # Each 429 said "after 2 s": the next request came no sooner.
        times = [r[0] for r in world.proxy.requests if r[0] >= limited[0][0]]
        assert all(b - a >= 1.9 for a, b in itertools.pairwise(times[:4]))
        assert time.monotonic() - started >= 3 * 2.0 - 0.5
        status = await daemon.status()
        by_outcome = status["api_calls"]["by_outcome"]
        assert sum(outcomes.get("rate_limited", 0) for outcomes in by_outcome.values()) == 3
        assert daemon.proc.returncode is None
