"""Token store and manager against the simulated endpoint's real single-use semantics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tesla_smart_charger import tokens
from tesla_smart_charger.config import load_config
from tesla_smart_charger.errors import LoginRequired, TokenEndpointError, TokenError
from tesla_smart_charger.events import AuthLost, Event, TokenRefreshed
from tesla_smart_charger.logging_setup import clear_secrets, configure_logging
from tesla_smart_charger.simulator.oauth import SimulatedOAuth, make_jwt
from tesla_smart_charger.tokens import TokenManager, TokenPair, TokenStore, jwt_claims
from tests.e2e import WAIT_SECS

T0 = 1_800_000_000.0
TTL = 1000.0
CLIENT = "sim-client"


class FakeClock:
    """Wall clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._moved = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, secs: float) -> None:
        """Advance virtual time and let other tasks run once."""
        self.sleeps.append(secs)
        self.now += secs
        async with self._moved:
            self._moved.notify_all()
        await asyncio.sleep(0)

    async def reached(self, when: float) -> None:
        """Wait until the code under test has slept its way to `when`."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.now >= when)


@pytest.fixture
async def oauth() -> AsyncIterator[SimulatedOAuth]:
    sim = SimulatedOAuth(access_ttl=TTL, client_id=CLIENT)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def seed_store(path: Path, sim: SimulatedOAuth, *, issued_at: float = T0) -> TokenPair:
    access, refresh = sim.issue_initial()
    pair = TokenPair(access, refresh, issued_at + TTL, issued_at, "na")
    TokenStore(path).save(pair)
    return pair


MakeManager = Callable[..., TokenManager]


@pytest.fixture
def make_manager(
    tmp_path: Path, oauth: SimulatedOAuth, session: aiohttp.ClientSession, clock: FakeClock
) -> MakeManager:
    def _make(store: Path | None = None, **kwargs: Any) -> TokenManager:
        return TokenManager(
            TokenStore(store or tmp_path / "tokens.json"),
            session,
            token_url=oauth.token_url,
            client_id=CLIENT,
            clock=clock,
            sleep=clock.sleep,
            **kwargs,
        )

    return _make


def stored(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def next_event(queue: asyncio.Queue[Event]) -> Event:
    async with asyncio.timeout(WAIT_SECS):
        return await queue.get()


# --- pure parts ----------------------------------------------------------------------------


def test_pair_repr_hides_tokens() -> None:
    pair = TokenPair("ACCESS-SECRET", "NA_REFRESH-SECRET", T0 + 10, T0, "na")
    text = repr(pair) + str(pair)
    assert "SECRET" not in text
    assert "expires_at" in text


def test_refresh_point_is_80_percent_of_lifetime() -> None:
    pair = TokenPair("a", "b", expires_at=T0 + 1000, issued_at=T0)
    assert pair.refresh_due_at == pytest.approx(T0 + 800)


def test_expiry_from_expires_in_else_jwt_exp() -> None:
    jwt = make_jwt({"exp": int(T0) + 500, "iat": int(T0)})
    with_in = tokens.pair_from_reply(
        {"access_token": jwt, "refresh_token": "EU_x", "expires_in": 60}, issued_at=T0
    )
    assert with_in.expires_at == T0 + 60
    assert with_in.region == "eu"
    without = tokens.pair_from_reply({"access_token": jwt, "refresh_token": "x"}, issued_at=T0)
    assert without.expires_at == T0 + 500


def test_simulated_jwt_payload_is_std_and_urlsafe_base64() -> None:
    sim = SimulatedOAuth()
    for _ in range(50):
        access, refresh = sim.issue_initial()
        _header, payload, _sig = access.split(".")
        assert not set(payload) & set("-_+/=")
        claims = jwt_claims(access)
        assert claims is not None
        assert {"exp", "iat", "sub", "aud", "ou_code"} <= claims.keys()
        assert refresh.startswith("NA_")


# --- the store -----------------------------------------------------------------------------


def test_store_roundtrip_is_0600_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    assert store.load() is None
    assert store.mtime_ns is None
    pair = TokenPair("acc", "NA_ref", T0 + 5, T0, "na")
    store.save(pair)
    assert store.load() == pair
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]
    first = store.signature()
    store.save(TokenPair("acc2", "NA_ref2", T0 + 5, T0, "na"))
    assert store.signature() != first


def test_save_fsyncs_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    TokenStore(tmp_path / "tokens.json").save(TokenPair("a", "b", T0, T0))
    assert len(synced) == 2  # the temp file, then the folder after the rename


def test_corrupt_store_names_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"access_token": "LEAKED-SECRET", "refresh_token": 5}')
    with pytest.raises(TokenError) as info:
        TokenStore(path).load()
    assert str(path) in str(info.value)
    assert "refresh_token" in str(info.value)
    assert "LEAKED" not in str(info.value)
    path.write_text("{not json LEAKED-SECRET")
    with pytest.raises(TokenError, match="corrupt") as info2:
        TokenStore(path).load()
    assert "LEAKED" not in str(info2.value)


def test_seed_from_config_once_and_never_touches_config(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    access = make_jwt({"exp": int(T0) + 3600, "iat": int(T0)})
    cfg_path = write_config(teslaAccessToken=access, teslaRefreshToken="EU_seedrefresh")
    before = cfg_path.read_bytes()
    loaded = load_config(cfg_path)
    store = TokenStore(loaded.token_file)
    pair = store.seed_from_config(loaded.settings)
    assert pair is not None
    assert pair.expires_at == T0 + 3600
    assert pair.issued_at == T0
    assert pair.region == "eu"
    assert store.load() == pair
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    # The store wins from now on.
    store.save(TokenPair("newer", "EU_newer", T0 + 9, T0))
    assert store.seed_from_config(loaded.settings) is None
    loaded_pair = store.load()
    assert loaded_pair is not None
    assert loaded_pair.refresh_token == "EU_newer"
    assert cfg_path.read_bytes() == before


def test_seed_without_jwt_is_due_at_once(write_config: Callable[..., Path]) -> None:
    loaded = load_config(write_config())  # SEED_CONFIG tokens are not JWTs
    store = TokenStore(loaded.token_file)
    pair = store.seed_from_config(loaded.settings)
    assert pair is not None
    assert pair.expires_at <= pair.issued_at  # treated as expired: refresh now
    assert pair.refresh_token == "seed-refresh-token-SECRET"


async def test_async_lock_excludes_other_holders(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    # Held as `auth refresh` in another process would hold it.
    with store.lock(), pytest.raises(TokenEndpointError, match="held by another process"):
        async with store.alock(wait_secs=0.2):
            pass
    async with store.alock(wait_secs=0.2):
        assert stat.S_IMODE(os.stat(store.lock_path).st_mode) == 0o600


# --- refresh semantics ---------------------------------------------------------------------


async def test_refresh_rotates_and_reuse_is_login_required(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    old = seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager()
    new = await manager.refresh(force=True)
    assert new.refresh_token != old.refresh_token
    assert new.issued_at == clock.now
    assert new.expires_at == clock.now + TTL
    assert oauth.refresh_count == 1
    assert stored(tmp_path / "tokens.json")["refresh_token"] == new.refresh_token
    # A second process still holding the old pair (a stale copy) is refused.
    stale = tmp_path / "stale.json"
    TokenStore(stale).save(old)
    stale_manager = make_manager(stale)
    with pytest.raises(LoginRequired, match="login_required"):
        await stale_manager.refresh(force=True)
    assert stale_manager.state == "reauth_required"
    assert oauth.login_required_count == 1
    assert oauth.is_valid_refresh(new.refresh_token)


async def test_proactive_refresh_at_80_percent(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    first = seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager()
    clock.now = T0 + 799
    assert await manager.access_token() == first.access_token
    assert oauth.refresh_count == 0
    clock.now = T0 + 800
    token = await manager.access_token()
    assert token != first.access_token
    assert oauth.refresh_count == 1
    assert manager.refresh_due_at() == pytest.approx(T0 + 800 + 0.8 * TTL)


async def test_ten_concurrent_callers_cause_one_post(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager()
    clock.now = T0 + 850
    got = await asyncio.gather(*(manager.access_token() for _ in range(10)))
    assert oauth.refresh_count == 1
    assert len(set(got)) == 1
    assert oauth.login_required_count == 0


async def test_two_managers_on_one_store_refresh_once(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    """Like the daemon and `auth refresh` at once: the file lock plus the re-read win."""
    seed_store(tmp_path / "tokens.json", oauth)
    a, b = make_manager(), make_manager()
    clock.now = T0 + 900
    pa, pb = await asyncio.gather(a.refresh(), b.refresh())
    assert oauth.refresh_count == 1
    assert pa == pb
    assert oauth.login_required_count == 0


async def test_handle_unauthorized_forces_exactly_one_refresh(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    first = seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager()
    clock.now = T0 + 60  # long before the refresh point
    assert await manager.handle_unauthorized(first.access_token) is True
    assert oauth.refresh_count == 1
    new = await manager.access_token()
    assert new != first.access_token
    # A late 401 for the old token (another request in flight) does not refresh again.
    assert await manager.handle_unauthorized(first.access_token) is True
    assert oauth.refresh_count == 1
    # A 401 for a token issued moments ago: refreshing cannot help.
    assert await manager.handle_unauthorized(new) is False
    assert oauth.refresh_count == 1


async def test_new_pair_is_on_disk_before_it_is_returned(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "tokens.json"
    seed_store(path, oauth)
    manager = make_manager()
    clock.now = T0 + 900
    token = await manager.access_token()
    assert stored(path)["access_token"] == token  # nothing ran between return and this read

    # If the save fails, the new token is never handed out.
    def broken_save(self: TokenStore, pair: TokenPair) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TokenStore, "save", broken_save)
    clock.now = T0 + 900 + TTL + 1  # the current token has expired
    with pytest.raises(TokenError, match="cannot write token store") as info:
        await manager.access_token()
    assert "No space" in str(info.value)
    assert stored(path)["access_token"] == token


async def test_reply_seen_by_the_post_is_saved_before_return(
    tmp_path: Path, session: aiohttp.ClientSession, clock: FakeClock, oauth: SimulatedOAuth
) -> None:
    """A hand-written endpoint looks at the store while the POST is in flight."""
    path = tmp_path / "tokens.json"
    old = seed_store(path, oauth)
    seen_during_post: list[str] = []
    forms: list[dict[str, str]] = []
    new_access = make_jwt({"exp": int(T0) + 2000})

    async def token(request: web.Request) -> web.Response:
        forms.append({k: str(v) for k, v in (await request.post()).items()})
        seen_during_post.append(stored(path)["refresh_token"])
        return web.json_response(
            {"access_token": new_access, "refresh_token": "NA_next", "expires_in": 100}
        )

    app = web.Application()
    app.router.add_post("/oauth2/v3/token", token)
    async with TestServer(app, host="127.0.0.1") as server:
        manager = TokenManager(
            TokenStore(path),
            session,
            token_url=str(server.make_url("/oauth2/v3/token")),
            client_id=CLIENT,
            clock=clock,
        )
        clock.now = T0 + 950
        token_now = await manager.access_token()
    assert forms == [
        {"grant_type": "refresh_token", "refresh_token": old.refresh_token, "client_id": CLIENT}
    ]
    assert seen_during_post == [old.refresh_token]
    assert token_now == new_access
    assert stored(path)["refresh_token"] == "NA_next"
    assert stored(path)["expires_at"] == T0 + 950 + 100


async def test_network_failure_keeps_valid_token_then_raises_once_expired(
    tmp_path: Path, session: aiohttp.ClientSession, clock: FakeClock, oauth: SimulatedOAuth
) -> None:
    first = seed_store(tmp_path / "tokens.json", oauth)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/oauth2/v3/token"
    down = TokenManager(
        TokenStore(tmp_path / "tokens.json"),
        session,
        token_url=dead_url,
        client_id=CLIENT,
        clock=clock,
    )
    clock.now = T0 + 900
    assert await down.access_token() == first.access_token
    assert down.state == "ok"
    clock.now = T0 + TTL + 100  # expired, and the endpoint is still unreachable
    with pytest.raises(TokenEndpointError, match="nothing listens on"):
        await down.access_token()
    oauth.fail_next(503)
    up_but_failing = TokenManager(
        TokenStore(tmp_path / "tokens.json"),
        session,
        token_url=oauth.token_url,
        client_id=CLIENT,
        clock=clock,
    )
    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        await up_but_failing.access_token()
    assert oauth.is_valid_refresh(first.refresh_token)  # 5xx never burns the token


async def test_missing_store(make_manager: MakeManager, tmp_path: Path) -> None:
    manager = make_manager()
    with pytest.raises(LoginRequired, match="auth exchange") as info:
        await manager.access_token()
    assert str(tmp_path / "tokens.json") in str(info.value)
    assert manager.status() == {
        "state": "missing",
        "access_expires_in_secs": None,
        "last_refresh_at": None,
    }


# --- the refresh task ----------------------------------------------------------------------


async def run_until(
    manager: TokenManager, queue: asyncio.Queue[Event], step: Callable[[], Awaitable[Event]]
) -> Event:
    task = asyncio.create_task(manager.run(queue))
    try:
        return await step()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_refreshes_when_due_and_reports(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager(store_poll_secs=50.0)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    event = await run_until(manager, queue, lambda: next_event(queue))
    assert isinstance(event, TokenRefreshed)
    assert oauth.refresh_count == 1
    assert event.at == pytest.approx(T0 + 800)
    assert max(clock.sleeps) <= 50.0  # bounded sleeps: the store is looked at regularly
    status = manager.status()
    assert status["state"] == "ok"
    assert status["access_expires_in_secs"] == int(TTL)
    assert status["last_refresh_at"] == tokens.iso8601(T0 + 800)


async def test_run_retries_5xx_with_backoff(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_store(tmp_path / "tokens.json", oauth, issued_at=T0 - 900)  # already due
    oauth.fail_next(503, 3)
    manager = make_manager()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    with caplog.at_level(logging.DEBUG, logger="tesla_smart_charger.tokens"):
        event = await run_until(manager, queue, lambda: next_event(queue))
    assert isinstance(event, TokenRefreshed)
    # 1 s doubling, with up to 20 % jitter that only ever lengthens the wait.
    # (sleeps are cut into store-poll slices, so the waits are summed.)
    assert 1.0 <= clock.sleeps[0] <= 1.2 + 1e-9
    assert 1.0 + 2.0 + 4.0 <= sum(clock.sleeps) <= (1.0 + 2.0 + 4.0) * 1.2 + 2.0
    assert oauth.refresh_count == 1
    assert oauth.login_required_count == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one line per outage, not one per attempt
    assert "HTTP 503" in warnings[0].getMessage()


async def test_login_required_reauth_once_then_picks_up_new_store(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "tokens.json"
    old = seed_store(path, oauth, issued_at=T0 - 900)
    # Someone else used the refresh token: our copy is now dead.
    elsewhere = tmp_path / "elsewhere.json"
    TokenStore(elsewhere).save(old)
    await make_manager(elsewhere).refresh(force=True)
    manager = make_manager(store_poll_secs=5.0)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    task = asyncio.create_task(manager.run(queue))
    try:
        with caplog.at_level(logging.INFO, logger="tesla_smart_charger.tokens"):
            lost = await next_event(queue)
            assert isinstance(lost, AuthLost)
            assert "login_required" in lost.reason
            assert manager.state == "reauth_required"
            assert manager.status()["state"] == "reauth_required"
            # The task keeps running; many polls later the endpoint was asked only once.
            async with asyncio.timeout(WAIT_SECS):
                await clock.reached(clock.now + 500)
            assert oauth.login_required_count == 1
            assert queue.empty()
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1
            assert "tesla-smart-charger auth exchange" in errors[0].getMessage()
            # `auth exchange` writes a new store: picked up without a restart.
            access, refresh = oauth.issue_initial()
            TokenStore(path).save(TokenPair(access, refresh, clock.now + TTL, clock.now, "na"))
            back = await next_event(queue)
        assert isinstance(back, TokenRefreshed)
        assert manager.state == "ok"
        assert await manager.access_token() == access
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_no_token_in_logs_errors_or_reprs(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "tokens.json"
    first = seed_store(path, oauth)
    manager = make_manager()
    texts: list[str] = [repr(manager), repr(first), repr(TokenStore(path))]
    with caplog.at_level(logging.DEBUG):
        clock.now = T0 + 900
        second = await manager.access_token()
        stale = tmp_path / "stale.json"
        TokenStore(stale).save(first)
        try:
            await make_manager(stale).refresh(force=True)
        except LoginRequired as err:
            texts.append(str(err))
            texts.append(repr(err))
        oauth.fail_next(500)
        try:
            await manager.refresh(force=True)
        except TokenEndpointError as err:
            texts.append(str(err))
    texts.append(caplog.text)
    texts.append(repr(manager.status()))
    secrets = [first.access_token, first.refresh_token, second, stored(path)["refresh_token"]]
    assert len(texts) >= 7
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_every_stored_token_is_masked_by_the_log_handler(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "plain", stream=stream)
    try:
        pair = TokenPair("access-ROTATED-abcdef", "NA_refresh-ROTATED-abcdef", 2e9, 1e9, "na")
        TokenStore(tmp_path / "tokens.json").save(pair)
        logging.getLogger("tesla_smart_charger.test").warning(
            "leak? %s %s", pair.access_token, pair.refresh_token
        )
    finally:
        clear_secrets()
        configure_logging("INFO", "plain")
    assert "ROTATED" not in stream.getvalue()
    assert "leak? *** ***" in stream.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another owner")
def test_store_written_as_root_belongs_to_the_folder_owner(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    os.chown(folder, 4242, 4242)
    TokenStore(folder / "tokens.json").save(TokenPair("a" * 10, "NA_" + "r" * 10, 2e9, 1e9, "na"))
    st = (folder / "tokens.json").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4242)
    assert stat.S_IMODE(st.st_mode) == 0o600
