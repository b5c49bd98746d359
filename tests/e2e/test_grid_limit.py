"""The grid operator's limit, black-box: the real daemon, a simulated Shelly input and a mosquitto.

Two cars charge at 16 A each (7.4 kW together); the grid limit (4.2 kW for both) comes from a
Shelly input on the control box's contact, from an MQTT topic and from POST /grid-limit. The
setpoints are timed where they land: in the simulated cars.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.shelly_input import SimulatedShellyInput
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, VIN_A, VIN_B, WAIT_SECS, DaemonProcess, world_and_daemon
from tests.helpers.mqtt_broker import MOSQUITTO, Broker
from tests.helpers.mqtt_client import publish, wait_for

pytestmark = pytest.mark.slow

TOPIC = "house/grid-limit"
TOKEN = "grid-api-token-SECRET"
LIMIT_W = 4200.0
VOLTS = 230.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto of our own on a free 127.0.0.1 port."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (.ci/system-deps.sh installs it)")
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder)
    b.start()
    yield b
    b.stop()


def two_charging_cars() -> World:
    cars = [
        CarModel(vin=vin, numeric_id=nid, vehicle_id=vid, request_amps=16, ramp_delay=0.5)
        for vin, nid, vid in ((VIN_A, 100021, 99999), (VIN_B, 100022, 99998))
    ]
    for car in cars:
        car.capacity_kwh = None
    return World(cars=cars, manual_house=(2.0,))


def set_watts(world: World) -> float:
    """What the cars are set to together, in W (the setpoints as they landed in the cars)."""
    return sum(car.request_amps for car in world.cars) * VOLTS


def drawn_watts(world: World) -> float:
    """What the cars really draw together now, in W."""
    now = time.monotonic()
    return sum(car.current_draw(now) for car in world.cars) * VOLTS


def grid_lines(daemon: DaemonProcess, start: int) -> list[str]:
    """The log's grid-limit lines written after offset `start`."""
    return [line for line in daemon.log()[start:].splitlines() if "Grid limit" in line]


async def grid(daemon: DaemonProcess) -> dict[str, Any]:
    body = (await daemon.status())["grid_limit"]
    assert isinstance(body, dict)
    return body


async def wait_grid(daemon: DaemonProcess, predicate: Any, timeout: float = WAIT_SECS) -> None:
    await daemon.wait_status(lambda s: predicate(s["grid_limit"]), timeout)


async def timed_cut(world: World, what: str) -> float:
    """Seconds from now until the cars' setpoints together are under 4.2 kW."""
    return await wait_for(lambda: set_watts(world) < LIMIT_W, 2 * LOADED, what)


async def back_to_normal(daemon: DaemonProcess, world: World) -> None:
    await wait_grid(daemon, lambda g: g["active"] is False)
    await wait_for(lambda: set_watts(world) == 32 * VOLTS, WAIT_SECS, "both cars back at 16 A")


