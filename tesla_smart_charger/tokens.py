"""Tesla OAuth tokens that are never lost: a durable store and a single-flight refresher.

Tesla refresh tokens are single use: every refresh returns a new one and invalidates the old
one. So a refresh must (1) never run twice at once, in this process or another one (`auth
refresh` while the daemon runs), and (2) be saved durably before the new tokens are used. A
crash at any instant then leaves a store whose refresh token the endpoint still accepts: the
only unavoidable window is between the endpoint's reply leaving the server and our rename,
which Tesla covers by keeping the most recently used refresh token valid for 24 h.

Nothing here ever logs or formats a token: messages name fields, files and statuses only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp

from tesla_smart_charger.const import TOKEN_TOTAL_TIMEOUT
from tesla_smart_charger.errors import LoginRequired, TokenEndpointError, TokenError
from tesla_smart_charger.events import AuthLost, Event, TokenRefreshed
from tesla_smart_charger.logging_setup import register_secret, scrub
from tesla_smart_charger.retry import RetryPolicy, describe_transport_error

if TYPE_CHECKING:
    from tesla_smart_charger.config import Settings

_LOG = logging.getLogger(__name__)

STORE_VERSION: Final = 1
# Refresh at this share of the access token's lifetime (the "about 80 %").
REFRESH_AT_FRACTION: Final = 0.8
# Used only when a reply has neither `expires_in` nor a JWT `exp`: refreshing too early is
# harmless, using an expired token is not.
DEFAULT_LIFETIME_SECS: Final = 3600.0
# How often the refresh task looks at the store file for a rewrite by `auth exchange`.
STORE_POLL_SECS: Final = 2.0
# How long a refresh waits for another process holding the store lock.
LOCK_TIMEOUT_SECS: Final = 30.0
LOCK_POLL_SECS: Final = 0.05
# Backoff of every token-endpoint request after network/5xx failures (the policy's range).
RETRY_MIN_SECS: Final = 1.0
RETRY_MAX_SECS: Final = 60.0
# The refresh task never spins, even if a policy says "now".
MIN_LOOP_SLEEP: Final = 0.05
# A 401 on a token this young will not be cured by another refresh (wrong audience/region).
FORCED_REFRESH_MIN_AGE_SECS: Final = 10.0
# Errors that mean the refresh token itself is dead.
_LOGIN_ERRORS: Final = frozenset({"login_required", "invalid_grant"})

FIX_REAUTH: Final = (
    "run: tesla-smart-charger auth url, log in, then tesla-smart-charger auth exchange <code>"
)

State = str  # "ok" | "refreshing" | "reauth_required" | "missing"


# --- pure helpers ------------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, or None if `token` is not one (never raises)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            claims = json.loads(decode(segment))
        except (binascii.Error, ValueError):
            continue
        return claims if isinstance(claims, dict) else None
    return None


def _jwt_number(token: str, claim: str) -> float | None:
    claims = jwt_claims(token)
    value = claims.get(claim) if claims else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def region_of(token: str) -> str | None:
    """The region prefix Tesla puts on refresh tokens and codes (`NA_...` -> `na`)."""
    prefix, sep, _ = token.partition("_")
    return prefix.lower() if sep and prefix.isalpha() and len(prefix) == 2 else None


def fingerprint(token: str) -> str:
    """A short, non-reversible label to tell tokens apart in memory (never logged)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def iso8601(epoch: float) -> str:
    """UTC timestamp for /status."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TokenPair:
    """One access/refresh token pair; `expires_at`/`issued_at` are wall-clock epoch seconds."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    issued_at: float
    region: str | None = None

    @property
    def lifetime(self) -> float:
        """Seconds the access token was issued for (0 when it came expired)."""
        return max(0.0, self.expires_at - self.issued_at)

    @property
    def refresh_due_at(self) -> float:
        """When to refresh proactively: 80 % into the access token's lifetime."""
        return self.issued_at + REFRESH_AT_FRACTION * self.lifetime

    def to_json(self) -> dict[str, Any]:
        """The store's on-disk form."""
        return {
            "version": STORE_VERSION,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "region": self.region,
        }

    @classmethod
    def from_json(cls, data: Any) -> TokenPair:
        """Parse the store's form; ValueError names the bad field (never its value)."""
        if not isinstance(data, dict):
            raise ValueError("the top level must be a JSON object")  # noqa: TRY004 (a parse error)
        for key in ("access_token", "refresh_token"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"field {key!r} is missing or not a non-empty string")
        numbers: dict[str, float] = {}
        for key in ("expires_at", "issued_at"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"field {key!r} is missing or not a number")  # noqa: TRY004
            numbers[key] = float(value)
        region = data.get("region")
        if region is not None and not isinstance(region, str):
            raise ValueError("field 'region' is not a string")
        return cls(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            expires_at=numbers["expires_at"],
            issued_at=numbers["issued_at"],
            region=region,
        )


