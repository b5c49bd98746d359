"""The simulated car's infotainment verifier: Tesla's vehicle-command protocol, car side.

It has its own P-256 key pair and a set of paired client keys. It answers session-info
requests with a correctly tagged SessionInfo, and verifies every signed command as the car
does (internal/authentication/verifier.go): domain, epoch, expiry on its own clock, the HMAC
tag over metadata that names its own VIN, and an anti-replay counter that must rise strictly
within the epoch. A failed check answers with a fault and, for the faults a client can recover
from (5, 6, 15, 17), fresh session info tagged for the failing request. Replies are encrypted
when the command asked for it (FLAG_ENCRYPT_RESPONSE).

Knobs for fault tests: `transit_secs` ages every command before the check (expired commands),
`corrupt_session_tags` sends wrong session-info tags (a tampering relay), `reboot()` starts a
new epoch.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric import ec

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.messages import (
    FLAG_ENCRYPT_RESPONSE,
    AesGcmResponse,
    CarAction,
    CarResponse,
    Destination,
    Domain,
    RoutableMessage,
    SessionInfo,
    SignatureData,
    SignatureType,
    decode_action,
)
from tesla_smart_charger.car.signing.protobuf import DecodeError

FAULT_UNKNOWN_KEY = 3
FAULT_INVALID_SIGNATURE = 5
FAULT_COUNTER = 6
FAULT_INVALID_DOMAINS = 8
FAULT_DECODING = 10
FAULT_BAD_PARAMETER = 13
FAULT_EPOCH = 15
FAULT_EXPIRED = 17
FAULT_TTL_TOO_LONG = 20
MAX_LIFETIME_SECS = 3600  # a command meant to live longer than this is refused (fault 20)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the car makes of one routable message: a reply, and the command if it is valid."""

    reply: RoutableMessage
    action: CarAction | None = None
    k: bytes | None = None  # the session key, to encrypt the application reply
    request_hash: bytes = b""


