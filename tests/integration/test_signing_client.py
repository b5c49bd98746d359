"""Our signer and TeslaClient against the simulated Fleet's signed_command, over real HTTP.

Each fault test counts the requests the fault cost and checks the retry policy then holds
the link (no retry storm): the next command is refused locally, nothing more is sent.
"""

from __future__ import annotations

import json
import logging
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tenacity import wait_none

from tesla_smart_charger.car.fleet_api import ApiCallCounter, StaticTokenSource, TeslaClient
from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.cache import CACHE_FILE, SessionCache
from tesla_smart_charger.car.signing.client import FleetSigner
from tesla_smart_charger.errors import (
    CommandRefused,
    CommandSigningError,
    TeslaProtocolError,
    TeslaTransientError,
    VehicleAsleep,
)
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tesla_smart_charger.simulator.signed import SignedCar

VIN = "5YJ3E1EA7KF000001"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


@dataclass
class Rig:
    proxy: SimulatedProxy
    base: str
    session: aiohttp.ClientSession
    key: ec.EllipticCurvePrivateKey
    folder: Path

    @property
    def car(self) -> SignedCar:
        return self.proxy.signed[VIN]

    def client(self, *, key: ec.EllipticCurvePrivateKey | None = None) -> TeslaClient:
        key = key or self.key
        cache = SessionCache(self.folder / CACHE_FILE, crypto.public_bytes(key))
        from pydantic import SecretStr  # noqa: PLC0415

        return TeslaClient(
            self.session,
            self.base,
            VIN,
            StaticTokenSource(SecretStr(TOKEN)),
            ApiCallCounter(),
            retry_wait=wait_none(),
            signer=FleetSigner(key, cache),
        )

    def signed_posts(self) -> int:
        return sum(1 for r in self.proxy.requests if r[2].endswith("/signed_command"))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    proxy = SimulatedProxy(CarModel(vin=VIN, request_amps=16, ramp_delay=0.0))
    key = ec.generate_private_key(ec.SECP256R1())
    proxy.signed[VIN].pair(crypto.public_bytes(key))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Rig(proxy, base, session, key, tmp_path)
    finally:
        await proxy.stop()


async def test_signed_command_reaches_the_car_and_is_billed_once(rig: Rig) -> None:
    client = rig.client()
    await client.set_charging_amps(8)
    assert rig.proxy.car.request_amps == 8
    assert rig.proxy.commands[-1][1:] == ("set_charging_amps", {"charging_amps": 8})
    assert (rig.car.handshakes, rig.car.verified) == (1, 1)
    await client.charge_stop()
    assert rig.proxy.car.charging_state == "Stopped"
    # Handshake once, then exactly one billed request per command; no proxy route used.
    assert rig.proxy.billing.command == 3
    assert rig.car.handshakes == 1
    assert not [r for r in rig.proxy.requests if "/command/" in r[2]]


async def test_refusal_comes_back_through_the_encrypted_reply(rig: Rig) -> None:
    client = rig.client()
    with pytest.raises(CommandRefused, match="is_charging"):
        await client.charge_start()
    assert client.policy.failures == 0  # the car answered: the link works


async def test_restart_reuses_the_cached_session(rig: Rig) -> None:
    await rig.client().set_charging_amps(10)
    path = rig.folder / CACHE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rig.car.handshakes == 1
    posts = rig.signed_posts()
    restarted = rig.client()  # a new process: new signer, same cache file
    await restarted.set_charging_amps(12)
    assert rig.car.handshakes == 1  # no second handshake
    assert rig.signed_posts() == posts + 1
    assert rig.proxy.car.request_amps == 12


async def test_cache_of_another_key_is_not_used(rig: Rig) -> None:
    await rig.client().set_charging_amps(10)
    other = ec.generate_private_key(ec.SECP256R1())
    rig.car.pair(crypto.public_bytes(other))
    await rig.client(key=other).set_charging_amps(11)
    assert rig.car.handshakes == 2


