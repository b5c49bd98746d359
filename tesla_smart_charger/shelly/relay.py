"""The safety relay: a Shelly switch on the charger circuit, the last resort of the escalation.

Generation is detected once from the unauthenticated `GET /shelly` (Gen1 has no `gen` key).
Gen1 switches with `GET /relay/{ch}?turn=on|off` and reads `GET /relay/{ch}` (`ison`); Gen2+
switches with the RPC `Switch.Set {"id": ch, "on": ...}` and reads `Switch.GetStatus`
(`output`). The HTTP transport (Gen1 basic, Gen2 SHA-256 digest as admin, 429 handling) is the
meter's: `shelly_http.ShellyHttp`. A switch is confirmed by reading the state back: a relay that says it
switched but did not is a `RelayError`, never silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import aiohttp

from tesla_smart_charger.errors import RelayAuthError, RelayError
from tesla_smart_charger.shelly.http import (
    THROTTLE_BACKOFF_SECS,
    ShellyHttp,
    Throttled,
    shelly_host,
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
        self._channel = channel
        self._gen: Generation | None = None
        self._lock = asyncio.Lock()
        self._name = f"shelly-relay@{shelly_host(base_url)}/{channel}"
        self._http = ShellyHttp(
            base_url,
            session,
            name=self._name,
            user=user,
            password=password,
            timeout=timeout
            or aiohttp.ClientTimeout(total=RELAY_TOTAL_TIMEOUT, connect=RELAY_CONNECT_TIMEOUT),
            sleep=sleep,
            throttle_backoff=throttle_backoff,
            error=RelayError,
            auth_error=RelayAuthError,
            auth_problem=self._auth_problem,
            status_hint=self._status_hint,
            reply_noun="relay reply",
        )

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
                reply = await self._http.get_basic(f"/relay/{self._channel}", {"turn": word})
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
            reply = await self._http.get_basic(f"/relay/{self._channel}")
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
            info = await self._http.get_open("/shelly")
            try:
                self._gen = relay_generation(info)
            except RelayError as err:
                raise RelayError(f"{self._name}: {err}") from err
            _LOG.info(
                "%s: Gen%d relay (%s)", self._name, self._gen, info.get("app") or info.get("type")
            )
        return self._gen

    async def _rpc(self, method: str, body: dict[str, Any]) -> Any:
        path = f"/rpc/{method}"
        try:
            return await self._http.rpc("POST", path, body=body)
        except Throttled:
            raise RelayError(f"{self._name}: {path} answered 429 twice (throttling)") from None

    def _auth_problem(self, sent: bool) -> str:
        if not sent:
            return f"{self._name}: authentication required: set safetyRelayPassword"
        return f"{self._name}: authentication failed: check safetyRelayUser and safetyRelayPassword"

    def _status_hint(self, path: str, status: int) -> str:
        if status == 404 and path != "/shelly":
            return f" (does output {self._channel} exist?)"
        return ""