@dataclass
class SignedCar:
    """The infotainment domain of one simulated car (see the module docstring)."""

    vin: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    paired: set[bytes] = field(default_factory=set)  # clients' public keys (65 bytes)
    clock: Callable[[], float] = time.time
    transit_secs: float = 0.0
    corrupt_session_tags: bool = False
    epoch: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    handshakes: int = 0
    verified: int = 0
    faults: list[int] = field(default_factory=list)
    _start: float = field(default=0.0, init=False)
    _counters: dict[bytes, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._start = self.clock() - 1000.0  # the car has been up for a while

    @property
    def public(self) -> bytes:
        """The car's 65-byte public key."""
        return crypto.public_bytes(self.key)

    def pair(self, client_public: bytes) -> None:
        """Add a client key, as tapping the key card after `tesla.com/_ak/<domain>` does."""
        self.paired.add(client_public)

    def reboot(self) -> None:
        """A new epoch: old sessions fail with fault 15 and recover from its session info."""
        self.epoch = secrets.token_bytes(16)
        self._start = self.clock()
        self._counters.clear()

    def car_time(self) -> int:
        """Seconds since the epoch began, on the car's own clock."""
        return int(self.clock() - self._start)

    # --- the protocol ----------------------------------------------------------------------

    def handle(self, data: bytes) -> Verdict:
        """Process one routable message as the car would."""
        try:
            message = RoutableMessage.decode(data)
        except DecodeError:
            return self._fault(RoutableMessage(), FAULT_DECODING)
        domain = message.to_destination.domain if message.to_destination else None
        if domain is not Domain.INFOTAINMENT:
            return self._fault(message, FAULT_INVALID_DOMAINS)
        if message.session_info_request is not None:
            return self._hello(message, message.session_info_request)
        return self._verify(message)

    def _hello(self, message: RoutableMessage, client: bytes) -> Verdict:
        if client not in self.paired:
            return self._fault(message, FAULT_UNKNOWN_KEY)
        self.handshakes += 1
        k = crypto.shared_key(self.key, client)
        return Verdict(self._reply(message, session=(k, client)))

    def _verify(self, message: RoutableMessage) -> Verdict:
        sig = message.signature_data
        hmac_data = sig.hmac_personalized if sig else None
        client = sig.signer_public_key if sig else None
        if sig is None or hmac_data is None or client is None or message.payload is None:
            return self._fault(message, FAULT_BAD_PARAMETER)
        if client not in self.paired:
            return self._fault(message, FAULT_UNKNOWN_KEY)
        k = crypto.shared_key(self.key, client)
        session = (k, client)
        now = self.car_time() + self.transit_secs
        if hmac_data.epoch != self.epoch:
            return self._fault(message, FAULT_EPOCH, session)
        if hmac_data.expires_at < now:
            return self._fault(message, FAULT_EXPIRED, session)
        if hmac_data.expires_at - now > MAX_LIFETIME_SECS:
            return self._fault(message, FAULT_TTL_TOO_LONG, session)
        meta = crypto.command_metadata(
            SignatureType.HMAC_PERSONALIZED,
            Domain.INFOTAINMENT,
            self.vin,  # its own VIN: a command signed for another car fails here
            epoch=self.epoch,
            expires_at=hmac_data.expires_at,
            counter=hmac_data.counter,
            flags=message.flags,
        )
        expected = crypto.command_hmac_tag(k, meta, message.payload)
        if not secrets.compare_digest(expected, hmac_data.tag):
            return self._fault(message, FAULT_INVALID_SIGNATURE, session)
        if hmac_data.counter <= self._counters.get(client, 0):
            return self._fault(message, FAULT_COUNTER, session)
        self._counters[client] = hmac_data.counter
        try:
            action = decode_action(message.payload)
        except DecodeError:
            return self._fault(message, FAULT_DECODING)
        self.verified += 1
        req_hash = crypto.request_hash(
            SignatureType.HMAC_PERSONALIZED, hmac_data.tag, Domain.INFOTAINMENT
        )
        return Verdict(self._reply(message), action, k, req_hash)

    def answer(self, verdict: Verdict, response: CarResponse) -> RoutableMessage:
        """The reply to a verified command, with the car's result (encrypted if asked)."""
        reply = verdict.reply
        assert verdict.k is not None  # noqa: S101 - only verified commands are answered
        plaintext = response.encode()
        if not reply.flags & FLAG_ENCRYPT_RESPONSE:
            return replace(reply, payload=plaintext)
        counter = self._counters.get(b"responses", 0) + 1
        self._counters[b"responses"] = counter
        meta = crypto.response_metadata(
            Domain.INFOTAINMENT,
            self.vin,
            counter=counter,
            flags=reply.flags,
            req_hash=verdict.request_hash,
            fault=0,
        )
        nonce, ciphertext, tag = crypto.gcm_encrypt(verdict.k, plaintext, meta)
        return replace(
            reply,
            payload=ciphertext,
            signature_data=SignatureData(aes_gcm_response=AesGcmResponse(nonce, counter, tag)),
        )

    # --- replies ----------------------------------------------------------------------------

    def _session_info(self, client: bytes) -> bytes:
        return SessionInfo(
            counter=self._counters.get(client, 0),
            public_key=self.public,
            epoch=self.epoch,
            clock_time=self.car_time(),
        ).encode()

    def _reply(
        self,
        message: RoutableMessage,
        *,
        fault: int = 0,
        session: tuple[bytes, bytes] | None = None,
    ) -> RoutableMessage:
        source = message.from_destination
        info = tag = None
        if session is not None:
            k, client = session
            info = self._session_info(client)
            tag = crypto.session_info_tag(k, self.vin, message.uuid, info)
            if self.corrupt_session_tags:
                tag = bytes(b ^ 0x55 for b in tag)
        return RoutableMessage(
            to_destination=Destination(routing_address=source.routing_address if source else b""),
            from_destination=Destination(domain=Domain.INFOTAINMENT),
            session_info=info,
            signature_data=SignatureData(session_info_tag=tag) if tag is not None else None,
            fault=fault,
            request_uuid=message.uuid,
            flags=message.flags,
        )

    def _fault(
        self, message: RoutableMessage, fault: int, session: tuple[bytes, bytes] | None = None
    ) -> Verdict:
        self.faults.append(fault)
        return Verdict(self._reply(message, fault=fault, session=session))
