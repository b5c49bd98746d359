"""One retry policy per outbound dependency: backoff, failure classes, log-once, health.

Every outbound path (the car link through tesla-http-proxy, the token endpoint, the meter,
later a BLE bridge, a relay or MQTT) asks its `RetryPolicy` whether it may call now and tells
it how the call ended. The policy is the single place that decides how fast a failing
dependency is asked again, so no caller (a pending overload, a tick, a refresh) can hammer it:

- transient failures (5xx, timeouts, refused connections) back off exponentially with jitter,
  from `base` doubling to `cap`, reset by the first success;
- faults that will not fix themselves (4xx other than 401/408/429, a body we cannot parse) go
  straight to the cap and are counted;
- a 429 waits for Retry-After.

It also keeps the "log a condition once" bookkeeping: one line when a condition starts (cause in
words), at most one reminder every `remind_secs` meanwhile, and one line on recovery saying how
long it lasted and how many attempts failed. The same bookkeeping is the dependency's health
for /health, /status and /metrics. The clock and the random source are injected.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp

from tesla_smart_charger.logging_setup import scrub

FailureKind = Literal["transient", "fault", "rate_limited"]
HealthState = Literal["ok", "degraded", "down"]

REMIND_SECS: Final = 600.0
# Jitter only ever lengthens a wait (never below the nominal delay), so a budget holds.
JITTER: Final = 0.2
# A dependency failing for this many attempts in a row (or with a fault) counts as down.
DOWN_AFTER: Final = 2


@dataclass(frozen=True, slots=True)
class Health:
    """One dependency's health for /status `dependencies` and /metrics."""

    state: HealthState
    since: float | None  # wall clock of the last state change
    last_error: str | None
    failures: int
    retry_in: float | None = None  # seconds until the next attempt may go (a retry policy's)

    def as_dict(self) -> dict[str, Any]:
        """`{state, since, last_error, failures[, retry_in_secs]}` with `since` as ISO 8601."""
        out: dict[str, Any] = {
            "state": self.state,
            "since": (
                datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
                if self.since is not None
                else None
            ),
            "last_error": self.last_error,
            "failures": self.failures,
        }
        if self.retry_in is not None:
            out["retry_in_secs"] = round(self.retry_in, 1)
        return out


