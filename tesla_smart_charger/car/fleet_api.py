"""Tesla Fleet API client, spoken through tesla-http-proxy or signed by us (`signing`).

With a `FleetSigner`, `base_url` is the Fleet API itself: reads go there with the token, and
commands are signed here and posted to `signed_command` through the same call path (one
retry policy, one token source, one billed request per command).

Functional core: `parse_*`, `interpret_reply` and `parse_retry_after` turn wire replies into
models and errors without I/O. Imperative shell: `TeslaClient` sends requests on the shared
`aiohttp.ClientSession`, counts every call for Tesla's billing, honours 429 back-offs and
retries transport faults with tenacity. No code path here calls `wake_up`: waking costs money,
drains the 12 V battery and is never needed to throttle a car that is already charging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from tesla_smart_charger import const
from tesla_smart_charger.car.signing.cache import CACHE_FILE, SessionCache
from tesla_smart_charger.car.signing.client import FleetSigner
from tesla_smart_charger.car.signing.crypto import public_bytes
from tesla_smart_charger.car.signing.messages import (
    charge_start_action,
    charge_stop_action,
    set_charging_amps_action,
)
from tesla_smart_charger.config.keys import SigningKeyError, load_private_key
from tesla_smart_charger.control.interfaces import TokenSource
from tesla_smart_charger.control.models import ChargeState, VehicleSnapshot, VehicleState
from tesla_smart_charger.errors import (
    CommandRefused,
    CommandSigningError,
    ConfigError,
    RateLimited,
    TeslaAuthError,
    TeslaError,
    TeslaProtocolError,
    TeslaTransientError,
    VehicleAsleep,
)
from tesla_smart_charger.logging_setup import scrub
from tesla_smart_charger.retry import RetryPolicy, describe_transport_error

if TYPE_CHECKING:
    from tesla_smart_charger.config.settings import LoadedConfig

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

Category = Literal["data", "command", "wake"]
# "handshake": a signed-command session handshake that worked (billed as a command).
Outcome = Literal[
    "ok", "asleep", "rate_limited", "refused", "auth", "error", "transient", "handshake"
]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)

_DAY: Final = 24 * 3600.0
# Jittered and bounded; tests pass `retry_wait=wait_none()` to the client instead.
DEFAULT_RETRY_WAIT: Final[wait_base] = wait_random_exponential(
    multiplier=0.5, max=const.TESLA_RETRY_MAX_WAIT
)
# The app never sets less than this; the car accepts lower amps only on a repeated command.
_MIN_SINGLE_SEND_AMPS: Final = 5
_VEHICLES_PER_PAGE: Final = 100
_MAX_VEHICLE_PAGES: Final = 20  # bounds the VIN lookup; nobody owns 2000 cars
_VIN_LENGTH: Final = 17
_MAX_ERROR_TEXT: Final = 200


# --- call accounting ------------------------------------------------------------------------


class ApiCallCounter:
    """Counts every Fleet API call by billing category and outcome, and estimates cost.

    Tesla bills every response below 500 (408, 429 and refusals included), so the cost
    estimate follows `billed`, not success.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calls: Counter[str] = Counter()
        self._billed: Counter[str] = Counter()
        self._outcomes: dict[str, Counter[str]] = {c: Counter() for c in CATEGORIES}
        self._recent: deque[tuple[float, str]] = deque()  # billed calls, oldest first

    def record(self, category: Category, outcome: str, *, billed: bool) -> None:
        """Count one HTTP request that reached the wire (or failed trying)."""
        if category not in self._outcomes:
            raise ValueError(f"unknown API call category {category!r}")
        self._calls[category] += 1
        self._outcomes[category][outcome] += 1
        if billed:
            self._billed[category] += 1
            self._recent.append((self._clock(), category))
            self._prune()

    def counts(self) -> dict[str, int]:
        """Billed and unbilled calls per category; every category is present."""
        return {c: self._calls[c] for c in CATEGORIES}

    def by_outcome(self) -> dict[str, dict[str, int]]:
        """Category -> outcome -> number of calls."""
        return {c: dict(sorted(self._outcomes[c].items())) for c in CATEGORIES}

    def cost_usd(self) -> float:
        """Estimated cost of all billed calls so far."""
        return float(sum(self._billed[c] * const.PRICE_PER_CALL[c] for c in CATEGORIES))

    def cost_last_24h_usd(self) -> float:
        """Estimated cost of the billed calls of the last 24 hours (wall clock)."""
        self._prune()
        return float(sum(const.PRICE_PER_CALL[c] for _, c in self._recent))

    def as_dict(self) -> dict[str, Any]:
        """The `api_calls` object of /status."""
        return {
            **self.counts(),
            "by_outcome": self.by_outcome(),
            "cost_usd": round(self.cost_usd(), 6),
            "cost_last_24h_usd": round(self.cost_last_24h_usd(), 6),
        }

    def _prune(self) -> None:
        horizon = self._clock() - _DAY
        while self._recent and self._recent[0][0] <= horizon:
            self._recent.popleft()