async def post(daemon: DaemonProcess, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(daemon.url + "/grid-limit", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize("gen", [1, 2], ids=["gen1", "gen2"])
async def test_grid_limit_from_input_topic_and_api(
    tmp_path: Path, broker: Broker, gen: Literal[1, 2]
) -> None:
    contact = SimulatedShellyInput(gen)
    contact_url = await contact.start()
    await publish(broker.port, TOPIC, "OFF", retain=True)
    try:
        async with world_and_daemon(
            tmp_path,
            two_charging_cars(),
            "--monitor",
            homeMaxAmps=40.0,
            sleepTimeSecs=3,
            energyMonitorPollSecs=0.2,
            mqttUrl=f"mqtt://127.0.0.1:{broker.port}",
            gridLimitInput=contact_url,
            gridLimitTopic=TOPIC,
            gridLimitKw=4.2,
            apiToken=TOKEN,
        ) as (world, daemon):
            # Every source read, none on; both cars at 16 A (7.4 kW).
            await wait_grid(
                daemon,
                lambda g: (
                    g["active"] is False
                    and g["sources"]["input"]["state"] == "inactive"
                    and g["sources"]["mqtt"]["state"] == "inactive"
                ),
            )
            await wait_for(lambda: set_watts(world) == 32 * VOLTS, WAIT_SECS, "16 A each")
            body = await grid(daemon)
            assert body["limit_kw"] == 4.2
            assert body["car_kw"] == 2.1

            # 1. The contact closes: under 4.2 kW within 2 s (a loaded machine gets LOADED x).
            start = len(daemon.log())
            contact.set_input(0, True)
            secs_input = await timed_cut(world, "cut after the input came on")
            assert [c.request_amps for c in world.cars] == [9, 9]  # 2 x 9 A x 230 V = 4.14 kW
            await wait_grid(daemon, lambda g: g["active"] and g["source"] == "input")
            await wait_for(lambda: drawn_watts(world) < LIMIT_W, WAIT_SECS, "drawn < 4.2 kW")
            code, metrics = await daemon.get("/metrics")
            assert code == 200
            assert "tesla_smart_charger_grid_limit_active 1.0" in metrics
            reads_before = contact.reads
            on_at = time.monotonic()
            contact.set_input(0, False)
            await back_to_normal(daemon, world)
            polls_per_sec = (contact.reads - reads_before) / (time.monotonic() - on_at)
            assert 0 < polls_per_sec <= 1.5  # gridLimitInputPollSecs 1: never faster
            lines = grid_lines(daemon, start)
            assert len(lines) == 2, lines
            assert "Grid limit on: the Shelly input on the control box says" in lines[0]
            assert "Grid limit ended after" in lines[1]

            # 2. The MQTT topic says ON.
            await publish(broker.port, TOPIC, "ON", retain=True)
            secs_mqtt = await timed_cut(world, "cut after the MQTT topic said ON")
            await wait_grid(daemon, lambda g: g["active"] and g["source"] == "mqtt")
            await publish(broker.port, TOPIC, "OFF", retain=True)
            await back_to_normal(daemon, world)

            # 3. The input is refused: limited, said once; health 200 with a warning.
            start = len(daemon.log())
            await contact.refuse()
            secs_refused = await timed_cut(world, "cut after the input was refused")
            await wait_grid(daemon, lambda g: g["active"] and g["lost"] == ["input"])
            # Let it fail for a while: still one line, and the policy spaces the attempts.
            failed_from = time.monotonic()
            await daemon.wait_status(
                lambda s: s["dependencies"]["grid_limit_input"]["failures"] >= 4,
                WAIT_SECS,
            )
            failing_secs = time.monotonic() - failed_from
            code, health = await daemon.get("/health")
            assert code == 200, health
            assert any("grid limit" in w for w in health["warnings"]), health
            status = await daemon.status()
            attempts = status["dependencies"]["grid_limit_input"]["failures"]
            # Its policy backs off (1, 2, 4, 5 s): never more than one attempt a second.
            assert attempts <= (time.monotonic() - failed_from) + 2
            lines = grid_lines(daemon, start)
            assert len(lines) == 1, lines
            assert "the Shelly input on the control box cannot be read" in lines[0]
            assert "nothing listens on" in lines[0] or "closed the connection" in lines[0]
            assert re.search(r"at most 4\.2 kW", lines[0])
            assert set_watts(world) < LIMIT_W
            await contact.accept()
            await back_to_normal(daemon, world)
            lines = grid_lines(daemon, start)
            assert len(lines) == 2, lines
            assert "Grid limit ended after" in lines[1]
            code, health = await daemon.get("/health")
            assert code == 200
            assert "warnings" not in health or not any(
                "grid limit" in w for w in health["warnings"]
            )

            # 4. POST /grid-limit needs the token.
            for token in (None, "wrong-token"):
                code, reply = await post(daemon, {"active": True}, token)
                assert code == 401, reply
            assert (await grid(daemon))["active"] is False
            code, reply = await post(daemon, {"on": True}, TOKEN)
            assert code == 400
            assert "active" in reply["error"]
            code, reply = await post(daemon, {"active": True}, TOKEN)
            assert code == 200, reply
            assert reply["active"] is True
            assert reply["source"] == "api"
            secs_api = await timed_cut(world, "cut after POST /grid-limit")
            code, shown = await daemon.get("/grid-limit")
            assert code == 200
            assert shown["active"] is True
            assert shown["sources"]["api"]["state"] == "active"
            code, reply = await post(daemon, {"active": False}, TOKEN)
            assert code == 200
            await back_to_normal(daemon, world)
            assert TOKEN not in daemon.log()
            # Every start and end of the limit is in the journal, in order (4 sources' turns).
            code, journal = await daemon.get("/api/journal")
            assert code == 200
            kinds = [e["kind"] for e in journal["entries"] if e["kind"].startswith("grid_limit")]
            assert kinds == ["grid_limit_on", "grid_limit_off"] * 4, kinds
            print(  # the figures for docs/faults.md
                f"\ngen{gen}: cut after input {secs_input:.2f} s, mqtt {secs_mqtt:.2f} s, "
                f"refused {secs_refused:.2f} s, api {secs_api:.2f} s; "
                f"{polls_per_sec:.1f} input reads/s; {attempts} attempts in "
                f"{failing_secs:.1f} s while refused"
            )
    finally:
        await contact.stop()


async def test_broker_gone_counts_as_on(tmp_path: Path, broker: Broker) -> None:
    await publish(broker.port, TOPIC, "OFF", retain=True)
    async with world_and_daemon(
        tmp_path,
        two_charging_cars(),
        "--monitor",
        homeMaxAmps=40.0,
        sleepTimeSecs=3,
        energyMonitorPollSecs=0.2,
        mqttUrl=f"mqtt://127.0.0.1:{broker.port}",
        gridLimitTopic=TOPIC,
        gridLimitKw=4.2,
    ) as (world, daemon):
        await wait_grid(daemon, lambda g: g["sources"]["mqtt"]["state"] == "inactive")
        await wait_for(lambda: set_watts(world) == 32 * VOLTS, WAIT_SECS, "16 A each")
        start = len(daemon.log())
        broker.stop()
        secs = await timed_cut(world, "cut after the broker went away")
        await wait_grid(daemon, lambda g: g["active"] and g["lost"] == ["mqtt"])
        broker.start()
        # The broker kept nothing (no persistence): the limit stays on until the topic says OFF.
        await daemon.wait_status(lambda s: s["dependencies"]["mqtt"]["state"] == "ok")
        assert (await grid(daemon))["active"] is True
        await publish(broker.port, TOPIC, "0", retain=True)
        await back_to_normal(daemon, world)
        lines = grid_lines(daemon, start)
        assert len(lines) == 2, lines
        assert "the MQTT topic cannot be read" in lines[0]
        assert "Grid limit ended after" in lines[1]
        print(f"\nbroker gone: cut after {secs:.2f} s")  # the figure for docs/faults.md