class RetryPolicy:
    """Backoff, classification bookkeeping and log-once for one dependency."""

    def __init__(
        self,
        name: str,
        *,
        base: float = 1.0,
        cap: float = 60.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        remind_secs: float = REMIND_SECS,
        backoff: bool = True,
        back_words: str = "works again",
        say: bool = True,
    ) -> None:
        self.name = name
        self._base = base
        self._cap = cap
        self._log = logger or logging.getLogger(__name__)
        self._clock = clock
        self._wall = wall
        self._rand = rand
        self._remind = remind_secs
        self._backoff = backoff  # False: keep the caller's rhythm (meter), only log and report
        self._back_words = back_words
        # False: the owner says the condition in its own words (the grid limit's input);
        # the start, reminders and recovery then go to the debug log only.
        self._say = say
        self._failures = 0
        self._faults = 0
        self._next_at = 0.0
        self._failing_since: float | None = None  # monotonic
        self._since_wall: float | None = None
        self._last_error: str | None = None
        self._last_logged_at: float | None = None
        self._last_kind: FailureKind | None = None

    def __repr__(self) -> str:
        return f"RetryPolicy({self.name!r}, failures={self._failures})"

    # --- asking -----------------------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """True from the first failure until the next success."""
        return self._failures > 0

    @property
    def failures(self) -> int:
        """Failed attempts since the last success."""
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The last failure, in words (scrubbed of secrets)."""
        return self._last_error

    @property
    def last_kind(self) -> FailureKind | None:
        """How the last attempt failed (None after a success)."""
        return self._last_kind

    def wait_secs(self, now: float | None = None) -> float:
        """Seconds until a call is allowed; 0 when it is allowed now."""
        current = self._clock() if now is None else now
        return max(0.0, self._next_at - current)

    def allowed(self, now: float | None = None) -> bool:
        """May the dependency be called now?"""
        return self.wait_secs(now) <= 0.0

    def allow_now(self) -> None:
        """A cheap probe says the dependency is reachable again: the next attempt may go now.

        The failure count and the log-once state stay until a real call succeeds; a rate
        limit is never cut short.
        """
        if self._last_kind != "rate_limited":
            self._next_at = min(self._next_at, self._clock())

    # --- telling ----------------------------------------------------------------------------

    def success(self) -> None:
        """The call worked: reset the backoff; log the recovery once if there was a problem."""
        if self._failures:
            now = self._clock()
            lasted = now - (self._failing_since if self._failing_since is not None else now)
            self._log.log(
                logging.INFO if self._say else logging.DEBUG,
                "%s: %s after %s (%d failed attempt%s)",
                self.name,
                self._back_words,
                _duration(lasted),
                self._failures,
                "" if self._failures == 1 else "s",
            )
            self._since_wall = self._wall()
        self._failures = 0
        self._faults = 0
        self._next_at = 0.0
        self._failing_since = None
        self._last_error = None
        self._last_kind = None
        self._last_logged_at = None

    def failure(self, kind: FailureKind, error: str, *, retry_after: float | None = None) -> float:
        """The call failed: schedule the next attempt, log per the once rule; the wait in s."""
        now = self._clock()
        error = scrub(error)
        self._failures += 1
        if kind == "fault":
            self._faults += 1
        if self._failing_since is None:
            self._failing_since = now
            self._since_wall = self._wall()
        if kind == "rate_limited":
            delay = max(retry_after or 0.0, self._base)
        elif kind == "fault":
            delay = self._cap
        else:
            delay = min(self._cap, self._base * 2 ** (self._failures - 1))
        if kind != "rate_limited":
            delay = min(self._cap, delay * (1 + JITTER * self._rand()))
        if self._backoff or kind == "rate_limited":
            self._next_at = now + delay
        else:
            delay = 0.0
        self._note(kind, error, now, delay)
        self._last_error = error
        self._last_kind = kind
        return delay

    def _note(self, kind: FailureKind, error: str, now: float, delay: float) -> None:
        """Log-once: the start, a reminder every `remind_secs`, a changed cause."""
        first = self._last_logged_at is None
        # A transient condition turning into a fault is news; a reworded error is not.
        worse = kind == "fault" and self._last_kind not in (None, "fault")
        due = self._last_logged_at is not None and now - self._last_logged_at >= self._remind
        if not (first or due or worse):
            self._log.debug("%s: %s (attempt %d failed)", self.name, error, self._failures)
            return
        self._last_logged_at = now
        level = logging.ERROR if kind == "fault" else logging.WARNING
        if not self._say:
            level = logging.DEBUG
        if first:
            then = (
                f"trying again in {_duration(delay)}"
                if delay > 0
                else "trying again at the usual rhythm"
            )
            if kind == "fault":
                then = f"this will not fix itself; {then}"
            self._log.log(level, "%s: %s; %s", self.name, error, then)
        else:
            lasted = now - (self._failing_since if self._failing_since is not None else now)
            self._log.log(
                level,
                "%s still failing after %s (%d failed attempts): %s",
                self.name,
                _duration(lasted),
                self._failures,
                error,
            )

    # --- health -----------------------------------------------------------------------------

    def state_now(self) -> HealthState:
        """ok, degraded (one transient failure or a rate limit) or down."""
        if not self._failures:
            return "ok"
        if self._faults or (self._failures >= DOWN_AFTER and self._last_kind != "rate_limited"):
            return "down"
        return "degraded"

    def health(self) -> Health:
        """State, since when, last error in words, failed attempts, when the next may go."""
        return Health(
            self.state_now(),
            self._since_wall,
            self._last_error,
            self._failures,
            self.wait_secs(),
        )


def _duration(secs: float) -> str:
    """`45 s`, `3 min`, `2.5 h`: what a home owner reads in a log line."""
    if secs < 90:
        return f"{secs:.0f} s"
    if secs < 5400:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"


def classify_status(status: int) -> FailureKind | None:
    """The failure class of an HTTP status; None for one the caller handles itself (401, 2xx).

    5xx and 408 are transient; 429 is a rate limit; any other 4xx is a fault that will not fix
    itself by retrying.
    """
    if status == 429:
        return "rate_limited"
    if status >= 500 or status == 408:
        return "transient"
    if 400 <= status < 500 and status != 401:
        return "fault"
    return None


def describe_transport_error(err: BaseException, *, host: str, service: str = "") -> str:
    """An aiohttp/OSError/timeout in words a home owner understands, naming the host.

    `service` is what normally listens there (e.g. "tesla-http-proxy"), for the hint.
    """
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate of {host} is not trusted (set teslaHttpProxyCaFile)"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if (dns_error is not None and isinstance(err, dns_error)) or _is_dns(err):
        return f"cannot resolve the host name {host.rsplit(':', 1)[0]}"
    if isinstance(err, aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS handshake with {host} failed: {scrub(str(err))[:120]}"
    if isinstance(err, aiohttp.ClientConnectorError):
        hint = f" (is {service} running?)" if service else ""
        return f"nothing listens on {host}{hint}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return f"{host} closed the connection without answering"
    if isinstance(err, TimeoutError | aiohttp.ServerTimeoutError):
        return f"{host} did not answer in time"
    if isinstance(err, aiohttp.ClientPayloadError):
        return f"the reply from {host} was cut off"
    if isinstance(err, aiohttp.ClientResponseError):
        return f"{host} sent a reply we cannot read (HTTP {err.status})"
    if isinstance(err, ConnectionRefusedError):
        hint = f" (is {service} running?)" if service else ""
        return f"nothing listens on {host}{hint}"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot reach {host}: {err.strerror}"
    return f"cannot reach {host}: {scrub(str(err))[:120] or type(err).__name__}"


def _is_dns(err: BaseException) -> bool:
    cause = getattr(err, "os_error", None) or err.__cause__
    return isinstance(cause, socket.gaierror)
