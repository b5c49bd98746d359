"""`doctor` checks the BLE bridge and the safety relay when they are configured."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.doctor import doctor_rows
from tests.helpers.e2e import closed_port
from tests.helpers.setup_cli import run


def rows(out: str) -> dict[str, str]:
    """check name -> its verdict, result and fix."""
    return doctor_rows(out)


async def test_doctor_checks_bridge_and_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(car=CarModel(state="asleep"), ble=True, relay_gen=1)
    async with world:
        config = world.write_config(
            tmp_path,
        )
        await asyncio.to_thread(run, "--config", str(config), "doctor")
        out = capsys.readouterr().out
        assert world.relay is not None
        assert world.relay.switches == []  # the doctor only reads the relay
    found = rows(out)
    assert found["BLE bridge reachable"].startswith("ok")
    assert found["BLE bridge knows the VIN"].startswith("ok")
    assert found["BLE sleep state readable"].startswith("ok")
    assert "asleep (not woken)" in found["BLE sleep state readable"]
    assert found["safety relay"].startswith("ok")
    assert "(Gen1): charger circuit on" in found["safety relay"]
    assert world.car.wakes == 0


async def test_doctor_names_a_bridge_that_does_not_know_the_car_and_a_relay_that_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(car=CarModel(state="online"), ble=True, relay_gen=2)
    async with world:
        assert world.relay is not None
        world.relay.set_output(0, False)
        config = world.write_config(tmp_path, teslaVehicleId="5YJ3E1EA7KF999999")
        code = await asyncio.to_thread(run, "--config", str(config), "doctor")
        out = capsys.readouterr().out
    assert code == 1
    found = rows(out)
    assert found["BLE bridge reachable"].startswith("ok")
    assert found["BLE bridge knows the VIN"].startswith("FAIL")
    assert "pair the bridge" in found["BLE bridge knows the VIN"]
    assert found["BLE sleep state readable"].startswith("skip")
    assert found["safety relay"].startswith("FAIL")
    assert "charger circuit is OFF" in found["safety relay"]


async def test_doctor_names_an_unreachable_bridge_and_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World()
    async with world:
        with closed_port() as bridge, closed_port() as relay:
            config = world.write_config(
                tmp_path,
                teslaBleProxy=f"http://127.0.0.1:{bridge}",
                safetyRelayIp=f"127.0.0.1:{relay}",
            )
            code = await asyncio.to_thread(run, "--config", str(config), "doctor")
            out = capsys.readouterr().out
    assert code == 1
    found = rows(out)
    assert found["BLE bridge reachable"].startswith("FAIL")
    assert "start the BLE bridge" in found["BLE bridge reachable"]
    assert found["safety relay"].startswith("FAIL")
    assert "safetyRelayIp" in found["safety relay"]