# --- tokens and TLS -------------------------------------------------------------------------


class StaticTokenSource:
    """The configured `teslaAccessToken`, as is: no refresh (the token store replaces this)."""

    def __init__(self, token: SecretStr | None) -> None:
        self._token = token

    def __repr__(self) -> str:
        return f"StaticTokenSource(token={'set' if self._token else 'unset'})"

    async def access_token(self) -> str:
        """The configured token; there is nothing to refresh it with."""
        value = self._token.get_secret_value() if self._token is not None else ""
        if not value:
            raise TeslaAuthError("no access token configured (teslaAccessToken)")
        return value

    async def handle_unauthorized(self, rejected: str) -> bool:
        """A static token cannot be refreshed: the 401 stands."""
        return False


def certificate_fix_hint(error: BaseException) -> str:
    """What to change when the proxy's certificate is refused: the name, or the trust."""
    text = str(error)
    if getattr(error, "verify_code", None) in (62, 64) or "mismatch" in text:
        return (
            "the certificate is not issued for the host in teslaHttpProxy: use a name from its "
            "subjectAltName there, or re-issue it with that name (e.g. SAN DNS:tesla-http-proxy)"
        )
    return "set teslaHttpProxyCaFile to the certificate (or CA) the proxy serves"


def ssl_context_for(proxy_url: str, ca_file: Path | None) -> ssl.SSLContext | None:
    """TLS settings for the proxy: None for http, a verifying context for https.

    The proxy only speaks HTTPS, usually with a self-signed certificate: `ca_file`
    (teslaHttpProxyCaFile) adds trust for it. Verification is never turned off.
    """
    scheme = urlsplit(proxy_url).scheme.lower()
    if scheme == "http":
        return None
    if scheme != "https":
        raise ConfigError([f"teslaHttpProxy: {proxy_url!r} is neither an http nor an https URL"])
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            [f"teslaHttpProxyCaFile: cannot load CA certificate {str(ca_file)!r}: {err}"]
        ) from err


# --- functional core: wire JSON -> models and errors ---------------------------------------


def _field(obj: Any, key: str, path: str) -> Any:
    """`obj[key]`, or a TeslaProtocolError naming the full field path."""
    if not isinstance(obj, dict):
        raise TeslaProtocolError(f"{path} is not an object")
    if key not in obj:
        raise TeslaProtocolError(f"{path}.{key} missing")
    return obj[key]


