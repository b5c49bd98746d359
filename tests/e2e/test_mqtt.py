"""Home Assistant over MQTT, black-box: the real daemon, a simulated world and a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.const import SHUTDOWN_TIMEOUT
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, DaemonProcess, run_daemon
from tests.helpers.mqtt_broker import MOSQUITTO, Broker
from tests.helpers.mqtt_client import Seen, publish, wait_for, watching

pytestmark = pytest.mark.slow

STATUS_TOPIC = "tesla-smart-charger/status"
# The outage is shorter than the 30 s to keep the suite fast: it still spans several
# reconnect attempts (backoff 1, 2, 4, 5, 5 s …), which is what the 30 s would exercise.
OUTAGE_SECS = 12.0


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


def charging_car(amps: int = 16) -> CarModel:
    return CarModel(request_amps=amps, charging_state="Charging", ramp_delay=0.5, capacity_kwh=None)


@asynccontextmanager
async def daemon_with_mqtt(
    tmp_path: Path, world: World, broker: Broker, *args: str, **config: Any
) -> AsyncIterator[DaemonProcess]:
    """The world running, the daemon pointed at it and at the broker."""
    async with world:
        path = world.write_config(tmp_path, mqttUrl=f"mqtt://127.0.0.1:{broker.port}", **config)
        async with run_daemon(tmp_path, path, *args) as daemon:
            yield daemon


def configs(seen: Seen, *, retained: bool = False) -> dict[str, dict[str, Any]]:
    """Discovery configs seen so far (`retained`: only those the broker kept): topic → payload.

    A message published while we are subscribed arrives without the retain flag; one the
    broker kept arrives with it when we subscribe.
    """
    out = {}
    for _, topic, payload, retain in seen.messages:
        if topic.startswith("homeassistant/") and topic.endswith("/config") and retain >= retained:
            out[topic] = json.loads(payload)
    return out


def entity(found: dict[str, dict[str, Any]], component: str, key: str) -> dict[str, Any] | None:
    """The config of `component` whose unique_id ends with `key`."""
    for topic, payload in found.items():
        if topic.startswith(f"homeassistant/{component}/") and payload["unique_id"].endswith(key):
            return payload
    return None


WANTED = [
    ("sensor", "_supply_l1"),
    ("sensor", "_car_amps"),
    ("binary_sensor", "_overload"),
    ("number", "_driver_limit"),
    ("select", "_mode"),
]


def announced(seen: Seen, *, retained: bool = False) -> bool:
    found = configs(seen, retained=retained)
    return all(entity(found, c, k) is not None for c, k in WANTED)


async def post(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, timeout=aiohttp.ClientTimeout(total=5), **kwargs) as r,
    ):
        return r.status, await r.json()


async def test_discovery_command_http_limit_and_sigterm(tmp_path: Path, broker: Broker) -> None:
    world = World(car=charging_car(16))
    async with (
        daemon_with_mqtt(tmp_path, world, broker) as daemon,
        watching(broker.port, "homeassistant/#", "tesla-smart-charger/#") as seen,
    ):
        # Discovery and availability, retained, within 5 s of the start on an idle machine.
        await wait_for(lambda: announced(seen), 5 * LOADED, "discovery")
        await wait_for(lambda: seen.last(STATUS_TOPIC) == "online", 1 * LOADED, "online")
        async with watching(broker.port, "homeassistant/#", STATUS_TOPIC) as kept:
            await wait_for(lambda: announced(kept, retained=True), 2 * LOADED, "discovery retained")
            await wait_for(
                lambda: kept.last(STATUS_TOPIC) == "online", 2 * LOADED, "online retained"
            )
        found = configs(kept, retained=True)
        ids = {json.dumps(p["device"]["identifiers"]) for p in found.values()}
        assert len(ids) == 1, ids
        uniques = [p["unique_id"] for p in found.values()]
        assert len(uniques) == len(set(uniques))
        assert all(world.car.vin.lower() in u for u in uniques)
        supply = entity(found, "sensor", "_supply_l1")
        assert supply is not None
        assert (supply["device_class"], supply["state_class"]) == ("current", "measurement")
        number = entity(found, "number", "_driver_limit")
        assert number is not None
        assert (number["min"], number["max"], number["step"]) == (6, 16, 1)
        select = entity(found, "select", "_mode")
        assert select is not None

        # The number's command topic caps the car: 10 A reaches the proxy (3 s when idle).
        await publish(broker.port, number["command_topic"], "10")
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=3 * LOADED)
        assert body == {"charging_amps": 10}
        status = await daemon.wait_status(lambda st: st["controller"]["driver_limit_amps"] == 10)
        assert status["dependencies"]["mqtt"]["state"] == "ok"
        car_state = f"tesla-smart-charger/car/{world.car.vin}/state"
        await wait_for(
            lambda: json.loads(seen.last(car_state) or "{}").get("driver_limit") == 10,
            3 * LOADED,
            "the ceiling published back",
        )
        state = json.loads(seen.last(car_state) or "{}")
        assert state["mode"] == "fast"

        # The same capability over HTTP, with the same validation.
        url = f"{daemon.url}/vehicles/{world.car.vin}/limit"
        code, reply = await post(url, json={"amps": 8})
        assert (code, reply) == (202, {"accepted": True, "vin": world.car.vin, "amps": 8})
        since = len(world.proxy.commands)
        _, _, body = await world.proxy.wait_for_command(
            "set_charging_amps", timeout=3 * LOADED, since=since - 1
        )
        await world.proxy.wait_until(
            lambda: world.proxy.commands[-1][2] == {"charging_amps": 8}, 3 * LOADED
        )
        code, reply = await post(url + "?amps=17")
        assert code == 400
        assert "amps" in reply["error"]
        assert "from 6 to 16" in reply["error"]
        code, reply = await post(url, json={"amp": 8})
        assert code == 400
        assert "amps: required" in reply["error"]
        code, reply = await post(f"{daemon.url}/vehicles/5YJ3E7EB0KF999999/limit?amps=8")
        assert code == 404
        code, reply = await post(url + "?amps=9", headers={"Sec-Fetch-Site": "cross-site"})
        assert code == 403

        # The mode select: applied, shown in /status; push mode has no meter to
        # see the sun, so nothing is sent to the car.
        commands = len(world.proxy.commands)
        await publish(broker.port, select["command_topic"], "solar")
        await wait_for(lambda: "set mode of" in daemon.log(), 3 * LOADED, "log")
        await daemon.wait_status(lambda st: st["controller"]["charge_mode"] == "solar")
        assert len(world.proxy.commands) == commands

        # SIGTERM: `offline` reaches the broker before the process has exited.
        code, took = await daemon.terminate()
        assert code == 0  # by itself: terminate() kills after a deadline
        assert took < SHUTDOWN_TIMEOUT * LOADED
        await wait_for(
            lambda: seen.last(STATUS_TOPIC) == "offline", 2 * LOADED, "offline on SIGTERM"
        )
        assert "told Home Assistant we are offline" in daemon.log()
    state_file = json.loads((tmp_path / "charger-state.json").read_text())
    assert state_file["driver_amps"] == 8
    assert state_file["driver_limit"] is True


async def test_sigkill_leaves_the_last_will(tmp_path: Path, broker: Broker) -> None:
    async with (
        daemon_with_mqtt(tmp_path, World(car=charging_car(16)), broker) as daemon,
        watching(broker.port, STATUS_TOPIC) as seen,
    ):
        await wait_for(lambda: seen.last(STATUS_TOPIC) == "online", 5 * LOADED, "online")
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        await wait_for(lambda: seen.last(STATUS_TOPIC) == "offline", 5 * LOADED, "the last will")


async def test_broker_outage_control_goes_on(tmp_path: Path, broker: Broker) -> None:
    world = World(car=charging_car(16), manual_house=(10.0,))
    async with daemon_with_mqtt(tmp_path, world, broker, "--monitor", sleepTimeSecs=5) as daemon:
        async with watching(broker.port, "homeassistant/#") as seen:
            await wait_for(lambda: announced(seen), 5 * LOADED, "discovery")
        await daemon.wait_status(lambda st: st["dependencies"]["mqtt"]["state"] == "ok")
        log_before = len(daemon.log().splitlines())
        broker.stop()
        down_at = time.monotonic()
        status = await daemon.wait_status(lambda st: st["dependencies"]["mqtt"]["state"] != "ok")
        assert status["dependencies"]["mqtt"]["last_error"]
        code, _ = await daemon.get("/health")
        assert code == 200  # the breaker is still protected: MQTT is not a health problem

        # Control goes on: an overload is still cut.
        world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=3 * LOADED)
        assert 6 <= body["charging_amps"] <= 9
        metrics_code, metrics = await daemon.get("/metrics")
        assert metrics_code == 200
        assert 'dependency_state{dependency="mqtt",state="ok"} 0.0' in metrics
        remaining = OUTAGE_SECS - (time.monotonic() - down_at)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the outage itself, not synchronisation
        outage_lines = daemon.log().splitlines()[log_before:]
        assert sum("mqtt" in line.lower() for line in outage_lines) <= 3, outage_lines

        broker.start()
        async with watching(broker.port, "homeassistant/#", STATUS_TOPIC) as seen:
            # mosquitto keeps nothing across the restart: what arrives was published again,
            # at the next reconnect (backoff at most 5 s) and a loaded machine's slack.
            await wait_for(lambda: announced(seen), 5 + 5 * LOADED, "discovery re-published")
            await wait_for(lambda: seen.last(STATUS_TOPIC) == "online", 5 * LOADED, "online")
        await daemon.wait_status(lambda st: st["dependencies"]["mqtt"]["state"] == "ok")
        mqtt_lines = [
            line for line in daemon.log().splitlines()[log_before:] if "mqtt" in line.lower()
        ]
        assert len(mqtt_lines) <= 4, mqtt_lines
        assert daemon.proc.returncode is None


async def test_supply_phases_auto_announces_the_meters_phases(
    tmp_path: Path, broker: Broker
) -> None:
    world = World(car=charging_car(16), phases=3, meter_kind="pro3em", manual_house=(5.0,))
    async with (
        daemon_with_mqtt(tmp_path, world, broker, "--monitor", supplyPhases="auto"),
        watching(broker.port, "homeassistant/#") as seen,
    ):
        await wait_for(
            lambda: all(entity(configs(seen), "sensor", f"_supply_l{i}") for i in (1, 2, 3)),
            5 * LOADED,
            "a supply sensor per detected phase",
        )
        labels = {p["name"] for p in configs(seen).values()}
        assert {"Supply current L1", "Supply current L2", "Supply current L3"} <= labels


async def test_car_link_sensor_follows_the_daemons_link_health(
    tmp_path: Path, broker: Broker
) -> None:
    """Proxy down: Home Assistant's car-link sensor goes OFF with the daemon's own link health
    (within 5 s), and ON again once the proxy is back and a call gets through."""
    world = World(car=charging_car(16), manual_house=(10.0,))
    state_topic = "tesla-smart-charger/state"

    def car_link() -> str | None:
        payload = seen.last(state_topic)
        return json.loads(payload).get("car_link") if payload else None

    async with (
        daemon_with_mqtt(tmp_path, world, broker, "--monitor") as daemon,
        watching(broker.port, state_topic) as seen,
    ):
        await daemon.wait_status(lambda st: st["dependencies"]["car_link"]["state"] == "ok")
        await wait_for(lambda: car_link() == "ON", 5 * LOADED, "car link ON at the start")
        port = int(world.urls["proxy"].rsplit(":", 1)[1])
        log_before = len(daemon.log().splitlines())

        await world.proxy.stop()
        world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main: a cut must go to the car
        down_at = time.monotonic()
        await daemon.wait_status(lambda st: st["dependencies"]["car_link"]["state"] != "ok")
        noticed = time.monotonic() - down_at
        await wait_for(lambda: car_link() == "OFF", 5 * LOADED, "car link OFF")
        off_after = time.monotonic() - down_at
        assert off_after - noticed < 5 * LOADED  # the sensor follows the daemon's own health
        outage_lines = daemon.log().splitlines()[log_before:]
        link_lines = [line for line in outage_lines if "car link" in line.lower()]
        assert 1 <= len(link_lines) <= 3, outage_lines  # said once when it starts

        await world.proxy.start(port=port)
        up_at = time.monotonic()
        _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=30)
        assert body["charging_amps"] < 16  # the cut that waited for the link
        await wait_for(lambda: car_link() == "ON", 5 * LOADED, "car link ON again")
        on_after = time.monotonic() - up_at
        status = await daemon.status()
        assert status["dependencies"]["car_link"]["state"] == "ok"
        print(  # the figures for docs/faults.md (pytest -s)
            f"car link: /status not ok after {noticed:.1f} s, sensor OFF after {off_after:.1f} s,"
            f" ON {on_after:.1f} s after the proxy's return; {len(link_lines)} car-link log"
            f" lines during the outage, {len(outage_lines)} lines in all"
        )
