"""BLE first, the cloud only when BLE fails: against a real bridge and a real proxy on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from tenacity import wait_none

from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.failover import FailoverVehicle
from tesla_smart_charger.car.fleet_api import ApiCallCounter, StaticTokenSource, TeslaClient
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import (
    BleUnavailable,
    CommandRefused,
    TeslaTransientError,
    VehicleAsleep,
)
from tesla_smart_charger.simulator.ble import SimulatedBleBridge
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.proxy import SimulatedProxy

VIN = "5YJ3E1EA7KF000001"
TOKEN = SecretStr("header.payload.signature")


@dataclass
class World:
    car: CarModel
    bridge: SimulatedBleBridge
    proxy: SimulatedProxy
    vehicle: FailoverVehicle
    results: list[tuple[str, bool, str | None]]
    available: dict[str, bool]


@pytest.fixture
async def world(session: aiohttp.ClientSession) -> AsyncIterator[World]:
    car = CarModel(vin=VIN, request_amps=16, ramp_delay=0.0)
    bridge, proxy = SimulatedBleBridge(car), SimulatedProxy(car)
    ble_url, cloud_url = await bridge.start(), await proxy.start()
    cloud = TeslaClient(
        session,
        cloud_url,
        VIN,
        StaticTokenSource(TOKEN),
        ApiCallCounter(),
        retry_wait=wait_none(),
        retry_attempts=1,
    )
    results: list[tuple[str, bool, str | None]] = []
    available = {"ble": True, "cloud": True}
    vehicle = FailoverVehicle(
        [("ble", BleVehicle(session, ble_url, VIN)), ("cloud", cloud)],
        road_available=lambda name: available[name],
        on_result=lambda name, ok, err: results.append(
            (name, ok, type(err).__name__ if err else None)
        ),
    )
    try:
        yield World(car, bridge, proxy, vehicle, results, available)
    finally:
        await bridge.stop()
        await proxy.stop()
        assert car.wakes == 0  # never woken, on either road
        assert bridge.wakeup_requests == 0


async def test_bridge_up_the_cloud_hears_nothing(world: World) -> None:
    await world.vehicle.set_charging_amps(10)
    snap = await world.vehicle.snapshot()
    await world.vehicle.charge_stop()
    assert world.car.request_amps == 10
    assert world.car.charging_state == "Stopped"
    assert snap.state is VehicleState.ONLINE
    assert len(world.bridge.commands) == 2
    assert world.proxy.requests == []  # no command, no vehicle_data, no state call
    assert world.proxy.billing.data + world.proxy.billing.command == 0
    assert world.vehicle.last_road == "ble"
    assert world.vehicle.stats()["ble"].ok == 3


async def test_bridge_refusing_connections_the_cloud_gets_the_cut(world: World) -> None:
    await world.bridge.stop()
    await world.vehicle.set_charging_amps(8)
    assert [c[1:] for c in world.proxy.commands] == [("set_charging_amps", {"charging_amps": 8})]
    assert world.car.request_amps == 8
    ble, cloud = world.vehicle.stats()["ble"], world.vehicle.stats()["cloud"]
    assert (ble.failed, ble.fallbacks, cloud.ok) == (1, 1, 1)
    assert ble.last_error is not None
    assert "cannot reach the BLE bridge" in ble.last_error
    assert world.results == [("ble", False, "BleUnavailable"), ("cloud", True, None)]
    assert world.vehicle.last_road == "cloud"


async def test_bridge_out_of_range_the_cloud_gets_the_cut(world: World) -> None:
    world.bridge.set_mode("down")
    await world.vehicle.charge_stop()
    assert len(world.proxy.commands_named("charge_stop")) == 1
    assert world.car.charging_state == "Stopped"


async def test_a_refusal_by_the_car_is_not_failed_over(world: World) -> None:
    with pytest.raises(CommandRefused, match="is_charging"):
        await world.vehicle.charge_start()  # the car is already charging
    assert world.proxy.requests == []
    assert world.vehicle.stats()["ble"].refused == 1
    assert world.results == [("ble", True, "CommandRefused")]


async def test_a_road_in_back_off_is_skipped(world: World) -> None:
    world.available["ble"] = False
    await world.vehicle.set_charging_amps(12)
    assert world.bridge.commands == []
    assert len(world.proxy.commands) == 1
    assert world.vehicle.stats()["ble"].skipped == 1


async def test_every_road_in_back_off_still_sends_the_cut(world: World) -> None:
    world.available.update(ble=False, cloud=False)
    await world.vehicle.set_charging_amps(7)
    assert world.car.request_amps == 7
    assert world.vehicle.last_road == "ble"


async def test_both_roads_down_raises_the_last_error(world: World) -> None:
    world.bridge.set_mode("down")
    world.proxy.inject(503, count=1)
    with pytest.raises(TeslaTransientError) as caught:
        await world.vehicle.charge_stop()
    assert not isinstance(caught.value, BleUnavailable)  # the cloud's, the last tried
    assert [r[:2] for r in world.results] == [("ble", False), ("cloud", False)]


async def test_cloud_vehicle_unavailable_while_charging_is_bypassed_by_ble(world: World) -> None:
    world.car.fault = "unavailable_while_charging"  # vehicle-command issue 452
    await world.vehicle.set_charging_amps(9)
    assert world.car.request_amps == 9
    world.bridge.set_mode("down")
    with pytest.raises(VehicleAsleep):
        await world.vehicle.set_charging_amps(8)


async def test_on_road_uses_one_road_and_shares_its_counters(world: World) -> None:
    assert world.vehicle.other_road("ble") == "cloud"
    assert world.vehicle.other_road("cloud") == "ble"
    await world.vehicle.on_road("cloud").set_charging_amps(11)
    assert world.bridge.commands == []
    assert len(world.proxy.commands) == 1
    assert world.vehicle.stats()["cloud"].ok == 1
    with pytest.raises(KeyError):
        world.vehicle.on_road("lora")


async def test_road_down_is_logged_once_and_back_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tesla_smart_charger.car.failover")
    world.bridge.set_mode("down")
    for amps in (10, 9, 8):
        await world.vehicle.set_charging_amps(amps)
    world.bridge.set_mode("up")
    await world.vehicle.set_charging_amps(7)
    await world.vehicle.set_charging_amps(6)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not getting through" in m for m in messages) == 1
    assert sum("reaches the car again" in m for m in messages) == 1
    assert world.vehicle.stats()["ble"].down_since is None


async def test_roads_down_longer_than(world: World) -> None:
    now = [1000.0]
    vehicle = FailoverVehicle(
        [("ble", world.vehicle.on_road("ble")), ("cloud", world.vehicle.on_road("cloud"))],
        clock=lambda: now[0],
    )
    world.bridge.set_mode("down")
    await vehicle.charge_stop()
    assert vehicle.roads_down_longer_than(300, 1200.0) == []
    assert vehicle.roads_down_longer_than(300, 1301.0) == ["ble"]


def test_road_names_must_be_unique() -> None:
    car = CarModel(vin=VIN)
    with pytest.raises(ValueError, match="unique"):
        FailoverVehicle([("a", car), ("a", car)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        FailoverVehicle([])
