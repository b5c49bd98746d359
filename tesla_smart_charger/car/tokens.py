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
from tesla_smart_charger.control.events import AuthLost, Event, TokenRefreshed
from tesla_smart_charger.errors import LoginRequired, TokenEndpointError, TokenError
from tesla_smart_charger.logging_setup import register_secret, scrub
from tesla_smart_charger.retry import RetryPolicy, describe_transport_error

if TYPE_CHECKING:
    from tesla_smart_charger.config.settings import Settings

_LOG = logging.getLogger(__name__)

STORE_VERSION: Final = 1
# Refresh at this share of the access token's lifetime (the "about 80 %").
REFRESH_AT_FRACTION: Final = 0.8
# Tesla's access tokens live 8 h; a stored expiry further ahead than this is not believed.
MAX_ACCESS_LIFETIME_SECS: Final = 86400.0
# A stored issue time this far in the future means the wall clock was stepped since.
CLOCK_SKEW_SECS: Final = 300.0
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


@dataclass(frozen=True, slots=True)
class Timeline:
    """A pair's issue and expiry on the monotonic clock: what every expiry decision uses.

    A wall-clock step (NTP, a dead RTC battery, a manual change) then neither revives an
    expired token nor makes a fresh one look expired.
    """

    issued: float
    expires: float
    distrusted: bool = False  # the stored times were not believed: refresh at once

    @property
    def refresh_due(self) -> float:
        """80 % into the access token's lifetime."""
        return self.issued + REFRESH_AT_FRACTION * max(0.0, self.expires - self.issued)


def timeline_from_reply(pair: TokenPair, *, issued_mono: float) -> Timeline:
    """A pair just obtained: its lifetime counted from the monotonic time of the request."""
    return Timeline(issued_mono, issued_mono + min(pair.lifetime, MAX_ACCESS_LIFETIME_SECS))


def timeline_from_store(pair: TokenPair, *, wall_now: float, mono_now: float) -> Timeline:
    """A stored pair's wall-clock times mapped onto the monotonic clock.

    A time that lies in the future is not believed (the clock was ahead when it was written,
    or is behind now): an issue time later than now, or an expiry further ahead than any
    access token lives, makes the pair expired, so it is refreshed at once.
    """
    age = wall_now - pair.issued_at
    left = pair.expires_at - wall_now
    if age < -CLOCK_SKEW_SECS or left > MAX_ACCESS_LIFETIME_SECS:
        return Timeline(mono_now, mono_now, distrusted=True)
    return Timeline(mono_now - age, mono_now + left)


def _newer(a: TokenPair, b: TokenPair) -> bool:
    """True if `a` was issued after `b` (or is the same pair): the later login wins."""
    if a.refresh_token == b.refresh_token and a.access_token == b.access_token:
        return True
    return (a.issued_at, a.expires_at) > (b.issued_at, b.expires_at)


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
        # A pair seeded or recovered at start that could not be written (read-only folder).
        self.unsaved: TokenPair | None = None

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
            try:
                self.save(pair)
            except OSError as err:
                # A read-only folder: start with the config's tokens in memory.
                _LOG.debug("token store %s: cannot create it: %s", self.path, err)
                self.unsaved = pair
                return pair
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
                try:
                    self.save(best)
                except OSError as err:
                    # The only copy of the newest login: kept in memory until it can be saved.
                    _LOG.debug("token store %s: cannot save the adopted pair: %s", self.path, err)
                    self.unsaved = best
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

    def _open_lock(self) -> int | None:
        """The lock file's descriptor; None when it neither exists nor can be created.

        flock needs no write access: on a read-only store the file left by earlier runs still
        serialises readers. Without any lock file nobody can write the folder either, so
        there is nothing to serialise.
        """
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            try:
                return os.open(self.lock_path, os.O_RDONLY)
            except OSError:
                return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Blocking inter-process lock (flock on `<store>.lock`), for the CLI commands."""
        fd = self._open_lock()
        if fd is None:
            yield
            return
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
        if fd is None:
            yield
            return
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


# --- one daemon per store -----------------------------------------------------------------

# A daemon that finds the lock taken tries again this long before it refuses to start: a CLI
# command that only looks whether a daemon runs holds it for microseconds.
DAEMON_LOCK_GRACE_SECS: Final = 0.5


def _flock_holder(path: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The pid holding a flock on `path`, from the kernel's lock table (Linux); else None."""
    try:
        st = os.stat(path)
        lines = locks.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        if "->" in parts or "FLOCK" not in parts:
            continue  # a waiter, or another kind of lock
        at = parts.index("FLOCK")
        if len(parts) > at + 4 and parts[at + 4] == device and parts[at + 3].isdigit():
            return int(parts[at + 3])
    return None


