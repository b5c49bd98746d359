"""The safety relay: a Shelly switch on the charger circuit, the last resort of the escalation.

Generation is detected once from the unauthenticated `GET /shelly` (Gen1 has no `gen` key).
Gen1 switches with `GET /relay/{ch}?turn=on|off` and reads `GET /relay/{ch}` (`ison`); Gen2+
switches with the RPC `Switch.Set {"id": ch, "on": ...}` and reads `Switch.GetStatus`
(`output`). Auth is the meters' (Gen1 basic, Gen2 SHA-256 digest as admin; the helpers live in
`meters/shelly.py`). A switch is confirmed by reading the state back: a relay that says it
switched but did not is a `RelayError`, never silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import DigestAuthMiddleware

from tesla_smart_charger.errors import RelayAuthError, RelayError
from tesla_smart_charger.meters.shelly import (
    THROTTLE_BACKOFF_SECS,
    basic_auth_header,
    digest_middleware,
)

_LOG = logging.getLogger(__name__)

RELAY_CONNECT_TIMEOUT: Final = 1.0
RELAY_TOTAL_TIMEOUT: Final = 3.0
Generation = Literal[1, 2]


# --- pure parsers ----------------------------------------------------------------------------


def relay_generation(info: Any) -> Generation:
    """1 or 2 from the `/shelly` reply (Gen3/Gen4 speak the Gen2 RPC: 2)."""
    if not isinstance(info, Mapping):
        raise RelayError("/shelly: expected a JSON object")
    gen = info.get("gen")
    if gen is None:
        return 1
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 2:
        raise RelayError(f"/shelly: gen: unexpected value {gen!r}")
    return 2


def _flag(reply: Any, key: str, what: str) -> bool:
    if not isinstance(reply, Mapping):
        raise RelayError(f"{what}: expected a JSON object")
    value = reply.get(key)
    if not isinstance(value, bool):
        raise RelayError(f"{what}: {key}: expected true or false, got {value!r}")
    return value


def parse_gen1_relay(reply: Any) -> bool:
    """`ison` of Gen1 `/relay/{ch}` (with or without `turn=`)."""
    return _flag(reply, "ison", "/relay")


def parse_switch_status(reply: Any) -> bool:
    """`output` of Gen2 `Switch.GetStatus`."""
    return _flag(reply, "output", "Switch.GetStatus")


# --- the driver ------------------------------------------------------------------------------


class _Throttled(Exception):
    """429 from a Gen2 device that wants a fresh digest handshake."""


class ShellyRelay:
    """One output of a Shelly relay (implements `api.Relay`)."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        channel: int = 0,
        user: str | None = None,
        password: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle_backoff: float = THROTTLE_BACKOFF_SECS,
    ) -> None:
        if channel < 0:
            raise ValueError("safetyRelayChannel must not be negative")
        self._base = base_url.rstrip("/")
        self._session = session
        self._channel = channel
        self._user = user
        self._password = password or None
        self._timeout = timeout or aiohttp.ClientTimeout(
            total=RELAY_TOTAL_TIMEOUT, connect=RELAY_CONNECT_TIMEOUT
        )
        self._sleep = sleep
        self._throttle_backoff = min(max(throttle_backoff, 0.0), 1.0)
        self._gen: Generation | None = None
        self._digest: DigestAuthMiddleware | None = None
        self._lock = asyncio.Lock()
        host = urlsplit(self._base).netloc.rsplit("@", 1)[-1]
        self._name = f"shelly-relay@{host}/{channel}"

    @property
    def name(self) -> str:
        """`shelly-relay@host/channel`; never carries credentials."""
        return self._name

    @property
    def generation(self) -> Generation | None:
        """1 or 2 once detected."""
        return self._gen

    def __repr__(self) -> str:
        return f"ShellyRelay({self._name!r}, gen={self._gen!r})"

    async def is_on(self) -> bool:
        """Whether the charger circuit is powered (read from the device)."""
        async with self._lock:
            return await self._state()

    async def switch(self, on: bool) -> None:
        """Switch the output and confirm it by reading it back."""
        word = "on" if on else "off"
        async with self._lock:
            gen = await self._generation()
            if gen == 1:
                reply = await self._get(f"/relay/{self._channel}", {"turn": word})
                self._parse(parse_gen1_relay, reply)
            else:
                await self._rpc("Switch.Set", {"id": self._channel, "on": on})
            state = await self._state()
        if state != on:
            raise RelayError(f"{self._name}: asked to switch {word}, but it reports {not on}")
        _LOG.info("%s: charger circuit switched %s", self._name, word)

    # -- internals --------------------------------------------------------------------------

    async def _state(self) -> bool:
        gen = await self._generation()
        if gen == 1:
            reply = await self._get(f"/relay/{self._channel}", None)
            return self._parse(parse_gen1_relay, reply)
        reply = await self._rpc("Switch.GetStatus", {"id": self._channel})
        return self._parse(parse_switch_status, reply)

    def _parse(self, parse: Callable[[Any], bool], reply: Any) -> bool:
        try:
            return parse(reply)
        except RelayError as err:
            raise RelayError(f"{self._name}: bad reply: {err}") from err

    async def _generation(self) -> Generation:
        if self._gen is None:
            info = await self._exchange("GET", "/shelly", None, None, auth=None, digest=False)
            try:
                self._gen = relay_generation(info)
            except RelayError as err:
                raise RelayError(f"{self._name}: {err}") from err
            _LOG.info(
                "%s: Gen%d relay (%s)", self._name, self._gen, info.get("app") or info.get("type")
            )
        return self._gen

    async def _get(self, path: str, params: Mapping[str, str] | None) -> Any:
        """A Gen1 GET with basic auth."""
        auth = basic_auth_header(self._user, self._password)
        return await self._exchange("GET", path, params, None, auth=auth, digest=False)

    async def _rpc(self, method: str, body: dict[str, Any]) -> Any:
        path = f"/rpc/{method}"
        try:
            return await self._exchange("POST", path, None, body, auth=None, digest=True)
        except _Throttled:
            self._digest = None  # forget the nonce: a fresh handshake
            await self._sleep(self._throttle_backoff)
        try:
            return await self._exchange("POST", path, None, body, auth=None, digest=True)
        except _Throttled:
            self._digest = None
            raise RelayError(f"{self._name}: {path} answered 429 twice (throttling)") from None

    async def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: dict[str, Any] | None,
        *,
        auth: str | None,
        digest: bool,
    ) -> Any:
        """One request; every failure becomes a one-line RelayError naming the relay."""
        middlewares: tuple[DigestAuthMiddleware, ...] = ()
        if digest and self._password:
            if self._digest is None:
                self._digest = digest_middleware(self._password)
            middlewares = (self._digest,)
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                json=body,
                headers={"Authorization": auth} if auth else None,
                middlewares=middlewares,
                timeout=self._timeout,
            ) as resp:
                if resp.status == 401:
                    if auth is None and not middlewares:
                        raise RelayAuthError(
                            f"{self._name}: authentication required: set safetyRelayPassword"
                        )
                    raise RelayAuthError(
                        f"{self._name}: authentication failed: check safetyRelayUser and safetyRelayPassword"
                    )
                if resp.status == 429 and digest:
                    raise _Throttled
                if resp.status == 404 and path != "/shelly":
                    raise RelayError(
                        f"{self._name}: {path} answered HTTP 404 (does output {self._channel} exist?)"
                    )
                if resp.status != 200:
                    raise RelayError(f"{self._name}: {path} answered HTTP {resp.status}")
                try:
                    return await resp.json(content_type=None)
                except ValueError as err:
                    raise RelayError(f"{self._name}: {path} did not return JSON") from err
        except TimeoutError as err:
            raise RelayError(
                f"{self._name}: no answer from {path} within {self._timeout.total:g} s"
            ) from err
        except aiohttp.ClientError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RelayError(f"{self._name}: cannot reach {path}: {reason}") from err
        except OSError as err:
            raise RelayError(f"{self._name}: cannot reach {path}: {err.strerror or err}") from err
