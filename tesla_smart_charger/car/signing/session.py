"""Session state with one car domain, as pure functions: handshake, sign, re-sync, decrypt.

A `Session` is what a handshake gives us: the car's epoch, its anti-replay counter, its clock
(kept as the wall-clock instant its clock read zero) and its public key. Signing returns a new
session with the counter one higher, so a counter is never used twice within an epoch. The
rules follow protocol.md and Tesla's Go client (internal/authentication): commands live
`COMMAND_LIFETIME_SECS`, session info is accepted only with a valid tag for our own request
UUID, and a re-sync never rolls the counter back unless the epoch changed.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.messages import (
    FLAG_ENCRYPT_RESPONSE,
    Destination,
    Domain,
    HmacPersonalized,
    RoutableMessage,
    SessionInfo,
    SignatureData,
    SignatureType,
)

# tesla-http-proxy gives each command its 10 s request timeout as lifetime (the Go client's
# lifetime is the time left until the context deadline); the car rejects it after that.
COMMAND_LIFETIME_SECS = 10.0
UUID_BYTES = 16
ADDRESS_BYTES = 16
EPOCH_BYTES = 16
COUNTER_MAX = 0xFFFFFFFF
SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST = 1
# Tesla's Go client sets this on every request: cars on 2024.38+ then encrypt their replies.
DEFAULT_FLAGS = FLAG_ENCRYPT_RESPONSE


class SessionError(ValueError):
    """Session info we must not use (bad tag, wrong key, unknown key) or a counter rollover."""


@dataclass(frozen=True, slots=True)
class Session:
    """What we know of one domain of one car after a handshake."""

    vin: str
    domain: Domain
    car_public_key: bytes
    epoch: bytes
    counter: int
    clock_zero: float  # wall-clock seconds at which the car's clock read 0
    set_time: int  # the car's clock in the newest session info we accepted

    def car_time(self, now: float) -> float:
        """The car's clock (seconds into its epoch) at wall-clock `now`."""
        return now - self.clock_zero


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed command ready to send, and what is needed to read its reply."""

    message: RoutableMessage
    session: Session  # counter already advanced
    request_hash: bytes


def new_uuid() -> bytes:
    """An unpredictable request UUID (it is the handshake's challenge)."""
    return secrets.token_bytes(UUID_BYTES)


def new_address() -> bytes:
    """A random routing address for our side of the conversation."""
    return secrets.token_bytes(ADDRESS_BYTES)


def handshake_request(
    domain: Domain, our_public: bytes, *, uuid: bytes, address: bytes
) -> RoutableMessage:
    """session_info_request with our public key; `uuid` becomes the challenge."""
    return RoutableMessage(
        to_destination=Destination(domain=domain),
        from_destination=Destination(routing_address=address),
        session_info_request=our_public,
        uuid=uuid,
    )


def verified_info(k: bytes, vin: str, challenge: bytes, reply: RoutableMessage) -> SessionInfo:
    """The reply's session info if its tag verifies for our `challenge`; SessionError if not."""
    if reply.session_info is None:
        raise SessionError("the reply carries no session info")
    tag = reply.signature_data.session_info_tag if reply.signature_data else None
    if not tag:
        raise SessionError("the car's session info has no tag; discarded")
    if not crypto.session_info_valid(k, vin, challenge, reply.session_info, tag):
        raise SessionError("the car's session info tag does not verify; discarded")
    try:
        info = SessionInfo.decode(reply.session_info)
    except ValueError as err:
        raise SessionError(f"the car's session info is not readable: {err}") from err
    if info.status == SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST:
        raise SessionError("the car does not know our key (it is not on its whitelist)")
    return info


def start_session(vin: str, domain: Domain, info: SessionInfo, now: float) -> Session:
    """A session from verified handshake info received at wall-clock `now`."""
    if len(info.epoch) != EPOCH_BYTES:
        raise SessionError(f"the car's epoch has {len(info.epoch)} bytes, not {EPOCH_BYTES}")
    return Session(
        vin=vin,
        domain=domain,
        car_public_key=info.public_key,
        epoch=info.epoch,
        counter=info.counter,
        clock_zero=now - info.clock_time,
        set_time=info.clock_time,
    )


def resync(session: Session, info: SessionInfo, now: float) -> Session:
    """Adopt verified session info from a fault reply (Go's UpdateSessionInfo).

    A new epoch replaces everything; within the epoch only newer info moves the clock, and
    the counter never goes back.
    """
    if info.public_key != session.car_public_key:
        raise SessionError("the car's public key changed; a new handshake is needed")
    if info.epoch != session.epoch or session.set_time <= info.clock_time:
        counter = (
            info.counter if info.epoch != session.epoch else max(session.counter, info.counter)
        )
        return dataclasses.replace(
            session,
            epoch=info.epoch,
            counter=counter,
            clock_zero=now - info.clock_time,
            set_time=info.clock_time,
        )
    return session


def sign(
    session: Session,
    k: bytes,
    our_public: bytes,
    payload: bytes,
    *,
    now: float,
    uuid: bytes,
    address: bytes,
    lifetime: float = COMMAND_LIFETIME_SECS,
    flags: int = DEFAULT_FLAGS,
) -> Signed:
    """HMAC-sign `payload` for the session's domain with the next counter."""
    if session.counter >= COUNTER_MAX:
        raise SessionError("the anti-replay counter is exhausted; a new handshake is needed")
    counter = session.counter + 1
    expires_at = int(session.car_time(now) + lifetime)
    if not 0 <= expires_at <= COUNTER_MAX:
        raise SessionError("the car's clock is out of range; a new handshake is needed")
    meta = crypto.command_metadata(
        SignatureType.HMAC_PERSONALIZED,
        session.domain,
        session.vin,
        epoch=session.epoch,
        expires_at=expires_at,
        counter=counter,
        flags=flags,
    )
    tag = crypto.command_hmac_tag(k, meta, payload)
    message = RoutableMessage(
        to_destination=Destination(domain=session.domain),
        from_destination=Destination(routing_address=address),
        payload=payload,
        signature_data=SignatureData(
            signer_public_key=our_public,
            hmac_personalized=HmacPersonalized(session.epoch, counter, expires_at, tag),
        ),
        uuid=uuid,
        flags=flags,
    )
    return Signed(
        message,
        dataclasses.replace(session, counter=counter),
        crypto.request_hash(SignatureType.HMAC_PERSONALIZED, tag, session.domain),
    )


def open_reply(k: bytes, vin: str, reply: RoutableMessage, req_hash: bytes) -> bytes:
    """The reply's plaintext payload, decrypting it when the car encrypted it."""
    payload = reply.payload or b""
    gcm = reply.signature_data.aes_gcm_response if reply.signature_data else None
    if gcm is None:
        return payload
    domain = reply.from_destination.domain if reply.from_destination else None
    if domain is None:
        raise SessionError("an encrypted reply without its source domain")
    meta = crypto.response_metadata(
        domain, vin, counter=gcm.counter, flags=reply.flags, req_hash=req_hash, fault=reply.fault
    )
    try:
        return crypto.gcm_decrypt(k, gcm.nonce, payload, gcm.tag, meta)
    except ValueError as err:
        raise SessionError("the car's encrypted reply does not verify") from err
