"""When a cut may not land, black-box: the real daemon with a BLE bridge, a cloud proxy, a relay
and an alert webhook, all simulated on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, closed_port, world_and_daemon
from tests.helpers.escalation import charging_car, meter_valid

pytestmark = pytest.mark.slow


def cloud_data_requests(world: World) -> list[str]:
    return [path for _, _, path, _ in world.proxy.requests if "vehicle_data" in path]


async def test_cut_goes_over_ble_and_the_cloud_is_not_asked(tmp_path: Path) -> None:
    world = World(car=charging_car(), manual_house=(10.0,), ble=True)
    async with world_and_daemon(tmp_path, world, "--monitor") as (world, daemon):
        await meter_valid(daemon)
        assert world.bridge is not None
        world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
        await world.bridge.wait_until(
            lambda: bool(world.bridge and world.bridge.commands_named("set_charging_amps")),
            timeout=2 * LOADED,
        )
        _, _, body = world.bridge.commands_named("set_charging_amps")[0]
        assert 6 <= body["charging_amps"] <= 9
        status = await daemon.status()
        assert status["dependencies"]["ble_bridge"]["state"] == "ok"
        assert status["roads"]["ble"]["ok"] >= 1
        assert status["roads"]["cloud"]["calls"] == 0
        assert status["controller"]["escalation"] == "none"
        code, text = await daemon.get("/metrics")
        assert code == 200
        assert 'dependency="ble_bridge"' in text
        assert "tesla_smart_charger_escalation_level" in text
    assert world.proxy.commands == []
    assert cloud_data_requests(world) == []
    assert world.bridge.requests["vehicle_data"] >= 1  # the look went over BLE too
    assert world.car.wakes == 0
    assert world.bridge.wakeup_requests == 0
    assert world.proxy.billing.wake == 0


async def test_ble_refusing_connections_the_cut_goes_to_the_cloud(tmp_path: Path) -> None:
    world = World(car=charging_car(), manual_house=(10.0,))
    with closed_port() as port:  # nothing listens there, nor can anything else meanwhile
        dead_bridge = f"http://127.0.0.1:{port}"
        async with world_and_daemon(tmp_path, world, "--monitor", teslaBleProxy=dead_bridge) as (
            world,
            daemon,
        ):
            await meter_valid(daemon)
            world.set_house(20.0)
            _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=5 * LOADED)
            assert 6 <= body["charging_amps"] <= 9
            status = await daemon.status()
            assert status["roads"]["ble"]["failed"] >= 1
            assert status["roads"]["ble"]["down"] is True
            assert status["dependencies"]["ble_bridge"]["state"] in ("degraded", "down")
            assert status["dependencies"]["car_link"]["state"] == "ok"
            code, _ = await daemon.get("/health")
            assert code == 200  # the cloud road carries the cut: nothing is unprotected
    log = daemon.log()
    assert log.count("the BLE bridge is not getting through to the car") == 1
    assert world.car.wakes == 0
    assert world.proxy.billing.wake == 0