class StoreInUse(TokenError):
    """Another daemon holds the store's daemon lock: two would send every command twice."""


class DaemonLock:
    """`<store>.daemon.lock`, flock'ed for the daemon's whole life (released when it exits).

    Separate from `<store>.lock`: that one is taken per refresh, by the daemon and the CLI
    alike. The holder's pid is written into the file so the refusal can name it.
    """

    def __init__(self, store_path: Path) -> None:
        self.store = Path(store_path)
        self.path = self.store.with_name(self.store.name + ".daemon.lock")
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"DaemonLock({str(self.path)!r}, held={self._fd is not None})"

    def _open(self) -> tuple[int, bool]:
        """(fd, writable); a read-only store still has a lock file from earlier runs."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), True
        except OSError:
            return os.open(self.path, os.O_RDONLY), False

    def holder(self) -> int | None:
        """The pid of the daemon holding the lock (None if unknown).

        The kernel's own record first (/proc/locks): on a read-only store the pid in the file
        may be an earlier daemon's, as the holder could not write its own.
        """
        pid = _flock_holder(self.path)
        if pid is not None:
            return pid
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _refusal(self) -> StoreInUse:
        pid = self.holder()
        who = f"pid {pid}" if pid is not None else "another process"
        return StoreInUse(
            f"another tesla-smart-charger daemon ({who}) already uses the token store "
            f"{self.store}: it holds {self.path}. Stop it "
            "first: two daemons on one store would send every command twice"
        )

    def acquire(self, *, grace_secs: float = DAEMON_LOCK_GRACE_SECS) -> bool:
        """Take the lock for this process's life; StoreInUse if another daemon has it.

        False (and a warning) when no lock file can be opened at all (a read-only folder
        without one): the daemon still starts, it just cannot notice a second daemon.
        """
        try:
            fd, writable = self._open()
        except OSError as err:
            _LOG.warning(
                "cannot open %s (%s): a second daemon on this token store would not be noticed",
                self.path,
                err.strerror,
            )
            return False
        deadline = time.monotonic() + grace_secs
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._refusal() from None
                time.sleep(LOCK_POLL_SECS)
        if writable:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the next daemon start (the kernel also releases it if we die)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def running_daemon(self) -> int | None:
        """For CLI commands: the pid of a daemon holding the lock (0 if unknown), else None."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self.holder()
            return pid if pid is not None else 0
        finally:
            os.close(fd)  # closing also drops our shared lock at once
        return None


# --- the manager ---------------------------------------------------------------------------


