"""The simulated Shelly devices: recorded reply shapes, auth handshakes, outages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.shelly.build import parse_em_status, parse_gen1_em_status
from tesla_smart_charger.simulator.shelly import SimulatedShelly, parse_digest_header
from tests.helpers.e2e import WAIT_SECS
from tests.helpers.fixtures import load_fixture
from tests.helpers.shelly import running

GEN1_STATUS = load_fixture("shelly/gen1_em_status.json")
PRO3EM_STATUS = load_fixture("shelly/pro3em_em_status.json")
PRO3EM_SHELLY = load_fixture("shelly/pro3em_shelly.json")
PASSWORD = "sim-pass"


async def get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON body (or text when not JSON) and headers of one GET."""
    async with session.get(url, headers=headers) as resp:
        if resp.content_type == "application/json":
            body = await resp.json()
        else:
            body = await resp.text()
        return resp.status, body, dict(resp.headers.items())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest_header(
    challenge: dict[str, str],
    uri: str,
    *,
    password: str = PASSWORD,
    nc: str = "00000001",
    method: str = "GET",
) -> str:
    """An RFC 7616 SHA-256 Authorization header computed independently of aiohttp."""
    realm, nonce, cnonce = challenge["realm"], challenge["nonce"], "0a4f113b"
    ha1 = sha256(f"admin:{realm}:{password}")
    ha2 = sha256(f"{method}:{uri}")
    response = sha256(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="admin", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=SHA-256, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


# --- Shelly EM Gen1 ----------------------------------------------------------------------------


async def test_gen1_shapes_match_the_recorded_device(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", phase_amps=[10.0, -4.0], volts=230.0)
    async with running(sim) as url:
        _, info, _ = await get(session, f"{url}/shelly")
        _, status, _ = await get(session, f"{url}/status")
        _, emeter1, _ = await get(session, f"{url}/emeter/1")
        missing, _, _ = await get(session, f"{url}/emeter/2")
    assert info["type"] == "SHEM"
    assert info["auth"] is False
    assert "gen" not in info
    assert set(status) == set(GEN1_STATUS)
    assert set(status["emeters"][0]) == set(GEN1_STATUS["emeters"][0])
    assert set(status["relays"][0]) == set(GEN1_STATUS["relays"][0])
    ch0 = status["emeters"][0]
    assert ch0["power"] == pytest.approx(10 * 230 * 0.95, abs=0.01)
    assert ch0["pf"] == 0.95
    assert ch0["reactive"] == pytest.approx(10 * 230 * (1 - 0.95**2) ** 0.5, abs=0.01)
    assert ch0["is_valid"] is True
    assert emeter1 == status["emeters"][1] | {"total": emeter1["total"]}
    assert emeter1["power"] < 0
    assert emeter1["pf"] == -0.95
    assert missing == 404


async def test_gen1_status_round_trips_through_the_parser(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", phase_amps=[13.7, -2.25], volts=236.0)
    async with running(sim) as url:
        _, status, _ = await get(session, f"{url}/status")
        sim.set_amps([0.0, 0.0])
        _, idle, _ = await get(session, f"{url}/status")
    amps = [s.amps for s in parse_gen1_em_status(status, 230.0)]
    assert amps == pytest.approx([13.7, -2.25], abs=0.01)
    assert [s.amps for s in parse_gen1_em_status(idle, 230.0)] == [0.0, 0.0]


async def test_gen1_invalid_flag(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    sim.set_valid(False)
    async with running(sim) as url:
        _, status, _ = await get(session, f"{url}/status")
    assert [m["is_valid"] for m in status["emeters"]] == [False, False]


async def test_gen1_basic_auth(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD)
    good = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"admin:nope").decode()
    async with running(sim) as url:
        open_status, info, _ = await get(session, f"{url}/shelly")
        denied, _, headers = await get(session, f"{url}/status")
        wrong, _, _ = await get(session, f"{url}/emeter/0", {"Authorization": bad})
        ok, status, _ = await get(session, f"{url}/status", {"Authorization": good})
    assert open_status == 200
    assert info["auth"] is True
    assert denied == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong == 401
    assert ok == 200
    assert len(status["emeters"]) == 2
    assert sim.requests == 4


async def test_status_override_is_served_verbatim(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly.from_fixture("em-gen1", GEN1_STATUS)
    async with running(sim) as url:
        _, status, _ = await get(session, f"{url}/status")
        sim.set_status_override(None)
        _, computed, _ = await get(session, f"{url}/status")
    assert status == GEN1_STATUS
    assert computed != GEN1_STATUS


# --- Shelly Pro 3EM ------------------------------------------------------------------------------


async def test_pro3em_shapes_match_the_recorded_device(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", phase_amps=[9.5, -2.0, 0.0], volts=231.0)
    async with running(sim) as url:
        _, info, _ = await get(session, f"{url}/shelly")
        _, em, _ = await get(session, f"{url}/rpc/EM.GetStatus?id=0")
        async with session.post(f"{url}/rpc/EM.GetStatus", json={"id": 0, "src": "x"}) as resp:
            posted = await resp.json()
        _, device_info, _ = await get(session, f"{url}/rpc/Shelly.GetDeviceInfo")
    assert set(info) == set(PRO3EM_SHELLY)
    assert info["gen"] == 2
    assert info["app"] == "Pro3EM"
    assert info["profile"] == "triphase"
    assert info["auth_en"] is False
    assert set(em) == set(PRO3EM_STATUS)
    assert list(em) == list(PRO3EM_STATUS)  # same key order as the device
    assert em["a_current"] == 9.5
    assert em["a_act_power"] == pytest.approx(9.5 * 231 * 0.95, abs=0.1)
    assert em["b_current"] == 2.0
    assert em["b_act_power"] < 0
    assert em["c_act_power"] == 0.0
    assert em["n_current"] is None
    assert em["total_current"] == 11.5
    assert [s.amps for s in parse_em_status(em)] == [9.5, -2.0, 0.0]
    assert posted == em
    assert device_info["id"] == sim.device_id


async def test_pro3em_fixture_served_verbatim(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly.from_fixture("pro3em", PRO3EM_STATUS)
    async with running(sim) as url:
        _, em, _ = await get(session, f"{url}/rpc/EM.GetStatus?id=0")
    assert em == PRO3EM_STATUS


async def test_pro3em_errors_and_unknown_methods(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em")
    sim.set_valid(False)
    async with running(sim) as url:
        _, em, _ = await get(session, f"{url}/rpc/EM.GetStatus?id=0")
        async with session.get(f"{url}/rpc/EM1.GetStatus?id=0") as resp:
            unknown = resp.status
        async with session.get(f"{url}/rpc/EM.GetStatus?id=1") as resp:
            bad_id = resp.status
    assert em["a_errors"] == ["out_of_range:current"]
    assert not any(s.valid for s in parse_em_status(em))
    assert unknown == 404
    assert bad_id == 404


async def test_pro3em_digest_auth_handshake(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD)
    uri = "/rpc/EM.GetStatus?id=0"
    async with running(sim) as url:
        _, info, _ = await get(session, f"{url}/shelly")
        info_status, _, _ = await get(session, f"{url}/rpc/Shelly.GetDeviceInfo")
        denied, _, headers = await get(session, url + uri)
        scheme, _, params = headers["WWW-Authenticate"].partition(" ")
        challenge = parse_digest_header(params)
        ok, em, _ = await get(session, url + uri, {"Authorization": digest_header(challenge, uri)})
        replay, _, _ = await get(
            session, url + uri, {"Authorization": digest_header(challenge, uri)}
        )
        next_nc = digest_header(challenge, uri, nc="00000002")
        again, _, _ = await get(session, url + uri, {"Authorization": next_nc})
        wrong_pw = digest_header(challenge, uri, password="nope", nc="00000003")
        wrong, _, _ = await get(session, url + uri, {"Authorization": wrong_pw})
        other_uri = digest_header(challenge, "/rpc/EM.GetStatus?id=1", nc="00000004")
        mismatch, _, _ = await get(session, url + uri, {"Authorization": other_uri})
    assert info["auth_en"] is True
    assert info["auth_domain"] == sim.device_id
    assert info_status == 200  # exempt from auth, as on the device
    assert denied == 401
    assert scheme == "Digest"
    assert challenge["realm"] == sim.device_id
    assert challenge["algorithm"] == "SHA-256"
    assert challenge["qop"] == "auth"
    assert ok == 200
    assert "a_current" in em
    assert replay == 401  # the same nonce count twice is a replay
    assert again == 200
    assert wrong == 401
    assert mismatch == 401


async def test_pro3em_throttle_answers_429_to_authenticated_requests(
    session: aiohttp.ClientSession,
) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD)
    uri = "/rpc/EM.GetStatus?id=0"
    async with running(sim) as url:
        _, _, headers = await get(session, url + uri)
        challenge = parse_digest_header(headers["WWW-Authenticate"].partition(" ")[2])
        sim.throttle_next = 1
        throttled, _, _ = await get(
            session, url + uri, {"Authorization": digest_header(challenge, uri)}
        )
        # The device dropped its nonces: the old one is refused, a fresh handshake works.
        stale, _, headers = await get(
            session, url + uri, {"Authorization": digest_header(challenge, uri, nc="00000002")}
        )
        fresh = parse_digest_header(headers["WWW-Authenticate"].partition(" ")[2])
        ok, _, _ = await get(session, url + uri, {"Authorization": digest_header(fresh, uri)})
    assert throttled == 429
    assert sim.throttle_next == 0
    assert stale == 401
    assert fresh["nonce"] != challenge["nonce"]
    assert ok == 200


# --- knobs and lifecycle --------------------------------------------------------------------------


async def test_not_responding_hangs_until_resumed(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    async with running(sim) as url:
        sim.set_responding(False)
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(f"{url}/status", timeout=aiohttp.ClientTimeout(total=0.2)):
                pass
        sim.set_responding(True)
        status, _, _ = await get(session, f"{url}/status")
    assert status == 200
    assert sim.requests == 2


async def test_not_responding_can_drop_the_connection(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em")
    async with running(sim) as url:
        sim.set_responding(False, hang=False)
        with pytest.raises(aiohttp.ClientError):
            await get(session, f"{url}/rpc/EM.GetStatus?id=0")


async def test_stop_releases_a_hanging_request(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    url = await sim.start()
    sim.set_responding(False)
    request = asyncio.ensure_future(get(session, f"{url}/status"))
    await asyncio.wait_for(sim.wait_requests(1), timeout=WAIT_SECS)
    await sim.stop()
    status, _, _ = await asyncio.wait_for(request, timeout=WAIT_SECS)
    assert status == 503


def test_set_amps_checks_the_channel_count() -> None:
    with pytest.raises(ValueError, match="2 channels"):
        SimulatedShelly("em-gen1").set_amps([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="3 channels"):
        SimulatedShelly("pro3em", phase_amps=[1.0])


async def test_start_twice_is_refused() -> None:
    sim = SimulatedShelly("pro3em")
    async with running(sim):
        with pytest.raises(RuntimeError):
            await sim.start()
