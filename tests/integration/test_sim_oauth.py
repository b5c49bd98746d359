"""The simulated token endpoint behaves like Tesla's: single-use refresh tokens, real grants."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tests.helpers.e2e import WAIT_SECS

CLIENT = "cid"
SECRET = "csecret"
REDIRECT = "https://example.com/cb"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[SimulatedOAuth]:
    server = SimulatedOAuth(access_ttl=600, client_id=CLIENT, client_secret=SECRET, clock=clock)
    base = await server.start()
    assert base.startswith("http://127.0.0.1:")
    yield server
    await server.stop()


async def post(
    session: aiohttp.ClientSession, sim: SimulatedOAuth, **form: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(sim.token_url, data=form) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def refresh(
    session: aiohttp.ClientSession, sim: SimulatedOAuth, token: str
) -> tuple[int, dict[str, Any]]:
    return await post(
        session, sim, grant_type="refresh_token", client_id=CLIENT, refresh_token=token
    )


def raw_std_decode(segment: str) -> Any:
    """What Go's base64.RawStdEncoding accepts: standard alphabet, no padding."""
    assert "=" not in segment
    return json.loads(base64.b64decode(segment + "=" * (-len(segment) % 4), validate=True))


async def test_each_refresh_token_works_once(
    sim: SimulatedOAuth, session: aiohttp.ClientSession
) -> None:
    _, first = sim.issue_initial()
    status, reply = await refresh(session, sim, first)
    assert status == 200
    assert set(reply) == {"access_token", "refresh_token", "id_token", "expires_in", "token_type"}
    assert reply["token_type"] == "Bearer"
    assert reply["expires_in"] == 600
    assert reply["refresh_token"].startswith("NA_")
    assert sim.is_valid_access(reply["access_token"])
    status, again = await refresh(session, sim, first)
    assert status == 401
    assert again["error"] == "login_required"
    assert first not in json.dumps(again)
    status, unknown = await refresh(session, sim, "NA_nonsense")
    assert (status, unknown["error"]) == (401, "login_required")
    assert sim.login_required_count == 2
    assert sim.refresh_count == 1
    status, _ = await refresh(session, sim, reply["refresh_token"])
    assert status == 200


async def test_wrong_client_or_injected_failure_does_not_burn_the_token(
    sim: SimulatedOAuth, session: aiohttp.ClientSession
) -> None:
    _, token = sim.issue_initial()
    status, body = await post(
        session, sim, grant_type="refresh_token", client_id="other", refresh_token=token
    )
    assert (status, body["error"]) == (401, "invalid_client")
    sim.fail_next(503)
    status, _ = await refresh(session, sim, token)
    assert status == 503
    assert sim.is_valid_refresh(token)
    status, _ = await refresh(session, sim, token)
    assert status == 200


async def test_access_token_is_a_jwt_the_proxy_can_decode(sim: SimulatedOAuth) -> None:
    for _ in range(30):
        access, _ = sim.issue_initial()
        header, payload, signature = access.split(".")
        assert not set(payload) & set("-_")
        claims = raw_std_decode(payload)
        assert claims["ou_code"] == "NA"
        assert claims["aud"][0] == "https://fleet-api.prd.na.vn.cloud.tesla.com"
        assert claims["exp"] - claims["iat"] == 600
        assert isinstance(claims["sub"], str)
        assert header
        assert signature


async def test_access_tokens_expire_on_the_injected_clock(
    sim: SimulatedOAuth, clock: Clock
) -> None:
    access, _ = sim.issue_initial()
    assert sim.is_valid_access(access)
    assert not sim.is_valid_access("not-a-token")
    clock.now += 600
    assert not sim.is_valid_access(access)
    assert sim.expired_presented == 1


async def test_authorization_code_grant(
    sim: SimulatedOAuth, session: aiohttp.ClientSession, clock: Clock
) -> None:
    code = sim.issue_code(redirect_uri=REDIRECT, region="EU")
    assert code.startswith("EU_")
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "code": code,
        "redirect_uri": REDIRECT,
        "audience": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    }
    status, body = await post(session, sim, **{**form, "client_secret": "wrong"})
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await post(session, sim, **{k: v for k, v in form.items() if k != "audience"})
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = await post(session, sim, **{**form, "redirect_uri": "https://evil.example"})
    assert (status, body["error"]) == (400, "invalid_grant")
    # That attempt consumed the code, as a real server would: issue a fresh one.
    form["code"] = sim.issue_code(redirect_uri=REDIRECT, region="EU")
    status, body = await post(session, sim, **form)
    assert status == 200
    assert body["refresh_token"].startswith("EU_")
    claims = raw_std_decode(body["access_token"].split(".")[1])
    assert claims["aud"][0] == form["audience"]
    assert claims["ou_code"] == "EU"
    status, body = await post(session, sim, **form)
    assert (status, body["error"]) == (400, "invalid_grant")
    form["code"] = sim.issue_code(redirect_uri=REDIRECT)
    clock.now += 601
    status, body = await post(session, sim, **form)
    assert (status, body["error"]) == (400, "invalid_grant")
    assert sim.code_exchange_count == 1


async def test_client_credentials_partner_token_has_no_refresh_token(
    sim: SimulatedOAuth, session: aiohttp.ClientSession
) -> None:
    status, body = await post(
        session,
        sim,
        grant_type="client_credentials",
        client_id=CLIENT,
        client_secret=SECRET,
        scope="openid vehicle_device_data",
        audience="https://fleet-api.prd.na.vn.cloud.tesla.com",
    )
    assert status == 200
    assert "refresh_token" not in body
    assert sim.is_valid_access(body["access_token"])
    assert sim.partner_token_count == 1
    status, body = await post(session, sim, grant_type="password", client_id=CLIENT)
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_reuse_grace_accepts_only_the_most_recently_used_token(
    session: aiohttp.ClientSession, clock: Clock
) -> None:
    """Tesla's documented fallback, opt-in: the last used refresh token stays valid 24 h."""
    sim = SimulatedOAuth(client_id=CLIENT, clock=clock, reuse_grace=86400)
    await sim.start()
    try:
        _, a = sim.issue_initial()
        _, reply_b = await refresh(session, sim, a)
        b = reply_b["refresh_token"]
        status, reply_b2 = await refresh(session, sim, a)  # the reply to `a` was lost
        assert status == 200
        assert sim.grace_reuse_count == 1
        assert not sim.is_valid_refresh(b)  # the lost child is dead; the chain continues
        status, _ = await refresh(session, sim, reply_b2["refresh_token"])
        assert status == 200
        status, body = await refresh(session, sim, a)  # no longer the most recent
        assert (status, body["error"]) == (401, "login_required")
    finally:
        await sim.stop()


async def test_wait_refreshes_wakes_on_a_refresh(
    sim: SimulatedOAuth, session: aiohttp.ClientSession
) -> None:
    _, token = sim.issue_initial()
    waiter = asyncio.create_task(sim.wait_refreshes(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    await refresh(session, sim, token)
    async with asyncio.timeout(WAIT_SECS):
        await waiter
    assert sim.refresh_count == 1


def test_repr_names_no_tokens() -> None:
    sim = SimulatedOAuth(client_secret="TOPSECRET")
    access, refresh_token = sim.issue_initial()
    text = repr(sim)
    assert access not in text
    assert refresh_token not in text
    assert "TOPSECRET" not in text
    with pytest.raises(binascii.Error):
        base64.b64decode("-_-_", validate=True)  # why the payload must avoid '-' and '_'
