"""The signer's shell: handshakes and signed commands over `POST .../signed_command`.

It owns no HTTP: `send` (TeslaClient's call through the car link's one retry policy and the
token source) posts `{"routable_message": base64}` and returns Fleet's JSON. One command costs
one billed request; a handshake costs one more, and only when no cached session exists. A
fault that carries fresh, authenticated session info (bad signature, used counter, new epoch,
expired) re-syncs and is retried exactly once; anything else is a `CommandSigningError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.cache import SessionCache
from tesla_smart_charger.car.signing.messages import (
    FAULT_WORDS,
    RESYNC_FAULTS,
    CarResponse,
    Domain,
    RoutableMessage,
    SessionInfo,
)
from tesla_smart_charger.car.signing.protobuf import DecodeError
from tesla_smart_charger.car.signing.session import (
    COMMAND_LIFETIME_SECS,
    Session,
    SessionError,
    handshake_request,
    new_address,
    new_uuid,
    open_reply,
    resync,
    sign,
    start_session,
    verified_info,
)
from tesla_smart_charger.config.keys import SigningKeyError
from tesla_smart_charger.errors import CommandSigningError

_LOGGER = logging.getLogger(__name__)

# send(body, handshake): POST the body; `handshake` only labels the request in the accounting.
Send = Callable[[dict[str, Any], bool], Awaitable[dict[str, Any]]]
UNKNOWN_KEY_FAULTS = frozenset({3, 4})


def fault_words(fault: int) -> str:
    """A fault code in words, with its number for the bug report."""
    return f"{FAULT_WORDS.get(fault, 'unknown fault')} (fault {fault})"


class FleetSigner:
    """Signs infotainment commands with our key; one session per car, cached on disk."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        cache: SessionCache | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        lifetime: float = COMMAND_LIFETIME_SECS,
    ) -> None:
        self._key = key
        self.public = crypto.public_bytes(key)
        self._cache = cache
        self._wall = wall_clock
        self._lifetime = lifetime
        self._address = new_address()
        self._sessions: dict[str, tuple[Session, bytes]] = {}
        self._lock = asyncio.Lock()  # one command at a time: counters go out in order
        self.handshakes = 0

    def __repr__(self) -> str:
        return f"FleetSigner(public_key={self.public.hex()[:16]}..., cache={self._cache!r})"

    # --- sessions ---------------------------------------------------------------------------

    def _remember(self, session: Session, k: bytes) -> None:
        self._sessions[session.vin] = (session, k)
        if self._cache is not None:
            self._cache.save(session)

    def _forget(self, vin: str) -> None:
        self._sessions.pop(vin, None)
        if self._cache is not None:
            self._cache.forget(vin, Domain.INFOTAINMENT)

    def _cached(self, vin: str) -> tuple[Session, bytes] | None:
        if vin in self._sessions:
            return self._sessions[vin]
        if self._cache is None:
            return None
        session = self._cache.load(vin, Domain.INFOTAINMENT)
        if session is None:
            return None
        try:
            k = crypto.shared_key(self._key, session.car_public_key)
        except SigningKeyError:
            return None
        self._sessions[vin] = (session, k)
        _LOGGER.debug("signed commands: session with %s loaded from %s", vin, self._cache.path)
        return session, k

    async def handshake(self, vin: str, send: Send) -> tuple[Session, bytes]:
        """Ask the car for session info and keep it if its tag verifies (one billed request)."""
        uuid = new_uuid()
        request = handshake_request(
            Domain.INFOTAINMENT, self.public, uuid=uuid, address=self._address
        )
        reply = await _exchange(send, request, handshake=True)
        self.handshakes += 1
        if reply.fault:
            raise CommandSigningError(
                f"{vin}: the car refused the session handshake: {fault_words(reply.fault)}",
                reply.fault,
            )
        if reply.session_info is None:
            raise CommandSigningError(f"{vin}: session handshake failed: no session info")
        try:
            car_public = SessionInfo.decode(reply.session_info).public_key
            k = crypto.shared_key(self._key, car_public)
            info = verified_info(k, vin, uuid, reply)
            session = start_session(vin, Domain.INFOTAINMENT, info, self._wall())
        except (SessionError, DecodeError, SigningKeyError) as err:
            raise CommandSigningError(f"{vin}: session handshake failed: {err}") from err
        self._remember(session, k)
        _LOGGER.debug("signed commands: new session with %s (counter %d)", vin, session.counter)
        return session, k

    # --- commands ---------------------------------------------------------------------------

    async def execute(self, vin: str, action: bytes, send: Send) -> CarResponse:
        """Sign `action` (a CarServer.Action), send it, and return the car's answer."""
        async with self._lock:
            known = self._cached(vin)
            session, k = known if known is not None else await self.handshake(vin, send)
            for attempt in (1, 2):
                uuid = new_uuid()
                try:
                    signed = sign(
                        session,
                        k,
                        self.public,
                        action,
                        now=self._wall(),
                        uuid=uuid,
                        address=self._address,
                        lifetime=self._lifetime,
                    )
                except SessionError as err:
                    self._forget(vin)
                    raise CommandSigningError(f"{vin}: {err}") from err
                # The counter is on disk before the command leaves: a crash cannot reuse it.
                self._remember(signed.session, k)
                reply = await _exchange(send, signed.message, handshake=False)
                if reply.request_uuid and reply.request_uuid != uuid:
                    raise CommandSigningError(f"{vin}: the reply is for another request")
                if not reply.fault:
                    try:
                        return CarResponse.decode(open_reply(k, vin, reply, signed.request_hash))
                    except (SessionError, DecodeError) as err:
                        raise CommandSigningError(f"{vin}: unreadable reply: {err}") from err
                session = self._after_fault(
                    vin, signed.session, k, uuid=uuid, reply=reply, attempt=attempt
                )
            raise AssertionError("unreachable")  # pragma: no cover

    def _after_fault(
        self,
        vin: str,
        session: Session,
        k: bytes,
        *,
        uuid: bytes,
        reply: RoutableMessage,
        attempt: int,
    ) -> Session:
        """The re-synced session to retry with, or CommandSigningError."""
        words = fault_words(reply.fault)
        if reply.fault in UNKNOWN_KEY_FAULTS:
            self._forget(vin)
            raise CommandSigningError(f"{vin}: the car rejected the command: {words}", reply.fault)
        if reply.fault not in RESYNC_FAULTS or reply.session_info is None:
            raise CommandSigningError(f"{vin}: the car rejected the command: {words}", reply.fault)
        try:
            info = verified_info(k, vin, uuid, reply)
            fresh = resync(session, info, self._wall())
        except (SessionError, DecodeError) as err:
            self._forget(vin)
            raise CommandSigningError(
                f"{vin}: the car rejected the command: {words}; its session info was "
                f"discarded ({err})",
                reply.fault,
            ) from err
        self._remember(fresh, k)
        if attempt > 1:
            raise CommandSigningError(
                f"{vin}: the car rejected the command twice: {words}", reply.fault
            )
        _LOGGER.info("signed commands: %s re-synchronised its session after: %s", vin, words)
        return fresh


async def _exchange(send: Send, message: RoutableMessage, *, handshake: bool) -> RoutableMessage:
    """POST one message; the car's reply, decoded (TeslaProtocolError if it is not one)."""
    body = {"routable_message": base64.b64encode(message.encode()).decode("ascii")}
    payload = await send(body, handshake)
    encoded = payload.get("response")
    if not isinstance(encoded, str):
        raise CommandSigningError("signed_command: response is not a base64 routable message")
    try:
        return RoutableMessage.decode(base64.b64decode(encoded, validate=True))
    except (binascii.Error, DecodeError, ValueError) as err:
        raise CommandSigningError(f"signed_command: unreadable routable message ({err})") from err
