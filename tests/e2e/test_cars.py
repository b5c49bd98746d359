"""Several cars, black-box: two cars behind one local proxy share one 30 A supply."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import (
    LOADED,
    VIN_A,
    VIN_B,
    WAIT_SECS,
    run_daemon,
    two_cars,
    world_and_daemon,
)

pytestmark = pytest.mark.slow


async def settled(world: World, seconds: float, timeout: float) -> None:
    """Poll until neither car's setting changed for `seconds` (fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    last = (world.car.request_amps, world.cars[1].request_amps)
    since = time.monotonic()
    while time.monotonic() - since < seconds:
        assert time.monotonic() < deadline, f"never settled: {last}"
        await asyncio.sleep(0.1)
        now = (world.car.request_amps, world.cars[1].request_amps)
        if now != last:
            last, since = now, time.monotonic()


async def total_within(world: World, limit: float, timeout: float) -> float:
    start = time.monotonic()
    while max(world.supply_amps()) > limit:
        assert time.monotonic() - start <= timeout, (
            f"supply {world.supply_amps()} after {timeout} s"
        )
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize(("prio_a", "prio_b"), [(0, 0), (1, 0)])
async def test_two_cars_share_the_supply(tmp_path: Path, prio_a: int, prio_b: int) -> None:
    world = two_cars()
    cars = [{"vin": VIN_A, "priority": prio_a}, {"vin": VIN_B, "priority": prio_b, "name": "B"}]
    async with world_and_daemon(
        tmp_path, world, "--monitor", vehicles=cars, sleepTimeSecs=3, carSettleSecs=3
    ) as (
        world,
        daemon,
    ):
        assert max(world.supply_amps()) > 30  # 10 + 16 + 16
        await daemon.wait_status(lambda s: s["meter"] is not None and s["meter"]["valid"])
        await total_within(world, 30.0, 4 * LOADED)  # 4 s on an idle machine
        await settled(world, 8.0, 60.0)  # a raise waits for settling + sleepTimeSecs
        a, b = world.car.request_amps, world.cars[1].request_amps
        assert max(world.supply_amps()) <= 30.0
        if prio_a == prio_b:
            assert abs(a - b) <= 1
        else:
            assert b < a  # the low-priority car is the one cut
            assert b == 6
        st = await daemon.status()
        assert [v["vin"] for v in st["vehicles"]] == [VIN_A, VIN_B]
        assert st["vehicles"][1]["name"] == "B"
        assert world.car.wakes == 0
        assert world.cars[1].wakes == 0


async def test_one_entry_in_vehicles_is_that_car_with_its_own_keys(tmp_path: Path) -> None:
    car = CarModel(vin=VIN_A, request_amps=16, ramp_delay=1.0, capacity_kwh=None)
    cars = [{"vin": VIN_A, "chargerMaxAmps": 10, "name": "Only"}]
    async with world_and_daemon(
        tmp_path, World(car=car), "--monitor", vehicles=cars, teslaVehicleId="5YJ3E1EA7KF999999"
    ) as (world, daemon):
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=WAIT_SECS)
        assert body["charging_amps"] == 10  # its own chargerMaxAmps, on its own VIN
        st = await daemon.wait_status(lambda s: s["vehicles"][0]["setpoint_amps"] == 10)
        assert st["vehicles"][0]["vin"] == VIN_A
        assert st["vehicles"][0]["name"] == "Only"


async def test_the_car_that_ignores_its_cut_is_stopped_and_the_other_is_not(
    tmp_path: Path,
) -> None:
    """Several cars and failed cuts: each car escalates on its own, only the one that ignores."""
    escalate = 5.0
    async with two_cars(ramp_delay=0.5, fault="ignores_commands") as world:
        cfg = world.config(
            vehicles=[{"vin": VIN_A, "name": "A", "priority": 1}, {"vin": VIN_B, "name": "B"}],
            escalateAfterSecs=escalate,
            carSettleSecs=2,
        )
        del cfg["teslaVehicleId"]  # `vehicles` names the cars
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg), encoding="utf-8")
        async with run_daemon(tmp_path, path, "--monitor") as daemon:
            await daemon.wait_status(lambda s: s["meter"] is not None and s["meter"]["valid"])
            started = time.monotonic()
            assert max(world.supply_amps()) > 30  # 10 + 16 + 16 on a 30 A main
            deadline = started + escalate + 5 * LOADED
            while not stops(world, VIN_B):
                assert time.monotonic() < deadline, daemon.log()[-4000:]
                await asyncio.sleep(0.05)
            status = await daemon.wait_status(lambda s: s["vehicles"][1]["escalation"] != "none")
            assert [v["name"] for v in status["vehicles"]] == ["A", "B"]
            assert status["vehicles"][1]["escalation"] == "charge_stop"
            assert status["vehicles"][0]["escalation"] == "none"
            assert status["controller"]["escalation"] == "charge_stop"  # the worst car's
            code, health = await daemon.get("/health")
            assert code == 503
            assert any("B did not follow a cut" in p for p in health["problems"])
            code, text = await daemon.get("/metrics")
            assert f'vehicle_escalation_level{{level="charge_stop",vin="{VIN_B}"}} 1.0' in text
        log = daemon.log()
    assert stops(world, VIN_A) == 0  # the car that followed its cuts keeps charging
    assert "B: the car ignored the cut" in log  # the alert names the car
    assert world.car.wakes == 0
    assert world.cars[1].wakes == 0


def stops(world: World, vin: str) -> int:
    """charge_stop commands the proxy got for `vin`."""
    return sum(1 for _, name, _ in world.proxy.commands_for(vin) if name == "charge_stop")


async def test_push_mode_cuts_one_car_the_lowest_priority_and_a_burst_is_one_cut(
    tmp_path: Path,
) -> None:
    """Push mode has no meter to share by: an /overload burst cuts one car, once."""
    cars = [{"vin": VIN_A, "priority": 1}, {"vin": VIN_B, "priority": 0}]
    async with world_and_daemon(tmp_path, two_cars(), vehicles=cars) as (world, daemon):
        for _ in range(10):
            code, _ = await daemon.get("/overload")
            assert code == 202
        await world.proxy.wait_for_command("set_charging_amps", timeout=WAIT_SECS)
        st = await daemon.wait_status(lambda s: s["vehicles"][1]["setpoint_amps"] == 8)
        assert st["controller"]["mode"] == "push"
        assert [c[2] for c in world.proxy.commands_for(VIN_B)] == [{"charging_amps": 8}]
        assert world.proxy.commands_for(VIN_A) == []  # the high-priority car is not touched
        assert world.cars[1].request_amps == 8
        assert world.car.request_amps == 16