def pair_from_reply(
    reply: Mapping[str, Any], *, issued_at: float, previous: TokenPair | None = None
) -> TokenPair:
    """Build a TokenPair from a token-endpoint reply (TokenEndpointError names a bad field)."""
    access = reply.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError("token endpoint reply lacks field 'access_token'")
    refresh = reply.get("refresh_token")
    if refresh is None and previous is not None:
        refresh = previous.refresh_token  # the server chose not to rotate it
    if not isinstance(refresh, str) or not refresh:
        raise TokenEndpointError("token endpoint reply lacks field 'refresh_token'")
    expires_in = reply.get("expires_in")
    if isinstance(expires_in, str):
        with contextlib.suppress(ValueError):
            expires_in = float(expires_in)
    if (
        isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and math.isfinite(expires_in)
        and expires_in > 0
    ):
        expires_at = issued_at + float(expires_in)
    else:
        exp = _jwt_number(access, "exp")
        expires_at = exp if exp is not None else issued_at + DEFAULT_LIFETIME_SECS
    region = region_of(refresh) or (previous.region if previous else None)
    return TokenPair(access, refresh, expires_at, issued_at, region)


def _secs(value: float) -> str:
    return f"{value:.0f} s"


def _short_error(payload: Any) -> str:
    """The `error` key of an OAuth error body, reduced to a safe identifier.

    Scrubbed before it is cut: an endpoint that echoes the refresh token in `error` must
    not leave any part of it in a log line or /status.
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, str):
        return ""
    safe = "".join(ch for ch in scrub(error) if ch.isalnum() or ch in "_-.* ")
    return safe.strip()[:64]


async def post_token_request(
    session: aiohttp.ClientSession, token_url: str, form: Mapping[str, str]
) -> dict[str, Any]:
    """POST a form to the token endpoint and return the JSON reply.

    401/400 with `login_required`/`invalid_grant` (and any other 4xx but 429) raise
    LoginRequired; network faults, timeouts, 429 and 5xx raise TokenEndpointError.
    """
    host = urlsplit(token_url).netloc or token_url
    try:
        async with asyncio.timeout(TOKEN_TOTAL_TIMEOUT):
            async with session.post(
                token_url, data=dict(form), headers={"Accept": "application/json"}
            ) as resp:
                status = resp.status
                text = await resp.text()
    except TimeoutError as err:
        raise TokenEndpointError(
            f"token endpoint {host} did not answer within {TOKEN_TOTAL_TIMEOUT:g} s"
        ) from err
    except (aiohttp.ClientError, OSError) as err:
        words = describe_transport_error(err, host=host)
        raise TokenEndpointError(f"token endpoint: {words}") from err
    try:
        payload: Any = json.loads(text) if text else None
    except ValueError:
        payload = None
    error = _short_error(payload)
    if status == 429 or status >= 500:
        what = "is rate limiting us" if status == 429 else "is failing on Tesla's side"
        detail = error.replace("_", " ") if error else ""
        raise TokenEndpointError(
            f"token endpoint {host} {what} (HTTP {status}{': ' + detail if detail else ''})"
        )
    if 400 <= status < 500:
        if error in _LOGIN_ERRORS or status == 401:
            raise LoginRequired(
                f"token endpoint {host} rejected the token (HTTP {status} {error or 'no error key'})"
            )
        hint = " (check teslaClientId / teslaClientSecret)" if "client" in error else ""
        raise LoginRequired(
            f"token endpoint {host} rejected the request (HTTP {status} {error or 'no error key'}){hint}"
        )
    if status != 200 or not isinstance(payload, dict):
        raise TokenEndpointError(f"token endpoint {host} sent HTTP {status} without a JSON object")
    return payload


# --- the store -----------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_folder_owner(fd: int, directory: Path) -> None:
    """Run as root (sudo auth exchange), give the file to the folder's owner.

    Under systemd's DynamicUser the service owns its state folder; a store written by root
    would be unreadable to it.
    """
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    if st.st_uid != 0 or st.st_gid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> tuple[int, int]:
    """Replace `path` atomically and durably; returns the new file's (inode, mtime_ns).

    Temp file in the same folder (created 0600 by mkstemp, so a secret is never readable by
    others, not even briefly), write, flush, fsync, rename, fsync the folder.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            _keep_folder_owner(fh.fileno(), directory)
            os.fsync(fh.fileno())
            st = os.fstat(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return (st.st_ino, st.st_mtime_ns)


def _mask_in_logs(pair: TokenPair) -> None:
    """Every token we hold is masked by the log handler too (defence in depth)."""
    register_secret(pair.access_token)
    register_secret(pair.refresh_token)


class TokenStore:
    """The token file (`tokenFile`, mode 0600) and its lock file `<store>.lock`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.last_written: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    @property
    def mtime_ns(self) -> int | None:
        """Modification time of the store file, None if it does not exist."""
        sig = self.signature()
        return sig[1] if sig else None

    def signature(self) -> tuple[int, int] | None:
        """(inode, mtime_ns): changes on every atomic rewrite, by us or another process."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def exists(self) -> bool:
        """True if the store file exists."""
        return self.path.exists()

    def load(self) -> TokenPair | None:
        """The stored pair; None if there is no store; TokenError naming the file if corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise TokenError(f"token store {self.path}: cannot read: {err.strerror}") from None
        try:
            pair = TokenPair.from_json(json.loads(raw))
        except ValueError as err:
            # json's message quotes no input for these errors; from_json names fields only.
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            raise TokenError(f"token store {self.path} is corrupt: {reason}") from None
        _mask_in_logs(pair)
        return pair

    def save(self, pair: TokenPair) -> None:
        """Write `pair` atomically and durably (mode 0600)."""
        _mask_in_logs(pair)
        data = json.dumps(pair.to_json(), indent=2).encode() + b"\n"
        self.last_written = atomic_write_bytes(self.path, data, mode=0o600)

    def seed_from_config(self, settings: Settings) -> TokenPair | None:
        """First start only: create the store from the config's tokens; the store wins after.

        The expiry comes from the access token's JWT `exp`; without one the pair is treated
        as expired so the first thing the daemon does is refresh. Returns the written pair, or
        None when a store exists or the config holds no refresh token. config.json is never
        rewritten.
        """
        if self.exists() or settings.tesla_refresh_token is None:
            return None
        refresh = settings.tesla_refresh_token.get_secret_value()
        access = (
            settings.tesla_access_token.get_secret_value() if settings.tesla_access_token else ""
        )
        now = time.time()
        exp = _jwt_number(access, "exp") if access else None
        iat = _jwt_number(access, "iat") if access else None
        if exp is None:
            issued_at = expires_at = now  # unknown expiry: due for refresh at once
        else:
            expires_at = exp
            issued_at = iat if iat is not None and iat <= exp else min(now, exp)
        pair = TokenPair(
            access_token=access or "none",
            refresh_token=refresh,
            expires_at=expires_at,
            issued_at=issued_at,
            region=settings.tesla_region or region_of(refresh),
        )
        with self.lock():
            if self.exists():  # another process seeded it meanwhile
                return None
            self.save(pair)
        _LOG.info("token store %s created from config.json (it wins from now on)", self.path)
        return pair

    def leftover_temp_files(self) -> list[Path]:
        """`.tokens.json.*.tmp` files a killed write left behind (regular files only)."""
        found = []
        prefix = f".{self.path.name}."
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return []
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
        return sorted(found)

    def recover_leftovers(self) -> TokenPair | None:
        """At start: adopt a complete, newer pair a kill left in a temp file; remove the rest.

        A SIGKILL between writing the temp file and renaming it can leave the only copy of a
        freshly rotated refresh token there (the old one is then already spent). Newer means a
        later expiry, then a later issue time, than the store's pair; anything that does not
        parse as a complete pair is just removed. Returns the adopted pair, or None.
        """
        with self.lock():
            leftovers = self.leftover_temp_files()
            if not leftovers:
                return None
            try:
                current = self.load()
            except TokenError:
                current = None  # a corrupt store loses to any complete pair
            best: TokenPair | None = None
            for tmp in leftovers:
                try:
                    pair = TokenPair.from_json(json.loads(tmp.read_bytes()))
                except (OSError, ValueError, RecursionError):
                    continue
                rival = best or current
                if rival is None or (pair.expires_at, pair.issued_at) > (
                    rival.expires_at,
                    rival.issued_at,
                ):
                    best = pair
            if best is not None:
                self.save(best)
                _LOG.warning(
                    "token store %s: adopted a newer token pair that an interrupted save left "
                    "behind (the daemon was killed while saving rotated tokens)",
                    self.path,
                )
            removed = 0
            for tmp in leftovers:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
            if removed:
                _LOG.info("token store %s: removed %d leftover temp file(s)", self.path, removed)
            return best

    def _open_lock(self) -> int:
        return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Blocking inter-process lock (flock on `<store>.lock`), for the CLI commands."""
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def alock(self, wait_secs: float = LOCK_TIMEOUT_SECS) -> AsyncIterator[None]:
        """The same lock for the event loop: non-blocking attempts, never a blocked loop."""
        fd = self._open_lock()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_secs
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() >= deadline:
                        raise TokenEndpointError(
                            f"token store lock {self.lock_path} held by another process for {wait_secs:g} s"
                        ) from None
                    await asyncio.sleep(LOCK_POLL_SECS)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- the manager ---------------------------------------------------------------------------


class TokenManager:
    """Hands out valid access tokens and keeps the refresh-token chain alive (a TokenSource)."""

    def __init__(
        self,
        store: TokenStore,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str | None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store_poll_secs: float = STORE_POLL_SECS,
    ) -> None:
        self._store = store
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._clock = clock
        self._sleep = sleep
        self._poll = store_poll_secs
        self._lock = asyncio.Lock()
        self._pair: TokenPair | None = None
        self._sig: tuple[int, int] | None = None
        self._loaded = False
        self._state: State = "missing"
        self._dead_refresh: str | None = None  # fingerprint of the rejected refresh token
        self._reauth_reason = ""
        self._auth_lost_sent = False
        self._last_refresh_at: float | None = None
        self._last_failure_at: float | None = None
        self._queue: asyncio.Queue[Event] | None = None
        # Every request to the token endpoint goes through this: 1 s doubling to 60 s.
        self.policy = RetryPolicy(
            "Tesla token refresh",
            base=RETRY_MIN_SECS,
            cap=RETRY_MAX_SECS,
            logger=_LOG,
            clock=clock,
            wall=clock,
        )

    def __repr__(self) -> str:
        return f"TokenManager(store={self._store!r}, state={self._state!r})"

    @property
    def state(self) -> State:
        """ok, refreshing, reauth_required or missing."""
        return self._state

    # -- store synchronisation --

    def _adopt(self, pair: TokenPair | None, sig: tuple[int, int] | None) -> None:
        """Take `pair` (just read from the store) as current, leaving reauth if it is new."""
        first = not self._loaded
        self._loaded = True
        self._sig = sig
        if pair is None:
            if self._pair is None and self._state != "reauth_required":
                self._state = "missing"
            return
        self._pair = pair
        stuck = self._state in ("missing", "reauth_required")
        if stuck and fingerprint(pair.refresh_token) != self._dead_refresh:
            if self._state == "reauth_required":
                _LOG.info("new Tesla tokens found in %s: authorised again", self._store.path)
            self._state = "ok"
            self._dead_refresh = None
            self._auth_lost_sent = False
            if not first:
                self._emit(TokenRefreshed(at=self._clock()))

    def _sync_from_store(self) -> TokenPair | None:
        """Reload the store if it changed on disk (another process, or first use)."""
        sig = self._store.signature()
        if self._loaded and sig == self._sig:
            return self._pair
        try:
            pair = self._store.load()
        except TokenError as err:
            _LOG.error("%s; keeping the tokens held in memory", err)
            self._loaded = True
            self._sig = sig
            return self._pair
        self._adopt(pair, sig)
        return self._pair

    def _emit(self, event: Event) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:  # the daemon's queue coalesces; a plain one must not kill us
            _LOG.warning("event queue full: %s not delivered", type(event).__name__)

    def _mark_reauth(self, pair: TokenPair, err: LoginRequired) -> None:
        """Enter reauth_required: ONE clear log line and one AuthLost per episode."""
        self._dead_refresh = fingerprint(pair.refresh_token)
        self._reauth_reason = str(err)
        if self._state != "reauth_required":
            self._state = "reauth_required"
            _LOG.error(
                "Tesla refresh token no longer accepted (%s): %s. The daemon keeps running "
                "(meter and fail-safe) and picks up the new tokens without a restart",
                err,
                FIX_REAUTH,
            )
        if not self._auth_lost_sent and self._queue is not None:
            self._auth_lost_sent = True
            self._emit(AuthLost(at=self._clock(), reason=str(err)))

    def _missing_error(self) -> LoginRequired:
        return LoginRequired(f"no Tesla tokens in {self._store.path}: {FIX_REAUTH}")

    # -- public API --

    def refresh_due_at(self) -> float:
        """When the current access token should be refreshed (now if there is none)."""
        pair = self._sync_from_store()
        return pair.refresh_due_at if pair is not None else self._clock()

    async def access_token(self) -> str:
        """A valid access token; refreshes first when past the refresh point."""
        pair = self._sync_from_store()
        if pair is None:
            raise self._missing_error()
        now = self._clock()
        if now < pair.refresh_due_at:
            return pair.access_token
        still_valid = now < pair.expires_at
        if self._state == "reauth_required":
            if still_valid:
                return pair.access_token  # good for a while yet; the owner has been told
            raise LoginRequired(f"Tesla access token expired and {self._reauth_reason}")
        if still_valid and self.policy.failing:
            return pair.access_token  # the refresh task retries; do not stall API calls
        try:
            pair = await self.refresh()
        except (TokenEndpointError, LoginRequired):
            if self._clock() < pair.expires_at:
                return pair.access_token  # the policy logged the failure once
            raise
        return pair.access_token

    async def handle_unauthorized(self, rejected: str) -> bool:
        """The API answered 401 to `rejected`: force one refresh unless one already happened."""
        pair = self._sync_from_store()
        if pair is None:
            return False
        if pair.access_token != rejected:
            return True
        if self._state == "reauth_required":
            return False
        age = self._clock() - pair.issued_at
        if age < FORCED_REFRESH_MIN_AGE_SECS:
            _LOG.warning(
                "the Fleet API rejected an access token issued %.0f s ago; a refresh will not "
                "help (check teslaRegion and the token's audience)",
                age,
            )
            return False
        try:
            new = await self.refresh(force=True, rejected=rejected)
        except (LoginRequired, TokenEndpointError) as err:
            _LOG.debug("forced token refresh after a 401 failed: %s", err)
            return False
        return new.access_token != rejected

    async def refresh(self, *, force: bool = False, rejected: str | None = None) -> TokenPair:
        """Refresh once (single flight across tasks and processes); saved before returned.

        After taking both locks the store is re-read: if another task or process refreshed
        meanwhile (the pair is no longer due, or no longer the `rejected` one) that pair is
        returned without a request.
        """
        async with self._lock, self._store.alock():
            sig = self._store.signature()
            try:
                stored = self._store.load()
            except TokenError as err:
                _LOG.error("%s; refreshing with the tokens held in memory", err)
                stored = None
            if stored is not None:
                self._adopt(stored, sig)
            elif self._pair is not None:
                _LOG.warning("token store %s unreadable or gone: rewriting it", self._store.path)
            pair = self._pair
            if pair is None:
                self._loaded, self._sig, self._state = True, sig, "missing"
                raise self._missing_error()
            if rejected is not None and pair.access_token != rejected:
                return pair  # someone already replaced the rejected token
            if not force and rejected is None and self._clock() < pair.refresh_due_at:
                return pair  # another task or process refreshed meanwhile
            if fingerprint(pair.refresh_token) == self._dead_refresh:
                raise LoginRequired(self._reauth_reason)  # known dead: do not ask again
            wait = self.policy.wait_secs(self._clock())
            if wait > 0:
                # Nobody (a pending command, a 401, the refresh task) asks faster than this.
                # No seconds in the text: it becomes the controller's reason, logged on change.
                paused = TokenEndpointError(
                    "token endpoint not asked again yet after: "
                    f"{self.policy.last_error or 'an earlier failure'}"
                )
                paused.retry_after = wait
                raise paused
            # Shielded: a cancelled caller (daemon shutdown) must not drop a rotated token,
            # and the file lock is held until the new pair is on disk.
            task = asyncio.create_task(self._exchange_and_save(pair))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    with contextlib.suppress(Exception):
                        await task
                raise

    async def _exchange_and_save(self, pair: TokenPair) -> TokenPair:
        """POST the refresh grant and save the new pair before anyone can use it."""
        self._state = "refreshing"
        issued_at = self._clock()
        form = {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}
        if self._client_id:
            form["client_id"] = self._client_id
        # A lost reply (timeout, dropped connection) keeps `pair`: the retry sends the same
        # refresh token, which Tesla keeps valid for 24 h as the most recently used one.
        try:
            reply = await post_token_request(self._session, self._token_url, form)
            new = pair_from_reply(reply, issued_at=issued_at, previous=pair)
        except LoginRequired as err:
            self._mark_reauth(pair, err)
            raise
        except TokenEndpointError as err:
            self._state = "ok"
            self._last_failure_at = self._clock()
            valid_for = pair.expires_at - self._clock()
            tail = (
                f"the access token lasts another {_secs(valid_for)}"
                if valid_for > 0
                else "the access token has expired: Tesla calls wait for the token endpoint"
            )
            err.retry_after = self.policy.failure("transient", f"{err}; {tail}")
            raise
        except BaseException:
            self._state = "ok"
            self._last_failure_at = self._clock()
            raise
        self.policy.success()
        # Durable before use. Synchronous on purpose: an fsync in a worker thread could
        # outlive the file lock if this task were cancelled.
        try:
            self._store.save(new)
        except OSError as err:
            self._state = "ok"
            _LOG.error(
                "cannot write token store %s (%s): the new tokens are lost",
                self._store.path,
                err.strerror,
            )
            raise TokenError(
                f"cannot write token store {self._store.path}: {err.strerror}"
            ) from err
        self._sig = self._store.last_written
        self._pair = new
        self._state = "ok"
        self._dead_refresh = None
        self._auth_lost_sent = False
        self._last_failure_at = None
        self._last_refresh_at = now = self._clock()
        _LOG.info(
            "Tesla tokens refreshed and saved; access token valid for %.0f s, next refresh in %.0f s",
            new.expires_at - now,
            max(0.0, new.refresh_due_at - now),
        )
        self._emit(TokenRefreshed(at=now))
        return new

    def status(self) -> dict[str, Any]:
        """For /status: state, seconds until the access token expires, when it was obtained.

        `last_refresh_at` is this process's last refresh, else when the stored pair was issued.
        """
        pair = self._sync_from_store()
        now = self._clock()
        return {
            "state": self._state,
            "access_expires_in_secs": (
                max(0, int(pair.expires_at - now)) if pair is not None else None
            ),
            "last_refresh_at": (
                iso8601(self._last_refresh_at or pair.issued_at) if pair is not None else None
            ),
        }

    async def run(self, queue: asyncio.Queue[Event]) -> None:
        """The token-refresh task: refresh when due, retry faults, survive lost logins.

        Sleeps are bounded by `store_poll_secs`, so a store rewritten by `auth exchange` or
        `auth refresh` is noticed within that time, also while waiting for a new login.
        """
        self._queue = queue
        missing_logged = False
        try:
            while True:
                pair = self._sync_from_store()
                if self._state == "reauth_required":
                    if not self._auth_lost_sent:
                        self._auth_lost_sent = True
                        self._emit(AuthLost(at=self._clock(), reason=self._reauth_reason))
                    await self._sleep(self._poll)
                    continue
                if pair is None:
                    if not missing_logged:
                        missing_logged = True
                        _LOG.error("%s", self._missing_error())
                    await self._sleep(self._poll)
                    continue
                missing_logged = False
                now = self._clock()
                if now < pair.refresh_due_at:
                    await self._sleep(min(pair.refresh_due_at - now, self._poll))
                    continue
                wait = self.policy.wait_secs(now)
                if wait > 0:
                    await self._sleep(min(wait, self._poll))
                    continue
                try:
                    await self.refresh()
                except LoginRequired:
                    continue  # logged once and AuthLost queued by _mark_reauth
                except TokenEndpointError as err:
                    # Logged once by the policy; the loop sleeps until it allows a new try.
                    await self._sleep(min(max(err.retry_after, MIN_LOOP_SLEEP), self._poll))
                    continue
        finally:
            self._queue = None


# --- `python -m tesla_smart_charger.tokens --refresh-loop STORE URL CLIENT_ID` ---------------


async def _refresh_loop(store_path: Path, token_url: str, client_id: str) -> None:
    """Keep one store refreshed forever (used by the kill test as a stand-in daemon)."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    async with aiohttp.ClientSession() as session:
        manager = TokenManager(
            TokenStore(store_path),
            session,
            token_url=token_url,
            client_id=client_id,
            store_poll_secs=0.2,
        )
        task = asyncio.create_task(manager.run(queue))
        print("ready", flush=True)  # a protocol line for the parent
        try:
            while True:
                event = await queue.get()
                print(type(event).__name__, flush=True)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: list[str] | None = None) -> int:
    """Entry point for the refresh loop."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] != "--refresh-loop":
        print(
            "usage: python -m tesla_smart_charger.tokens --refresh-loop STORE TOKEN_URL CLIENT_ID",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_refresh_loop(Path(args[1]), args[2], args[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