class TokenManager:
    """Hands out valid access tokens and keeps the refresh-token chain alive (a TokenSource).

    Expiry and backoff are decided on the monotonic `clock`; the wall clock `wall` is used only
    for the times written to the store (and shown on /status). A store that cannot be written
    does not stop anything: the newest pair is held in memory and its save retried.
    """

    def __init__(
        self,
        store: TokenStore,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store_poll_secs: float = STORE_POLL_SECS,
    ) -> None:
        self._store = store
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._poll = store_poll_secs
        self._lock = asyncio.Lock()
        self._pair: TokenPair | None = None
        self._times: Timeline | None = None  # the pair's issue and expiry, monotonic
        self._sig: tuple[int, int] | None = None
        self._loaded = False
        self._state: State = "missing"
        self._dead_refresh: str | None = None  # fingerprint of the rejected refresh token
        self._reauth_reason = ""
        self._auth_lost_sent = False
        self._last_refresh_at: float | None = None  # wall clock, for /status
        self._unsaved = False  # the pair in memory is newer than the store
        self._store_cause = "not tried yet"  # why the last write failed, in the OS's words
        self._queue: asyncio.Queue[Event] | None = None
        # Every request to the token endpoint goes through this: 1 s doubling to 60 s.
        self.policy = RetryPolicy(
            "Tesla token refresh",
            base=RETRY_MIN_SECS,
            cap=RETRY_MAX_SECS,
            logger=_LOG,
            clock=clock,
            wall=wall,
        )
        # The token store is a dependency like the others: its writes back off the same way.
        self.store_policy = RetryPolicy(
            "Saving the Tesla tokens",
            base=RETRY_MIN_SECS,
            cap=RETRY_MAX_SECS,
            logger=_LOG,
            clock=clock,
            wall=wall,
            back_words=f"{store.path} is writable again and holds the newest tokens",
        )

    def __repr__(self) -> str:
        return f"TokenManager(store={self._store!r}, state={self._state!r})"

    @property
    def state(self) -> State:
        """ok, refreshing, reauth_required or missing."""
        return self._state

    @property
    def unsaved(self) -> bool:
        """True while the newest tokens live only in memory (the store cannot be written)."""
        return self._unsaved

    def store_problem(self) -> str | None:
        """In words, for /health and /status: why a restart now would lose the login."""
        if not self._unsaved:
            return None
        return (
            f"the newest Tesla tokens cannot be saved (cannot write token store "
            f"{self._store.path}: {self._store_cause}): they are kept in memory and the save is "
            "retried; a restart before it works would lose the login"
        )

    # -- store synchronisation --

    def _take(self, pair: TokenPair, times: Timeline) -> None:
        self._pair = pair
        self._times = times
        _mask_in_logs(pair)

    def _from_store(self, pair: TokenPair) -> Timeline:
        """The stored pair's times, unless it is the pair we hold (our clock knows better)."""
        current = self._pair
        if (
            current is not None
            and self._times is not None
            and current.access_token == pair.access_token
            and current.refresh_token == pair.refresh_token
        ):
            return self._times
        times = timeline_from_store(pair, wall_now=self._wall(), mono_now=self._clock())
        if times.distrusted:
            _LOG.warning(
                "token store %s: the access token's times lie in the future (the clock was "
                "wrong when they were written, or is now): its expiry is not believed and the "
                "tokens are refreshed now",
                self._store.path,
            )
        return times

    def _adopt(self, pair: TokenPair | None, sig: tuple[int, int] | None) -> None:
        """Take `pair` (just read from the store) as current, leaving reauth if it is new."""
        first = not self._loaded
        self._loaded = True
        self._sig = sig
        if pair is None:
            if self._pair is None and self._state != "reauth_required":
                self._state = "missing"
            return
        if self._unsaved and self._pair is not None:
            if not _newer(pair, self._pair):
                return  # the store still holds an older pair: ours is the one to keep
            # Someone wrote a newer pair (`auth exchange`): the store works again.
            self._unsaved = False
            self.store_policy.success()
        self._take(pair, self._from_store(pair))
        stuck = self._state in ("missing", "reauth_required")
        if stuck and fingerprint(pair.refresh_token) != self._dead_refresh:
            if self._state == "reauth_required":
                _LOG.info("new Tesla tokens found in %s: authorised again", self._store.path)
            self._state = "ok"
            self._dead_refresh = None
            self._auth_lost_sent = False
            if not first:
                self._emit(TokenRefreshed(at=self._clock()))

    def hold_unsaved(self, pair: TokenPair) -> None:
        """Start with a pair that could not be saved (seeded or recovered on a read-only store)."""
        self._loaded = True
        self._sig = self._store.signature()
        self._take(pair, self._from_store(pair))
        if self._state == "missing":
            self._state = "ok"
        self._save(pair)  # one try now: the condition is then known (and said) from the start

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

    def _save(self, pair: TokenPair) -> bool:
        """Write `pair`; on failure keep it in memory and let the store's policy retry.

        Synchronous on purpose: an fsync in a worker thread could outlive the file lock if
        the task were cancelled.
        """
        try:
            self._store.save(pair)
        except OSError as err:
            self._unsaved = True
            self._store_cause = err.strerror or str(err)
            self.store_policy.failure(
                "transient",
                f"cannot write token store {self._store.path}: {err.strerror or err}; "
                "the newest tokens are kept in memory (a restart now would lose the login)",
            )
            return False
        self._sig = self._store.last_written
        self._unsaved = False
        self.store_policy.success()
        return True

    async def save_pending(self) -> bool:
        """Retry writing the pair held only in memory; True once the store has it."""
        if not self._unsaved or self._pair is None:
            return not self._unsaved
        async with self._lock, self._store.alock():
            self._sync_from_store()  # a newer pair written meanwhile wins (and ends it)
            if not self._unsaved or self._pair is None:
                return True
            return self._save(self._pair)

    def save_at_exit(self) -> None:
        """Last try before the process ends; one clear line if the newest tokens stay unsaved."""
        if not self._unsaved or self._pair is None:
            return
        # No file lock: a refresh task that did not stop in time may still hold it in this
        # process, and a blocking flock on a second descriptor would then never return.
        self._sync_from_store()  # a newer pair written meanwhile (`auth exchange`) wins
        if self._unsaved and self._pair is not None:
            self._save(self._pair)
        if self._unsaved:
            _LOG.error(
                "stopping with the newest Tesla tokens not saved to %s (%s): the login may be "
                "lost; if the next start says login_required, %s",
                self._store.path,
                self._store_cause,
                FIX_REAUTH,
            )

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
        """When (monotonic) the current access token should be refreshed (now if there is none)."""
        self._sync_from_store()
        return self._times.refresh_due if self._times is not None else self._clock()

    async def access_token(self) -> str:
        """A valid access token; refreshes first when past the refresh point."""
        pair = self._sync_from_store()
        times = self._times
        if pair is None or times is None:
            raise self._missing_error()
        now = self._clock()
        if now < times.refresh_due:
            return pair.access_token
        still_valid = now < times.expires
        if self._state == "reauth_required":
            if still_valid:
                return pair.access_token  # good for a while yet; the owner has been told
            raise LoginRequired(f"Tesla access token expired and {self._reauth_reason}")
        if still_valid and self.policy.failing:
            return pair.access_token  # the refresh task retries; do not stall API calls
        try:
            pair = await self.refresh()
        except (TokenEndpointError, LoginRequired):
            if self._clock() < times.expires:
                return pair.access_token  # the policy logged the failure once
            raise
        return pair.access_token

    async def handle_unauthorized(self, rejected: str) -> bool:
        """The API answered 401 to `rejected`: force one refresh unless one already happened."""
        pair = self._sync_from_store()
        if pair is None or self._times is None:
            return False
        if pair.access_token != rejected:
            return True
        if self._state == "reauth_required":
            return False
        age = self._clock() - self._times.issued
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
        returned without a request. A pair held only in memory (the store cannot be written)
        is newer than the store's and is the one refreshed.
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
            elif self._pair is not None and not self._unsaved:
                _LOG.warning("token store %s unreadable or gone: rewriting it", self._store.path)
            pair = self._pair
            times = self._times
            if pair is None or times is None:
                self._loaded, self._sig, self._state = True, sig, "missing"
                raise self._missing_error()
            if rejected is not None and pair.access_token != rejected:
                return pair  # someone already replaced the rejected token
            if not force and rejected is None and self._clock() < times.refresh_due:
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
            task = asyncio.create_task(self._exchange_and_save(pair, times))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    with contextlib.suppress(Exception):
                        await task
                raise

    async def _exchange_and_save(self, pair: TokenPair, times: Timeline) -> TokenPair:
        """POST the refresh grant and save the new pair before anyone can use it.

        If the store cannot be written the new pair is used all the same: the old refresh
        token is spent, so memory is the only place the login still lives.
        """
        self._state = "refreshing"
        issued_mono = self._clock()
        issued_at = self._wall()
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
            valid_for = times.expires - self._clock()
            tail = (
                f"the access token lasts another {_secs(valid_for)}"
                if valid_for > 0
                else "the access token has expired: Tesla calls wait for the token endpoint"
            )
            err.retry_after = self.policy.failure("transient", f"{err}; {tail}")
            raise
        except BaseException:
            self._state = "ok"
            raise
        self.policy.success()
        self._take(new, timeline_from_reply(new, issued_mono=issued_mono))
        self._save(new)
        self._state = "ok"
        self._dead_refresh = None
        self._auth_lost_sent = False
        self._last_refresh_at = issued_at
        now = self._clock()
        _LOG.info(
            "Tesla tokens refreshed and %s; access token valid for %.0f s, next refresh in %.0f s",
            "saved" if not self._unsaved else "held in memory",
            self._times_left(now),
            max(0.0, self._times.refresh_due - now) if self._times else 0.0,
        )
        self._emit(TokenRefreshed(at=now))
        return new

    def _times_left(self, now: float) -> float:
        return self._times.expires - now if self._times is not None else 0.0

    def status(self) -> dict[str, Any]:
        """For /status: state, seconds until the access token expires, when it was obtained.

        `last_refresh_at` is this process's last refresh, else when the stored pair was issued;
        `saved` is false while the newest tokens are held only in memory.
        """
        pair = self._sync_from_store()
        now = self._clock()
        out: dict[str, Any] = {
            "state": self._state,
            "access_expires_in_secs": (
                max(0, int(self._times_left(now))) if pair is not None else None
            ),
            "last_refresh_at": (
                iso8601(self._last_refresh_at or pair.issued_at) if pair is not None else None
            ),
        }
        if self._unsaved:
            out["saved"] = False
            out["store_problem"] = self.store_problem()
        return out

    async def run(self, queue: asyncio.Queue[Event]) -> None:
        """The token-refresh task: refresh when due, retry faults, survive lost logins.

        Sleeps are bounded by `store_poll_secs`, so a store rewritten by `auth exchange` or
        `auth refresh` is noticed within that time, also while waiting for a new login. A pair
        held only in memory is written again as soon as the store's policy allows.
        """
        self._queue = queue
        missing_logged = False
        try:
            while True:
                if self._unsaved and self.store_policy.allowed(self._clock()):
                    # A lock held by another process: the next turn tries again.
                    with contextlib.suppress(TokenEndpointError):
                        await self.save_pending()
                pair = self._sync_from_store()
                times = self._times
                if self._state == "reauth_required":
                    if not self._auth_lost_sent:
                        self._auth_lost_sent = True
                        self._emit(AuthLost(at=self._clock(), reason=self._reauth_reason))
                    await self._sleep(self._pause(self._poll))
                    continue
                if pair is None or times is None:
                    if not missing_logged:
                        missing_logged = True
                        _LOG.error("%s", self._missing_error())
                    await self._sleep(self._poll)
                    continue
                missing_logged = False
                now = self._clock()
                if now < times.refresh_due:
                    await self._sleep(self._pause(min(times.refresh_due - now, self._poll)))
                    continue
                wait = self.policy.wait_secs(now)
                if wait > 0:
                    await self._sleep(self._pause(min(wait, self._poll)))
                    continue
                try:
                    await self.refresh()
                except LoginRequired:
                    continue  # logged once and AuthLost queued by _mark_reauth
                except TokenEndpointError as err:
                    # Logged once by the policy; the loop sleeps until it allows a new try.
                    await self._sleep(
                        self._pause(min(max(err.retry_after, MIN_LOOP_SLEEP), self._poll))
                    )
                    continue
        finally:
            self._queue = None

    def _pause(self, secs: float) -> float:
        """A sleep no longer than the wait before the next try at saving an unsaved pair."""
        if not self._unsaved:
            return secs
        return max(MIN_LOOP_SLEEP, min(secs, self.store_policy.wait_secs(self._clock())))