async def test_unpaired_key_is_a_clear_error_and_no_retry_storm(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    client = rig.client(key=stranger)
    with caplog.at_level(logging.INFO):
        with pytest.raises(CommandSigningError, match="does not know our key") as caught:
            await client.set_charging_amps(8)
        assert caught.value.fault == 3
        assert caught.value.retry_after > 0
        with pytest.raises(TeslaTransientError, match="not sent"):
            await client.set_charging_amps(8)
    assert rig.signed_posts() == 1
    started = [r for r in caplog.records if "does not know our key" in r.getMessage()]
    assert len(started) == 1


async def test_rolled_back_counter_resyncs_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    path = rig.folder / CACHE_FILE
    await rig.client().set_charging_amps(8)
    old = path.read_text()
    await rig.client().set_charging_amps(9)
    path.write_text(old)  # a restored backup: its counter was used already
    posts = rig.signed_posts()
    with caplog.at_level(logging.INFO):
        await rig.client().set_charging_amps(10)
    assert rig.proxy.car.request_amps == 10
    assert rig.car.faults == [6]
    assert rig.signed_posts() == posts + 2  # the refused command and its one retry
    assert any("already seen this command counter" in r.getMessage() for r in caplog.records)


async def test_new_epoch_after_a_car_reboot_resyncs(rig: Rig) -> None:
    client = rig.client()
    await client.set_charging_amps(8)
    rig.car.reboot()
    await client.set_charging_amps(9)
    assert rig.car.faults == [15]
    assert rig.proxy.car.request_amps == 9


async def test_expired_command_is_a_clear_error_after_one_resync(rig: Rig) -> None:
    client = rig.client()
    await client.set_charging_amps(8)
    rig.car.transit_secs = 60.0  # every command arrives long after it expired
    posts = rig.signed_posts()
    with pytest.raises(CommandSigningError, match="expired") as caught:
        await client.set_charging_amps(9)
    assert caught.value.fault == 17
    assert rig.signed_posts() == posts + 2
    with pytest.raises(TeslaTransientError, match="not sent"):
        await client.set_charging_amps(9)
    assert rig.signed_posts() == posts + 2
    assert rig.proxy.car.request_amps == 8


async def test_bad_session_info_tag_is_discarded(rig: Rig) -> None:
    rig.car.corrupt_session_tags = True
    client = rig.client()
    with pytest.raises(CommandSigningError, match="tag does not verify"):
        await client.set_charging_amps(8)
    assert rig.signed_posts() == 1
    assert rig.proxy.commands == []
    assert not (rig.folder / CACHE_FILE).exists()


async def test_command_for_another_vin_fails_the_cars_check(rig: Rig) -> None:
    client = rig.client()
    await client.set_charging_amps(8)
    # The cached session now claims another car's VIN: its tag names the wrong car.
    path = rig.folder / CACHE_FILE
    data = json.loads(path.read_text())
    data["sessions"]["5YJ3E1EA7KF000009"] = data["sessions"].pop(VIN)
    path.write_text(json.dumps(data))
    signer = FleetSigner(rig.key, SessionCache(path, crypto.public_bytes(rig.key)))
    session, k = signer._cached("5YJ3E1EA7KF000009") or (None, b"")
    assert session is not None
    from tesla_smart_charger.car.signing.session import new_address, new_uuid, sign  # noqa: PLC0415

    signed = sign(
        session, k, signer.public, b"\x12\x04\x52\x02\x08\x01", now=time.time(), uuid=new_uuid(),
        address=new_address(),
    )  # fmt: skip
    verdict = rig.car.handle(signed.message.encode())
    assert verdict.action is None
    assert verdict.reply.fault == 5  # INVALID_SIGNATURE


async def test_sleeping_car_is_asleep_not_a_signing_fault(rig: Rig) -> None:
    client = rig.client()
    await client.set_charging_amps(8)
    rig.proxy.car.state = "asleep"
    with pytest.raises(VehicleAsleep):
        await client.set_charging_amps(9)
    assert rig.proxy.billing.wake == 0
    assert client.policy.failures == 0


async def test_a_fleet_error_counts_once_in_the_policy(rig: Rig) -> None:
    client = rig.client()
    rig.proxy.inject(404, paths="signed_command")
    with pytest.raises(TeslaProtocolError, match="HTTP 404") as caught:
        await client.set_charging_amps(8)
    assert not isinstance(caught.value, CommandSigningError)
    assert client.policy.failures == 1
    assert rig.signed_posts() == 1
