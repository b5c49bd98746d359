"""Token store and manager against the simulated endpoint's real single-use semantics."""

from __future__ import annotations

import asyncio
import io
import itertools
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

from tesla_smart_charger.car import tokens
from tesla_smart_charger.car.tokens import TokenManager, TokenPair, TokenStore, jwt_claims
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.control.events import AuthLost, Event, TokenRefreshed
from tesla_smart_charger.errors import LoginRequired, TokenEndpointError, TokenError
from tesla_smart_charger.logging_setup import clear_secrets, configure_logging
from tesla_smart_charger.simulator.oauth import SimulatedOAuth, make_jwt
from tests.helpers.e2e import WAIT_SECS
from tests.helpers.storage import tiny_tmpfs

T0 = 1_800_000_000.0
TTL = 1000.0
CLIENT = "sim-client"


class FakeClock:
    """The monotonic clock the tests move by hand, and a wall clock that can also be stepped."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.step = 0.0  # how far the wall clock was stepped away from the monotonic one
        self.sleeps: list[float] = []
        self._moved = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        """Starts equal to the monotonic clock; `step` moves it as NTP or a person would."""
        return self.now + self.step

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
            wall=clock.wall,
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


async def test_a_full_store_keeps_the_rotated_pair_in_memory_and_saves_it_later(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
    *,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The old refresh token is spent once the endpoint answers: memory is then the only copy."""
    path = tmp_path / "tokens.json"
    old = seed_store(path, oauth)
    manager = make_manager()
    real_save = TokenStore.save
    attempts: list[float] = []

    def full_disk(self: TokenStore, pair: TokenPair) -> None:
        attempts.append(clock.now)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TokenStore, "save", full_disk)
    clock.now = T0 + TTL + 1  # the current token has expired
    with caplog.at_level(logging.INFO, logger="tesla_smart_charger.car.tokens"):
        token = await manager.access_token()
        assert token != old.access_token  # the rotated pair is used, not lost
        assert oauth.is_valid_access(token)
        assert stored(path)["access_token"] == old.access_token
        assert manager.unsaved
        status = manager.status()
        assert status["saved"] is False
        assert "No space left on device" in status["store_problem"]
        assert "restart" in status["store_problem"]
        assert manager.store_policy.state_now() != "ok"
        # The policy backs the retries off (1 s doubling), and each failure is not a new line.
        for _ in range(3):
            clock.now += manager.store_policy.wait_secs()
            assert await manager.save_pending() is False
        assert [b - a for a, b in itertools.pairwise(attempts)] == pytest.approx(
            [1.0, 2.0, 4.0], rel=0.21
        )
        monkeypatch.setattr(TokenStore, "save", real_save)  # space again
        clock.now += manager.store_policy.wait_secs()
        assert await manager.save_pending() is True
    assert stored(path)["access_token"] == token
    assert stored(path)["refresh_token"] != old.refresh_token
    assert oauth.is_valid_refresh(stored(path)["refresh_token"])
    assert not manager.unsaved
    assert "saved" not in manager.status()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines  # the condition's start, once
    assert "No space left on device" in lines[0]
    assert "kept in memory" in lines[0]
    back = [r.getMessage() for r in caplog.records if "writable again" in r.getMessage()]
    assert len(back) == 1  # and its end, once
    assert oauth.refresh_count == 1


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
            wall=clock.wall,
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
        wall=clock.wall,
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
        wall=clock.wall,
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
    with caplog.at_level(logging.DEBUG, logger="tesla_smart_charger.car.tokens"):
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
        with caplog.at_level(logging.INFO, logger="tesla_smart_charger.car.tokens"):
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


# --- wall-clock steps: expiry and backoff follow the monotonic clock -----------------------

HOUR = 3600.0
DAY = 86400.0


