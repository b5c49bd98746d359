"""The HTTP exchange every Shelly speaks, shared by the meter and the safety relay.

One request on the shared session with the device's own timeout; Gen1 basic auth or Gen2+
SHA-256 digest auth (as admin); a 429 from a Gen2 device answered with one short pause and a
fresh digest handshake; the reply read capped and parsed as JSON; every transport fault turned
into the owner's error class with a one-line reason naming the device. The owner (meter or
relay) supplies its error classes and the wording that names its own settings.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import DigestAuthMiddleware

from tesla_smart_charger.retry import describe_transport_error

GEN2_USER: Final = "admin"  # Gen2+ digest auth: the user name is fixed by the firmware
GEN1_DEFAULT_USER: Final = "admin"
# Newer Gen2 firmware answers 429 while its nonce slots are full (a 2 s window). One short
# pause and one retry; the next poll is only a second away anyway.
THROTTLE_BACKOFF_SECS: Final = 0.3
# A Shelly reply is a few hundred bytes; anything this large is a fault, not a reply, and is
# never held in memory whole.
MAX_REPLY_BYTES: Final = 1024 * 1024
_CHUNK_BYTES: Final = 64 * 1024


def basic_auth_header(user: str | None, password: str | None) -> str | None:
    """Gen1 basic `Authorization` value, or None without a password.

    Built by hand: aiohttp 3.14 deprecates BasicAuth and older releases lack its successor.
    """
    if not password:
        return None
    token = base64.b64encode(f"{user or GEN1_DEFAULT_USER}:{password}".encode()).decode()
    return f"Basic {token}"


def digest_middleware(password: str) -> DigestAuthMiddleware:
    """Gen2+ SHA-256 digest auth (user fixed to admin), preemptive once challenged."""
    return DigestAuthMiddleware(GEN2_USER, password, preemptive=True)


def shelly_host(base_url: str) -> str:
    """`host[:port]` of a device URL, without any user:password@ (for names in logs)."""
    return urlsplit(base_url.rstrip("/")).netloc.rsplit("@", 1)[-1]


class Throttled(Exception):
    """429 from a Gen2 device: its nonce slots are full or it counts failed logins."""


class ShellyHttp:
    """One Shelly device's HTTP transport; its owner turns `Throttled` into its own error."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        name: str,
        user: str | None,
        password: str | None,
        timeout: aiohttp.ClientTimeout,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle_backoff: float = THROTTLE_BACKOFF_SECS,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        error: type[Exception],
        auth_error: type[Exception],
        auth_problem: Callable[[bool], str],
        status_hint: Callable[[str, int], str],
        reply_noun: str,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._host = shelly_host(base_url)
        self._session = session
        self._name = name
        self._user = user
        self._password = password or None
        self._timeout = timeout
        self._sleep = sleep
        self._throttle_backoff = min(max(throttle_backoff, 0.0), 1.0)
        self._max_reply_bytes = max_reply_bytes
        self._error = error
        self._auth_error = auth_error
        self._auth_problem = auth_problem  # (credentials sent?) -> message
        self._status_hint = status_hint  # (path, HTTP status) -> " (hint)" or ""
        self._reply_noun = reply_noun
        self._digest: DigestAuthMiddleware | None = None

    async def get_open(self, path: str) -> Any:
        """GET without credentials (`/shelly` answers anyone)."""
        return await self._request("GET", path, None, None, auth=None, digest=False)

    async def get_basic(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A Gen1 GET with basic auth."""
        auth = basic_auth_header(self._user, self._password)
        return await self._request("GET", path, params, None, auth=auth, digest=False)

    async def rpc(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """A Gen2+ RPC with digest auth; `Throttled` after a 429, a pause and a second 429."""
        try:
            return await self._request(method, path, params, body, auth=None, digest=True)
        except Throttled:
            # The device wants us to forget our nonce: a fresh middleware starts a new handshake.
            self._digest = None
            await self._sleep(self._throttle_backoff)
        try:
            return await self._request(method, path, params, body, auth=None, digest=True)
        except Throttled:
            self._digest = None
            raise

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: dict[str, Any] | None,
        *,
        auth: str | None,
        digest: bool,
    ) -> Any:
        """One request and its JSON; every failure becomes a one-line error naming the device."""
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
                    raise self._auth_error(
                        self._auth_problem(auth is not None or bool(middlewares))
                    )
                if resp.status == 429 and digest:
                    raise Throttled
                if resp.status != 200:
                    hint = self._status_hint(path, resp.status)
                    raise self._error(f"{self._name}: {path} answered HTTP {resp.status}{hint}")
                raw = await self._read_capped(resp, path)
                try:
                    return json.loads(raw)
                except (ValueError, RecursionError) as err:
                    raise self._error(f"{self._name}: {path} did not return JSON") from err
        except TimeoutError as err:
            total = self._timeout.total
            within = f" within {total:g} s" if total else ""
            raise self._error(f"{self._name}: no answer from {path}{within}") from err
        except (aiohttp.ClientError, OSError) as err:
            # In words, not aiohttp's class names: "cannot resolve the host name shelly-em".
            reason = describe_transport_error(err, host=self._host)
            raise self._error(f"{self._name}: cannot reach {path}: {reason}") from err

    async def _read_capped(self, resp: aiohttp.ClientResponse, path: str) -> bytes:
        """The body, read in chunks and refused past `max_reply_bytes` (memory stays flat).

        Leaving the response unread closes the connection instead of draining it. The partial
        body is dropped before raising, so no traceback can keep a megabyte alive.
        """
        cap = self._max_reply_bytes
        over = resp.content_length is not None and resp.content_length > cap
        body = bytearray()
        if not over:
            async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
                if len(body) + len(chunk) > cap:
                    over = True
                    break
                body += chunk
        if over:
            del body
            raise self._error(
                f"{self._name}: {path} reply is larger than {cap // 1024} KiB: not a {self._reply_noun}"
            )
        return bytes(body)
