"""The safety relay driver against simulated Gen1 and Gen2 Shelly relays on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp
import pytest

from tesla_smart_charger.errors import RelayAuthError, RelayError
from tesla_smart_charger.shelly.relay import (
    ShellyRelay,
    parse_gen1_relay,
    parse_switch_status,
    relay_generation,
)
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.relay import SimulatedRelay

PASSWORD = "relay-pass-SECRET"


@asynccontextmanager
async def serving(sim: SimulatedRelay) -> AsyncIterator[str]:
    url = await sim.start()
    try:
        yield url
    finally:
        await sim.stop()


async def _noop_sleep(_: float) -> None:
    return None


# --- pure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "gen"),
    [
        ({"type": "SHSW-1", "mac": "x"}, 1),
        ({"gen": 2, "app": "Plus1PM"}, 2),
        ({"gen": 3, "app": "S3SW-001P16EU"}, 2),
        ({"gen": 4, "app": "Pro4PM"}, 2),
    ],
)
def test_generation_from_shelly(info: dict[str, Any], gen: int) -> None:
    assert relay_generation(info) == gen


@pytest.mark.parametrize("info", [{"gen": "2"}, {"gen": 1}, {"gen": True}, []])
def test_generation_rejects_odd_replies(info: Any) -> None:
    with pytest.raises(RelayError, match="/shelly"):
        relay_generation(info)


def test_state_parsers_name_the_field() -> None:
    assert parse_gen1_relay({"ison": False}) is False
    assert parse_switch_status({"output": True}) is True
    with pytest.raises(RelayError, match="ison"):
        parse_gen1_relay({"ison": "off"})
    with pytest.raises(RelayError, match="output"):
        parse_switch_status({"id": 0})


# --- against simulated relays -----------------------------------------------------------------


@pytest.mark.parametrize("gen", [1, 2])
async def test_switching_the_charger_circuit_stops_the_car(
    session: aiohttp.ClientSession, gen: Literal[1, 2]
) -> None:
    car = CarModel(request_amps=16, ramp_delay=0.0)
    sim = SimulatedRelay(gen, car=car, password=PASSWORD)
    async with serving(sim) as url:
        relay = ShellyRelay(url, session, password=PASSWORD)
        assert await relay.is_on() is True
        assert car.current_draw(car.now or 0.0) == 16
        await relay.switch(False)
        assert await relay.is_on() is False
        assert car.current_draw(car.now or 0.0) == 0
        assert car.charge_state_json()["charging_state"] == "NoPower"
        await relay.switch(True)
        assert car.current_draw(car.now or 0.0) == 16
    assert relay.generation == gen
    assert sim.switches == [(0, False), (0, True)]


async def test_gen2_second_output_and_digest_throttling(session: aiohttp.ClientSession) -> None:
    sim = SimulatedRelay(2, outputs=2, car_channel=1, password=PASSWORD)
    async with serving(sim) as url:
        relay = ShellyRelay(url, session, channel=1, password=PASSWORD, sleep=_noop_sleep)
        await relay.is_on()
        sim.throttle_next = 1  # fw 2.x ran out of nonce slots: one fresh handshake
        await relay.switch(False)
    assert sim.outputs == [True, False]


@pytest.mark.parametrize("gen", [1, 2])
async def test_a_missing_output_is_named(
    session: aiohttp.ClientSession, gen: Literal[1, 2]
) -> None:
    async with serving(SimulatedRelay(gen)) as url:
        with pytest.raises(RelayError, match="does output 3 exist"):
            await ShellyRelay(url, session, channel=3).switch(False)


@pytest.mark.parametrize("gen", [1, 2])
async def test_wrong_or_missing_credentials(
    session: aiohttp.ClientSession, gen: Literal[1, 2]
) -> None:
    async with serving(SimulatedRelay(gen, password=PASSWORD)) as url:
        with pytest.raises(RelayAuthError, match="set safetyRelayPassword"):
            await ShellyRelay(url, session).is_on()
        with pytest.raises(RelayAuthError, match="check safetyRelayUser") as caught:
            await ShellyRelay(url, session, password="wrong-SECRET").switch(False)
    assert "SECRET" not in str(caught.value)


async def test_gen1_user_name_is_used(session: aiohttp.ClientSession) -> None:
    async with serving(SimulatedRelay(1, password=PASSWORD, user="garage")) as url:
        await ShellyRelay(url, session, user="garage", password=PASSWORD).switch(False)
        with pytest.raises(RelayAuthError):
            await ShellyRelay(url, session, password=PASSWORD).is_on()


async def test_a_relay_that_does_not_switch_is_an_error(session: aiohttp.ClientSession) -> None:
    sim = SimulatedRelay(2)
    sim.stuck = True
    async with serving(sim) as url:
        with pytest.raises(RelayError, match="reports True"):
            await ShellyRelay(url, session).switch(False)


async def test_unreachable_and_silent_relays(session: aiohttp.ClientSession) -> None:
    sim = SimulatedRelay(1)
    url = await sim.start()
    sim.set_responding(False)  # hangs
    try:
        quick = aiohttp.ClientTimeout(total=0.3)
        with pytest.raises(RelayError, match=r"within 0.3 s"):
            await ShellyRelay(url, session, timeout=quick).is_on()
    finally:
        await sim.stop()
    with pytest.raises(RelayError, match="cannot reach"):
        await ShellyRelay(url, session).switch(False)


def test_name_and_repr_carry_no_credentials(session: aiohttp.ClientSession) -> None:
    relay = ShellyRelay("http://admin:pw-SECRET@192.0.2.20", session, channel=1, password="x")
    assert relay.name == "shelly-relay@192.0.2.20/1"
    assert "SECRET" not in repr(relay)