async def test_a_wall_clock_step_back_does_not_revive_an_expired_token(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    first = seed_store(tmp_path / "tokens.json", oauth)
    manager = make_manager()
    assert await manager.access_token() == first.access_token  # loaded at T0
    clock.now = T0 + TTL + 1  # expired, by the monotonic clock
    clock.step = -2 * HOUR  # the wall clock says it has 7,199 s left
    token = await manager.access_token()
    assert token != first.access_token
    assert oauth.refresh_count == 1
    # A new process started after the step sees an issue time in its future: not believed.
    fresh = make_manager(tmp_path / "copy.json")
    TokenStore(tmp_path / "copy.json").save(
        TokenPair("a", "NA_r", clock.wall() + 2 * HOUR + TTL, clock.wall() + 2 * HOUR, "na")
    )
    assert fresh.status()["access_expires_in_secs"] == 0
    assert fresh.refresh_due_at() == clock.now


async def test_a_token_obtained_while_the_wall_clock_ran_a_day_ahead_is_not_trusted_longer(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    path = tmp_path / "tokens.json"
    seed_store(path, oauth, issued_at=T0 - TTL)  # due now
    manager = make_manager()
    clock.step = DAY  # a wrong RTC at boot
    token = await manager.access_token()
    assert oauth.refresh_count == 1
    assert stored(path)["issued_at"] == T0 + DAY  # the wall clock is only persisted
    clock.step = 0.0  # NTP corrects it
    clock.now = T0 + 79
    assert manager.status()["access_expires_in_secs"] == int(TTL - 79)  # not 86,321 s more
    clock.now = T0 + 0.8 * TTL  # the usual refresh point, by the monotonic clock
    assert await manager.access_token() != token
    assert oauth.refresh_count == 2
    # A restart with the corrected clock does not believe the far-future times either.
    TokenStore(path).save(
        TokenPair(token, "NA_r", clock.wall() + DAY + TTL, clock.wall() + DAY, "na")
    )
    restarted = make_manager()
    assert restarted.status()["access_expires_in_secs"] == 0
    assert restarted.refresh_due_at() == clock.now


async def test_a_wall_clock_step_back_during_an_outage_does_not_stretch_the_backoff(
    tmp_path: Path,
    oauth: SimulatedOAuth,
    make_manager: MakeManager,
    clock: FakeClock,
) -> None:
    seed_store(tmp_path / "tokens.json", oauth, issued_at=T0 - TTL - 1)  # expired
    oauth.fail_next(503, 2)
    manager = make_manager()
    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        await manager.access_token()
    clock.step = -HOUR
    wait = manager.policy.wait_secs()
    assert 1.0 <= wait <= 1.2 + 1e-9  # not 3,601 s
    assert manager.status()["access_expires_in_secs"] == 0
    # The refresh task retries on time: two failures, then the new token.
    queue: asyncio.Queue[Event] = asyncio.Queue()
    event = await run_until(manager, queue, lambda: next_event(queue))
    assert isinstance(event, TokenRefreshed)
    assert oauth.requests == 3
    assert sum(clock.sleeps) <= (2.0 + 1.0) * 1.2 + 1.0  # seconds of backoff, not an hour


def test_stored_times_map_onto_the_monotonic_clock() -> None:
    pair = TokenPair("a", "b", expires_at=T0 + 600, issued_at=T0 - 400)
    times = tokens.timeline_from_store(pair, wall_now=T0, mono_now=50.0)
    assert (times.issued, times.expires, times.distrusted) == (-350.0, 650.0, False)
    assert times.refresh_due == pytest.approx(-350.0 + 800)
    # Issued more than the skew ahead of now, or expiring further ahead than a token lives.
    for bad in (
        TokenPair("a", "b", expires_at=T0 + 1400, issued_at=T0 + 400),
        TokenPair("a", "b", expires_at=T0 + 2 * DAY, issued_at=T0 - 10),
    ):
        times = tokens.timeline_from_store(bad, wall_now=T0, mono_now=50.0)
        assert (times.expires, times.refresh_due, times.distrusted) == (50.0, 50.0, True)


# --- one daemon per store ------------------------------------------------------------------


def test_the_daemon_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    first, second = tokens.DaemonLock(store), tokens.DaemonLock(store)
    assert first.acquire() is True
    assert first.running_daemon() == os.getpid()  # what `auth refresh` and `doctor` see
    # A read-only store keeps an earlier daemon's pid in the file: the kernel's record wins.
    first.path.write_text("999999\n")
    with pytest.raises(tokens.StoreInUse) as info:
        second.acquire(grace_secs=0.2)
    text = str(info.value)
    assert f"pid {os.getpid()}" in text
    assert "999999" not in text
    assert str(first.path) in text
    assert str(store) in text
    first.release()
    assert first.running_daemon() is None
    assert second.acquire(grace_secs=0.2) is True  # free again once the first has gone
    second.release()


async def test_a_read_only_store_starts_from_the_pair_a_kill_left_and_saves_it_later(
    tmp_path: Path, oauth: SimulatedOAuth, make_manager: MakeManager, clock: FakeClock
) -> None:
    """The only copy of a rotated pair in a temp file, on a store that became read-only."""
    folder = tmp_path / "state"
    with tiny_tmpfs(folder) as storage:
        path = folder / "tokens.json"
        seed_store(path, oauth)
        access, refresh = oauth.issue_initial()
        newer = TokenPair(access, refresh, T0 + 100 + TTL, T0 + 100, "na")
        (folder / ".tokens.json.k1ll3d.tmp").write_text(json.dumps(newer.to_json()))
        storage.read_only()
        store = TokenStore(path)
        assert store.recover_leftovers() == newer  # adopted, though it cannot be written
        assert store.unsaved == newer
        manager = make_manager(path)
        manager.hold_unsaved(newer)
        assert manager.unsaved
        assert await manager.access_token() == access  # not the store's older one
        status = manager.status()
        assert status["saved"] is False
        assert "Read-only file system" in status["store_problem"]
        storage.writable()
        clock.now += manager.store_policy.wait_secs()
        assert await manager.save_pending() is True
        assert stored(path)["refresh_token"] == refresh
        assert not manager.unsaved