def _int_or_none(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TeslaProtocolError(f"{path}: expected a number, got {value!r}")
    return round(value)


def _int(value: Any, path: str) -> int:
    result = _int_or_none(value, path)
    if result is None:
        raise TeslaProtocolError(f"{path}: expected a number, got null")
    return result


def parse_vehicle_state(payload: Any) -> VehicleState:
    """`response.state` of `GET /api/1/vehicles/{vin}`."""
    state = _field(_field(payload, "response", "reply"), "state", "response")
    try:
        return VehicleState(state)
    except ValueError:
        raise TeslaProtocolError(f"response.state: unexpected value {state!r}") from None


def parse_charge_state(payload: Any) -> ChargeState:
    """`response.charge_state` of `vehicle_data?endpoints=charge_state`."""
    path = "response.charge_state"
    cs = _field(_field(payload, "response", "reply"), "charge_state", "response")
    if not isinstance(cs, dict):
        raise TeslaProtocolError(f"{path} is not an object")
    charging_state = _field(cs, "charging_state", path)
    if not isinstance(charging_state, str):
        raise TeslaProtocolError(
            f"{path}.charging_state: expected a string, got {charging_state!r}"
        )
    return ChargeState(
        charging_state=charging_state,
        charge_current_request=_int(
            _field(cs, "charge_current_request", path), f"{path}.charge_current_request"
        ),
        charge_current_request_max=_int_or_none(
            cs.get("charge_current_request_max"), f"{path}.charge_current_request_max"
        ),
        charger_actual_current=_int(
            _field(cs, "charger_actual_current", path), f"{path}.charger_actual_current"
        ),
        charger_phases=_int_or_none(cs.get("charger_phases"), f"{path}.charger_phases"),
        charger_voltage=_int_or_none(cs.get("charger_voltage"), f"{path}.charger_voltage"),
    )


def is_vin(vehicle_id: str) -> bool:
    """A 17-character VIN (as opposed to Fleet's numeric vehicle id)."""
    return len(vehicle_id) == _VIN_LENGTH and vehicle_id.isalnum() and not vehicle_id.isdigit()


def find_vin(payload: Any, vehicle_id: str) -> tuple[str | None, bool]:
    """Search one page of `GET /api/1/vehicles` for `vehicle_id`: (VIN or None, more pages?)."""
    vehicles = _field(payload, "response", "reply")
    if not isinstance(vehicles, list):
        raise TeslaProtocolError("response is not a list of vehicles")
    for i, vehicle in enumerate(vehicles):
        if not isinstance(vehicle, dict):
            raise TeslaProtocolError(f"response[{i}] is not an object")
        ids = {
            str(vehicle.get(k)) for k in ("id", "id_s", "vehicle_id") if vehicle.get(k) is not None
        }
        if vehicle_id in ids:
            vin = _field(vehicle, "vin", f"response[{i}]")
            if not isinstance(vin, str) or not is_vin(vin):
                raise TeslaProtocolError(f"response[{i}].vin: not a 17-character VIN: {vin!r}")
            return vin, False
    pagination = payload.get("pagination")
    if isinstance(pagination, dict) and "next" in pagination:
        return None, pagination["next"] is not None
    return None, len(vehicles) >= _VEHICLES_PER_PAGE


def _error_text(payload: Any) -> str:
    """Tesla's short `error` (and description) from the reply envelope, if any."""
    if not isinstance(payload, dict):
        return ""
    parts = [payload.get("error"), payload.get("error_description")]
    text = ": ".join(p for p in parts if isinstance(p, str) and p)
    # Scrubbed before the cut: a truncated token must not survive as a prefix.
    return scrub(text)[:_MAX_ERROR_TEXT]


def _command_reply(payload: Any) -> dict[str, Any] | None:
    """`response` when the reply has the command shape `{"response": {"result": bool}}`."""
    if not isinstance(payload, dict):
        return None
    response = payload.get("response")
    if isinstance(response, dict) and isinstance(response.get("result"), bool):
        return response
    return None


def _refusal_reason(response: Mapping[str, Any]) -> str:
    # The proxy called this field "string" before v0.3.4 (2025-03).
    for key in ("reason", "string"):
        value = response.get(key)
        if isinstance(value, str) and value:
            return value
    return "no reason given"


# What a 4xx from the proxy usually means, for the one log line a home owner reads.
_STATUS_WORDS: Final = {
    404: " (no such vehicle or endpoint: check teslaVehicleId and teslaHttpProxy)",
    412: " (this car has not paired our key: add the virtual key in the Tesla app)",
    422: " (the proxy could not sign the command)",
}


def interpret_reply(
    status: int, payload: Any, *, what: str, command: str | None
) -> tuple[Outcome, TeslaError | None]:
    """Map a reply (other than 401 and 429, which need I/O) to an outcome and maybe an error.

    `payload` is the parsed JSON body, or `MALFORMED` when the body was not JSON.
    """
    detail = _error_text(payload)
    suffix = f": {detail}" if detail else ""
    if status == 408:
        return "asleep", VehicleAsleep(f"{what}: the car is asleep or offline (HTTP 408)")
    if status >= 500:
        lowered = detail.lower()
        if "vehicle unavailable" in lowered or "offline or asleep" in lowered:
            # The proxy's answer to a command sent to a sleeping car.
            return "asleep", VehicleAsleep(f"{what}: the car is asleep or offline (HTTP {status})")
        return "transient", TeslaTransientError(f"{what}: HTTP {status}{suffix}")
    if status in (401, 403):
        return "auth", TeslaAuthError(f"{what}: token rejected (HTTP {status}){suffix}")
    if command is not None and status in (200, 400):
        response = _command_reply(payload)
        if response is not None and response["result"] is False:
            return "refused", CommandRefused(command, _refusal_reason(response))
    if status >= 400 or status < 200:
        hint = _STATUS_WORDS.get(status, "")
        return "error", TeslaProtocolError(f"{what}: proxy answered HTTP {status}{suffix}{hint}")
    if payload is MALFORMED or not isinstance(payload, dict):
        return "error", TeslaProtocolError(
            f"{what}: the proxy's reply is not a JSON object (HTTP {status})"
        )
    if command is not None:
        if _command_reply(payload) is None:
            return "error", TeslaProtocolError(f"{what}: response.result missing")
    elif "response" not in payload:
        return "error", TeslaProtocolError(f"{what}: response missing")
    return "ok", None


def parse_retry_after(retry_after: str | None, reset: str | None, now: float) -> float:
    """Seconds to back off after a 429: Retry-After (seconds or HTTP date), else RateLimit-Reset.

    At least 1 s (a zero would invite the same mistake again), at most TESLA_MAX_RETRY_AFTER.
    """
    seconds: float | None = None
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(retry_after).timestamp() - now
            except (TypeError, ValueError):
                seconds = None
    if (seconds is None or not math.isfinite(seconds)) and reset:
        try:
            seconds = float(reset)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        seconds = const.TESLA_DEFAULT_RETRY_AFTER
    return min(max(seconds, 1.0), const.TESLA_MAX_RETRY_AFTER)


class _Malformed:
    """Sentinel for a body that is not JSON (None is valid JSON: `null`)."""

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED: Final = _Malformed()


def _scrub(message: str, token: str) -> str:
    """Belt and braces: a token must never reach an exception message or a log line."""
    return scrub(message.replace(token, "***") if token else message)


# --- imperative shell -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    payload: Any
    retry_after: str | None
    ratelimit_reset: str | None


class TeslaClient:
    """The car through tesla-http-proxy or signed commands (implements `api.Vehicle`).

    Never wakes it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        vehicle_id: str,
        tokens: TokenSource,
        counter: ApiCallCounter,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        retry_wait: wait_base = DEFAULT_RETRY_WAIT,
        retry_attempts: int = const.TESLA_RETRY_ATTEMPTS,
        policy: RetryPolicy | None = None,
        deadline: float = const.TESLA_CALL_DEADLINE,
        signer: FleetSigner | None = None,
    ) -> None:
        self._session = session
        self.signer = signer
        # What listens at base_url, for the words of a log line.
        self.service = "the Fleet API" if signer is not None else "tesla-http-proxy"
        self._base = base_url.rstrip("/")
        self._vehicle_id = vehicle_id.strip()
        self._tokens = tokens
        self._counter = counter
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._clock = clock
        self._wall_clock = wall_clock
        self._retry_wait = retry_wait
        self._retry_attempts = retry_attempts
        self._deadline = deadline
        self._timeout = aiohttp.ClientTimeout(
            total=const.TESLA_TOTAL_TIMEOUT, connect=const.TESLA_CONNECT_TIMEOUT
        )
        self._vin: str | None = self._vehicle_id.upper() if is_vin(self._vehicle_id) else None
        self._vin_lock = asyncio.Lock()
        self._rate_limited_until = 0.0
        self._host = urlsplit(self._base).netloc or self._base
        self.policy = policy or RetryPolicy(
            f"car link ({self.service} at {self._host})", logger=_LOGGER, clock=clock
        )
        # The last attempt could not even connect (refused, DNS, connect timeout): only then
        # does a TCP probe say anything about recovery.
        self.connect_failed = False
        # teslaVehicleId is not on the account, in words: a fault no retry fixes (/health).
        self.unknown_vehicle: str | None = None

    def __repr__(self) -> str:
        return f"TeslaClient(base_url={self._base!r}, vehicle_id={self._vehicle_id!r})"

    @property
    def vin(self) -> str | None:
        """The 17-character VIN once known."""
        return self._vin

    @property
    def rate_limited_until(self) -> float:
        """Monotonic time until which calls are refused locally after a 429; 0 when not."""
        return self._rate_limited_until if self._clock() < self._rate_limited_until else 0.0

    async def resolve_vin(self) -> str:
        """The VIN for teslaVehicleId, looked up once via `GET /api/1/vehicles` if numeric.

        The proxy signs commands only for `/vehicles/{VIN}/command/...` and rejects Fleet ids.
        """
        if self._vin is not None:
            return self._vin
        async with self._vin_lock:
            if self._vin is not None:  # another task resolved it while we waited
                return self._vin
            for page in range(1, _MAX_VEHICLE_PAGES + 1):
                payload = await self._call(
                    "GET",
                    "/api/1/vehicles",
                    "data",
                    params={"page": str(page), "per_page": str(_VEHICLES_PER_PAGE)},
                    settle=False,  # a list without the car is no recovery
                )
                vin, more = find_vin(payload, self._vehicle_id)
                if vin is not None:
                    _LOGGER.info("teslaVehicleId %s is VIN %s", self._vehicle_id, vin)
                    self._vin = vin
                    self.unknown_vehicle = None
                    self.policy.success()
                    return vin
                if not more:
                    break
            # The list call worked, so the link is fine; the configuration is not. A fault: the
            # policy waits its cap before the next lookup (not one billed list per reading).
            message = (
                f"vehicle {self._vehicle_id} is not on this account: "
                "check teslaVehicleId (the car's VIN, or its id in GET /api/1/vehicles)"
            )
            self.unknown_vehicle = message
            error = TeslaProtocolError(message)
            error.retry_after = self.policy.failure("fault", message)
            raise error

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        """Vehicle state (a call that does not wake the car), then `charge_state` if online.

        `known_online` (a command just succeeded) skips the state call: one data call saved.
        The whole look has one deadline.
        """
        return await self._within_deadline(
            "look at the car", self._snapshot(with_charge_state, known_online)
        )

    async def _snapshot(self, with_charge_state: bool, known_online: bool) -> VehicleSnapshot:
        vin = await self.resolve_vin()
        if known_online:
            state = VehicleState.ONLINE
        else:
            try:
                payload = await self._call("GET", f"/api/1/vehicles/{vin}", "data")
            except VehicleAsleep:
                return VehicleSnapshot(state=VehicleState.ASLEEP, charge=None, at=self._clock())
            state = parse_vehicle_state(payload)
        if state is not VehicleState.ONLINE or not with_charge_state:
            return VehicleSnapshot(state=state, charge=None, at=self._clock())
        try:
            payload = await self._call(
                "GET",
                f"/api/1/vehicles/{vin}/vehicle_data",
                "data",
                params={"endpoints": "charge_state"},
            )
        except VehicleAsleep:
            # It fell asleep between the two calls: report that, never wake it.
            return VehicleSnapshot(state=VehicleState.ASLEEP, charge=None, at=self._clock())
        charge = parse_charge_state(payload)
        return VehicleSnapshot(state=VehicleState.ONLINE, charge=charge, at=self._clock())

    async def set_charging_amps(self, amps: int) -> None:
        """Set the charging current; below 5 A the command is sent twice (the car needs that)."""
        if amps < 0:
            raise ValueError(f"charging amps must not be negative, got {amps}")
        await self._within_deadline(f"set_charging_amps {amps} A", self._set_amps(amps))

    async def _set_amps(self, amps: int) -> None:
        body = {"charging_amps": amps}
        await self._command("set_charging_amps", body, amps=amps)
        if amps < _MIN_SINGLE_SEND_AMPS:
            # The first send lands at 5 A; only a repeat applies the lower value.
            await self._command("set_charging_amps", body, amps=amps)

    async def charge_start(self) -> None:
        """Resume charging."""
        await self._within_deadline("charge_start", self._command("charge_start", {}, amps=None))

    async def charge_stop(self) -> None:
        """Pause charging."""
        await self._within_deadline("charge_stop", self._command("charge_stop", {}, amps=None))

    async def _within_deadline(self, what: str, call: Coroutine[Any, Any, _T]) -> _T:
        """Run one whole car call within the deadline; past it, the cloud road has failed.

        tenacity's in-place attempts, the VIN lookup and the repeat below 5 A all count
        against it, so a slow proxy cannot hold a cut for several of its timeouts. The late
        call is a transient failure of the car link's policy (its health, the backoff, the
        escalation and the failover all see it).
        """
        try:
            async with asyncio.timeout(self._deadline):
                return await call
        except TimeoutError as err:
            message = f"{what}: {self.service} did not answer within {self._deadline:g} s"

            error = TeslaTransientError(message)
            error.retry_after = self.policy.failure("transient", message)
            raise error from err

    # -- recovery probe ----------------------------------------------------------------------

    async def probe(self) -> bool:
        """One TCP connect to the proxy's port: no HTTP request, nothing billed. True if accepted."""
        parts = urlsplit(self._base)
        host = parts.hostname or "localhost"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(const.TESLA_PROBE_TIMEOUT):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(const.TESLA_PROBE_TIMEOUT):
                await writer.wait_closed()
        return True

    async def watch_link(
        self,
        needed: Callable[[], bool],
        on_back: Callable[[], None],
        *,
        every: float = const.TESLA_PROBE_SECS,
    ) -> None:
        """While `needed()` (a cut waits) and the proxy refused to connect, probe every `every` s.

        The backoff may have grown to a minute during a long outage; the moment the port
        accepts again the policy allows the next attempt and `on_back()` wakes the controller,
        so the cut lands within seconds of recovery. A 5xx is left to the policy: the proxy is
        up then, and a probe could not tell when Tesla's side recovers.
        """
        while True:
            await asyncio.sleep(every)
            if not (self.connect_failed and self.policy.wait_secs() > 0 and needed()):
                continue
            if await self.probe():
                _LOGGER.debug("car link: %s accepts connections again", self._host)
                self.policy.allow_now()
                on_back()

    # -- internals ---------------------------------------------------------------------------

    async def _command(self, name: str, body: dict[str, Any], *, amps: int | None) -> None:
        """POST one command and log its result on one line."""
        vin = await self.resolve_vin()
        shown = f" amps={amps}" if amps is not None else ""
        try:
            if self.signer is not None:
                await self._signed_command(vin, name, amps)
            else:
                await self._call(
                    "POST",
                    f"/api/1/vehicles/{vin}/command/{name}",
                    "command",
                    body=body,
                    command=name,
                )
        except CommandRefused as err:
            _LOGGER.warning("command %s%s refused: %s", name, shown, err.reason)
            raise
        except TeslaError as err:
            _LOGGER.debug("command %s%s failed: %s", name, shown, type(err).__name__)
            raise
        # The service logs each command once, with the controller's reason; this is detail.
        _LOGGER.debug("command %s%s result=ok", name, shown)

    async def check_pairing(self) -> None:
        """One handshake (one billed request): proves the car knows our key; caches the session.

        Only with a signer; doctor calls it for an online car, never to wake one.
        """
        if self.signer is None:
            raise TeslaProtocolError("commands go through tesla-http-proxy: nothing to pair here")
        vin = await self.resolve_vin()
        await self._settled(self.signer.handshake(vin, self._signed_sender(vin)))

    def _signed_sender(
        self, vin: str
    ) -> Callable[[dict[str, Any], bool], Coroutine[Any, Any, dict[str, Any]]]:
        """How the signer posts to Fleet's signed_command: through `_call` (policy gate, 429,
        401 refresh, billing), the verdict left to `_settled`; a handshake is billed as one."""
        path = f"/api/1/vehicles/{vin}/signed_command"

        async def send(body: dict[str, Any], handshake: bool) -> dict[str, Any]:
            return await self._call(
                "POST",
                path,
                "command",
                body=body,
                settle=False,
                ok_outcome="handshake" if handshake else "ok",
            )

        return send

    async def _settled(self, exchange: Coroutine[Any, Any, _T]) -> _T:
        """The policy's verdict on a signed exchange, once the car's answer is read.

        A signature the car rejects is a fault (backoff at its cap), not a success; the HTTP
        errors of `_call` went through the policy already.
        """
        try:
            result = await exchange
        except CommandSigningError as err:
            err.retry_after = self.policy.failure("fault", str(err))
            raise
        self.policy.success()
        return result

    async def _signed_command(self, vin: str, name: str, amps: int | None) -> None:
        """Sign the command ourselves and post it to Fleet's signed_command.

        The HTTP calls go through `_call` (policy gate, 429, 401 refresh, billing); whether
        the link worked is settled here, once the car's answer is read: a signature the car
        rejects is a fault for the policy (backoff at its cap), not a success.
        """
        assert self.signer is not None  # noqa: S101 - only called with a signer
        if name == "set_charging_amps":
            action = set_charging_amps_action(amps if amps is not None else 0)
        elif name == "charge_start":
            action = charge_start_action()
        else:
            action = charge_stop_action()
        response = await self._settled(self.signer.execute(vin, action, self._signed_sender(vin)))
        if not response.ok:
            reason = response.reason or "unspecified error"
            raise CommandRefused(name, f"car could not execute command: {reason}")

    async def _call(
        self,
        method: str,
        path: str,
        category: Category,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        command: str | None = None,
        settle: bool = True,
        ok_outcome: Outcome = "ok",
    ) -> dict[str, Any]:
        """One logical call through the car link's retry policy.

        Refused locally while the policy backs off, so no caller can call faster than it
        allows. While the link is healthy, tenacity retries transport faults in place (a blip
        must not delay a cut); once it is failing, the policy alone paces the attempts.
        Every error raised carries `retry_after`: when the link may be tried again.
        `settle=False` leaves a successful reply's verdict to the caller (a signed command's
        answer is only known once the car's message is read).
        """
        policy = self.policy
        wait = policy.wait_secs(self._clock())
        if wait > 0:
            what = f"{method} {path}"
            cause = policy.last_error or "an earlier failure"
            if policy.last_kind == "rate_limited":
                raise RateLimited(f"{what}: not sent, rate limited for another {wait:.0f} s", wait)
            # No seconds in the text: it becomes the controller's reason, logged on change.
            blocked = TeslaTransientError(f"{what}: not sent, car link paused after: {cause}")
            blocked.retry_after = wait
            raise blocked
        retrying = AsyncRetrying(
            # Fast transient faults only: a call that hung until its timeout is not repeated
            # in place (the controller would be stuck for three timeouts).
            retry=retry_if_exception(_quick_transient),
            stop=stop_after_attempt(1 if policy.failing else self._retry_attempts),
            wait=self._retry_wait,
            reraise=True,
            before_sleep=_log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await self._call_once(
                        method,
                        path,
                        category,
                        params=params,
                        body=body,
                        command=command,
                        ok_outcome=ok_outcome,
                    )
        except RateLimited as err:
            err.retry_after = policy.failure("rate_limited", str(err), retry_after=err.retry_after)
            raise
        except TeslaTransientError as err:
            err.retry_after = policy.failure("transient", str(err))
            raise
        except (TeslaProtocolError, TeslaAuthError) as err:
            err.retry_after = policy.failure("fault", str(err))
            raise
        except (VehicleAsleep, CommandRefused):
            policy.success()  # the link works; the car answered
            raise
        if settle:
            policy.success()
        return result

    async def _call_once(
        self,
        method: str,
        path: str,
        category: Category,
        *,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        command: str | None,
        ok_outcome: Outcome = "ok",
    ) -> dict[str, Any]:
        """One attempt: rate-limit gate, request, one token refresh on 401, reply mapping."""
        what = f"{method} {path}"
        remaining = self._rate_limited_until - self._clock()
        if remaining > 0:
            raise RateLimited(
                f"{what}: not sent, rate limited for another {remaining:.0f} s", remaining
            )
        token = await self._tokens.access_token()
        reply = await self._exchange(
            method, path, category, token, what=what, params=params, body=body
        )
        if reply.status == 401:
            self._counter.record(category, "auth", billed=True)
            if not await self._tokens.handle_unauthorized(token):
                raise TeslaAuthError(_scrub(self._auth_message(what, reply), token))
            rejected, token = token, await self._tokens.access_token()
            reply = await self._exchange(
                method, path, category, token, what=what, params=params, body=body
            )
            if reply.status == 401:
                self._counter.record(category, "auth", billed=True)
                message = _scrub(_scrub(self._auth_message(what, reply), token), rejected)
                raise TeslaAuthError(message)
        if reply.status == 429:
            self._counter.record(category, "rate_limited", billed=True)
            delay = parse_retry_after(reply.retry_after, reply.ratelimit_reset, self._wall_clock())
            self._rate_limited_until = self._clock() + delay
            _LOGGER.debug("%s: rate limited by the Fleet API, backing off %.0f s", what, delay)
            raise RateLimited(f"{what}: rate limited (HTTP 429), retry in {delay:.0f} s", delay)
        outcome, error = interpret_reply(reply.status, reply.payload, what=what, command=command)
        if outcome == "ok":
            outcome = ok_outcome
        self._counter.record(category, outcome, billed=reply.status < 500)
        if error is not None:
            error.args = tuple(_scrub(str(a), token) for a in error.args)
            if isinstance(error, CommandRefused):
                error.reason = _scrub(error.reason, token)
            raise error
        payload: dict[str, Any] = reply.payload
        return payload

    @staticmethod
    def _auth_message(what: str, reply: _Reply) -> str:
        detail = _error_text(reply.payload)
        return f"{what}: access token rejected (HTTP 401){': ' + detail if detail else ''}"

    async def _exchange(
        self,
        method: str,
        path: str,
        category: Category,
        token: str,
        *,
        what: str,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
    ) -> _Reply:
        """Send one HTTP request; transport faults become TeslaTransientError (not billed)."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._session.request(
                method,
                self._base + path,
                headers=headers,
                params=params,
                json=body,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                reset = resp.headers.get("RateLimit-Reset")
        except aiohttp.ClientConnectorCertificateError as err:
            self.connect_failed = False  # the port accepts; a probe would prove nothing
            self._counter.record(category, "transient", billed=False)
            raise TeslaTransientError(
                f"{what}: the proxy's TLS certificate is not accepted ({err.certificate_error}); "
                f"{certificate_fix_hint(err.certificate_error)}"
            ) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            self.connect_failed = isinstance(
                err,
                aiohttp.ClientConnectorError
                | aiohttp.ConnectionTimeoutError
                | ConnectionRefusedError,
            )
            self._counter.record(category, "transient", billed=False)
            words = describe_transport_error(err, host=self._host, service=self.service)
            raise TeslaTransientError(_scrub(f"{what}: {words}", token)) from err
        self.connect_failed = False
        payload: Any
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            payload = MALFORMED
        return _Reply(status, payload, retry_after, reset)


def client_for(
    loaded: LoadedConfig,
    session: aiohttp.ClientSession,
    vehicle_id: str,
    tokens: TokenSource,
    counter: ApiCallCounter,
    **kwargs: Any,
) -> TeslaClient:
    """The car client for the configured road: tesla-http-proxy, or signed by us over Fleet.

    Signed: reads and commands go to the region's Fleet API with the token; the session
    cache lives beside the token store.
    """
    url = loaded.car_api_url
    if loaded.command_road == "signed":
        try:
            key = load_private_key(loaded.private_key_file)
        except SigningKeyError as err:
            raise ConfigError([f"{loaded.path}: teslaPrivateKey: {err}"]) from err
        cache = SessionCache(loaded.token_file.parent / CACHE_FILE, public_bytes(key))
        signer = FleetSigner(key, cache)
        return TeslaClient(session, url, vehicle_id, tokens, counter, signer=signer, **kwargs)
    ssl_context = ssl_context_for(url, loaded.proxy_ca_file)
    return TeslaClient(session, url, vehicle_id, tokens, counter, ssl_context=ssl_context, **kwargs)


def describe_road(loaded: LoadedConfig) -> str:
    """Which way commands go, for the start-up log and doctor."""
    if loaded.command_road == "signed":
        return (
            f"signed by this charger with {loaded.private_key_file}, sent to the Fleet API at "
            f"{loaded.car_api_url}"
        )
    return f"through tesla-http-proxy at {loaded.car_api_url}"


def _quick_transient(err: BaseException) -> bool:
    """A transient fault worth one more immediate try: not a timeout."""
    return isinstance(err, TeslaTransientError) and not isinstance(err.__cause__, TimeoutError)


def _log_retry(state: RetryCallState) -> None:
    """Say why we wait before the next attempt (tenacity's before_sleep hook)."""
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    _LOGGER.debug("attempt %d failed (%s); retrying in %.1f s", state.attempt_number, error, wait)
