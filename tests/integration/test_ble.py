"""The BLE bridge client: pure reply classification, then against a real bridge on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.car.ble import (
    BleVehicle,
    classify_command_reply,
    is_car_refusal,
    parse_sleep_status,
    unwrap,
)
from tesla_smart_charger.car.fleet_api import parse_charge_state
from tesla_smart_charger.config.settings import load_config, redacted
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import (
    BleUnavailable,
    CommandRefused,
    ConfigError,
    PermanentError,
    TeslaTransientError,
)
from tesla_smart_charger.simulator.ble import SimulatedBleBridge
from tesla_smart_charger.simulator.car import CarModel

VIN = "5YJ3E1EA7KF000001"


# --- pure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "refusal"),
    [
        ("car could not execute command: is_charging", True),
        ("Car could not execute command: not_charging", True),
        ("complete", True),
        ("disconnected", True),
        ("failed to connect to vehicle: context deadline exceeded", False),
        ("vehicle unavailable: vehicle is offline or asleep", False),
        ("ble: device busy", False),
        ("", False),
    ],
)
def test_car_refusal_is_told_from_a_bridge_failure(reason: str, refusal: bool) -> None:
    assert is_car_refusal(reason) is refusal


@pytest.mark.parametrize(
    "payload",
    [
        {
            "response": {
                "result": True,
                "reason": "",
                "response": {"vehicle_sleep_status": "VEHICLE_SLEEP_STATUS_ASLEEP"},
            }
        },
        {"response": {"vehicle_sleep_status": "VEHICLE_SLEEP_STATUS_ASLEEP"}},
    ],
    ids=["doubled", "plain"],
)
def test_sleep_status_in_either_envelope(payload: dict[str, Any]) -> None:
    assert parse_sleep_status(payload) is VehicleState.ASLEEP


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"response": {"vehicle_sleep_status": "VEHICLE_SLEEP_STATUS_UNKNOWN"}}, "UNKNOWN"),
        ({"response": {"result": True, "response": {}}}, "vehicle_sleep_status missing"),
        ({"response": {"result": False, "reason": "not in range"}}, "not in range"),
        ([], "not a JSON object"),
    ],
)
def test_unreadable_sleep_status_is_a_bridge_fault(payload: Any, fragment: str) -> None:
    with pytest.raises(BleUnavailable, match=fragment):
        parse_sleep_status(payload)


def test_doubled_charge_state_envelope_feeds_the_cloud_parser() -> None:
    charge = {
        "charging_state": "Charging",
        "charge_current_request": 16,
        "charger_actual_current": 15,
    }
    payload = {"response": {"result": True, "reason": "", "response": {"charge_state": charge}}}
    state = parse_charge_state(unwrap(payload, "vehicle_data"))
    assert (state.charge_current_request, state.charger_actual_current) == (16, 15)


@pytest.mark.parametrize(
    ("status", "payload", "error"),
    [
        (200, {"response": {"result": True, "reason": ""}}, None),
        (
            200,
            {"response": {"result": False, "reason": "car could not execute command: is_charging"}},
            CommandRefused,
        ),
        (
            503,
            {"response": {"result": False, "reason": "car could not execute command: complete"}},
            CommandRefused,
        ),
        (
            503,
            {"response": {"result": False, "reason": "failed to connect to vehicle"}},
            BleUnavailable,
        ),
        (200, {"response": {"result": False, "reason": "ble: timeout"}}, BleUnavailable),
        (
            500,
            {"response": None, "error": "vehicle unavailable: vehicle is offline or asleep"},
            BleUnavailable,
        ),
        (404, {"response": None}, BleUnavailable),
        (200, {"response": {}}, BleUnavailable),
        (401, None, BleUnavailable),
    ],
)
def test_command_replies_map_to_refusal_or_failover(
    status: int, payload: Any, error: type[Exception] | None
) -> None:
    if error is None:
        classify_command_reply(status, payload, what="BLE x", command="charge_stop")
    else:
        with pytest.raises(error):
            classify_command_reply(status, payload, what="BLE x", command="charge_stop")


def test_ble_failure_is_transient_and_a_refusal_is_not() -> None:
    assert issubclass(BleUnavailable, TeslaTransientError)
    assert issubclass(CommandRefused, PermanentError)


# --- against a simulated bridge ---------------------------------------------------------------


@pytest.fixture
def car() -> CarModel:
    return CarModel(vin=VIN, request_amps=16, ramp_delay=0.0)


@pytest.fixture
async def bridge(car: CarModel) -> AsyncIterator[tuple[SimulatedBleBridge, str]]:
    sim = SimulatedBleBridge(car)
    url = await sim.start()
    try:
        yield sim, url
    finally:
        await sim.stop()


async def test_snapshot_of_a_charging_car(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    sim, url = bridge
    snap = await BleVehicle(session, url, VIN).snapshot()
    assert snap.state is VehicleState.ONLINE
    assert snap.charge is not None
    assert snap.charge.charger_actual_current == 16
    assert sim.requests == {"body_controller_state": 1, "vehicle_data": 1}
    assert sim.wakeup_requests == 0


async def test_sleeping_car_is_reported_not_woken(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str], car: CarModel
) -> None:
    sim, url = bridge
    car.state = "asleep"
    snap = await BleVehicle(session, url, VIN).snapshot()
    assert snap.state is VehicleState.ASLEEP
    assert snap.charge is None
    assert sim.requests["vehicle_data"] == 0
    assert car.wakes == 0
    assert sim.wakeup_requests == 0


async def test_known_online_skips_the_sleep_call(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    sim, url = bridge
    await BleVehicle(session, url, VIN).snapshot(known_online=True)
    assert sim.requests == {"vehicle_data": 1}


async def test_commands_reach_the_car(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str], car: CarModel
) -> None:
    sim, url = bridge
    ble = BleVehicle(session, url, VIN)
    await ble.set_charging_amps(10)
    assert car.request_amps == 10
    assert car.current_draw(car.now or 0.0) == 10
    await ble.set_charging_amps(3)  # below 5 A: sent twice so the car applies it
    assert [c[2] for c in sim.commands_named("set_charging_amps")][-2:] == [
        {"charging_amps": 3}
    ] * 2
    assert car.request_amps == 3
    await ble.charge_stop()
    assert car.charging_state == "Stopped"
    assert ble.calls["ok"] == 4


async def test_car_refusal_is_command_refused(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    _, url = bridge
    ble = BleVehicle(session, url, VIN)
    with pytest.raises(CommandRefused) as caught:
        await ble.charge_start()  # already charging
    assert "is_charging" in caught.value.reason
    assert ble.calls["refused"] == 1


async def test_bridge_out_of_range_is_unavailable(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str], car: CarModel
) -> None:
    sim, url = bridge
    sim.set_mode("down")
    ble = BleVehicle(session, url, VIN)
    with pytest.raises(BleUnavailable, match="could not deliver"):
        await ble.set_charging_amps(8)
    with pytest.raises(BleUnavailable):
        await ble.snapshot()
    assert car.request_amps == 16


async def test_bridge_refusing_connections_is_unavailable(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    sim, url = bridge
    await sim.stop()
    with pytest.raises(BleUnavailable, match="cannot reach the BLE bridge"):
        await BleVehicle(session, url, VIN).charge_stop()


async def test_silent_bridge_times_out(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    sim, url = bridge
    sim.set_mode("hang")
    ble = BleVehicle(session, url, VIN, timeout=aiohttp.ClientTimeout(total=0.3))
    with pytest.raises(BleUnavailable, match=r"within 0.3 s"):
        await ble.set_charging_amps(8)
    assert ble.calls["timeout"] == 1


async def test_unknown_vin_is_a_bridge_fault(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    _, url = bridge
    other = "5YJ3E1EA7KF000002"
    with pytest.raises(BleUnavailable, match="VIN"):
        await BleVehicle(session, url, other).charge_stop()


async def test_vin_resolved_lazily_from_the_cloud_client(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str]
) -> None:
    sim, url = bridge
    asked: list[int] = []

    async def resolve() -> str:
        asked.append(1)
        return VIN.lower()

    ble = BleVehicle(session, url, resolve)
    await ble.charge_stop()
    await ble.charge_start()
    assert len(asked) == 1
    assert len(sim.commands) == 2


def test_a_numeric_id_is_not_a_vin(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="VIN"):
        BleVehicle(session, "http://127.0.0.1:1", "12345")


# --- configuration ----------------------------------------------------------------------------


def test_ble_and_alert_urls_are_checked(write_config: Any) -> None:
    path: Path = write_config(teslaBleProxy="ftp://pi", alertWebhook="nope-SECRET")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "teslaBleProxy" in text
    assert "alertWebhook" in text
    assert "SECRET" not in text  # a webhook URL is a credential


def test_alert_webhook_is_kept_secret(write_config: Any) -> None:
    hook = "http://127.0.0.1:8123/api/webhook/tsc-SECRET-id"
    settings = load_config(write_config(alertWebhook=hook)).settings
    assert settings.alert_webhook is not None
    assert settings.alert_webhook.get_secret_value() == hook
    assert "SECRET" not in json.dumps(redacted(settings))
    assert "SECRET" not in repr(settings)


def test_issue_11_keys_and_defaults(write_config: Any) -> None:
    settings = load_config(write_config()).settings
    assert settings.tesla_ble_proxy is None
    assert settings.alert_webhook is None
    assert settings.escalate_after_secs == 20
    assert settings.safety_relay_channel == 0
    loaded = load_config(
        write_config(
            teslaBleProxy="http://pi.local:8080/",
            safetyRelayIp="192.0.2.20",
            safetyRelayChannel="1",
            escalateAfterSecs=30,
        )
    ).settings
    assert loaded.tesla_ble_proxy == "http://pi.local:8080"
    assert loaded.safety_relay_ip == "http://192.0.2.20"
    assert (loaded.safety_relay_channel, loaded.escalate_after_secs) == (1, 30)


@pytest.mark.parametrize("secs", [4, 121])
def test_escalate_after_secs_range(write_config: Any, secs: int) -> None:
    with pytest.raises(ConfigError, match="escalateAfterSecs"):
        load_config(write_config(escalateAfterSecs=secs))


async def test_a_car_that_ignores_commands_still_says_yes(
    session: aiohttp.ClientSession, bridge: tuple[SimulatedBleBridge, str], car: CarModel
) -> None:
    _, url = bridge
    car.fault = "ignores_commands"
    ble = BleVehicle(session, url, VIN)
    await ble.set_charging_amps(6)
    await ble.charge_stop()
    assert car.current_draw(car.now or 0.0) == 16
    assert car.charging_state == "Charging"
    assert ble.calls["ok"] == 2
