"""Typed RoutableMessage, SessionInfo and CarServer messages, and their wire encoding.

Field numbers are those of Tesla's universal_message.proto, signatures.proto and
car_server.proto (teslamotors/vehicle-command, pkg/protocol/protobuf). Fields are written in
the order Go's protobuf runtime writes them (plain fields by number, then oneof members), so
our bytes equal the Go client's byte for byte, which the protocol.md vectors check.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from tesla_smart_charger.car.signing.protobuf import DecodeError, Fields, Writer, decode, int32


class Domain(IntEnum):
    """UniversalMessage.Domain: which subsystem of the car a message is for."""

    BROADCAST = 0
    VEHICLE_SECURITY = 2
    INFOTAINMENT = 3


class SignatureType(IntEnum):
    """Signatures.SignatureType."""

    AES_GCM = 0
    AES_GCM_PERSONALIZED = 5
    HMAC = 6
    HMAC_PERSONALIZED = 8
    AES_GCM_RESPONSE = 9


class Tag(IntEnum):
    """Signatures.Tag: the keys of the metadata that every tag covers."""

    SIGNATURE_TYPE = 0
    DOMAIN = 1
    PERSONALIZATION = 2
    EPOCH = 3
    EXPIRES_AT = 4
    COUNTER = 5
    CHALLENGE = 6
    FLAGS = 7
    REQUEST_HASH = 8
    FAULT = 9
    END = 255


# UniversalMessage.Flags are bit positions in RoutableMessage.flags.
FLAG_ENCRYPT_RESPONSE = 1 << 1

# UniversalMessage.MessageFault_E, in words a home owner can act on.
FAULT_WORDS: dict[int, str] = {
    1: "the car is busy",
    2: "the car's subsystem did not answer in time",
    3: "the car does not know our key (pair it: open https://tesla.com/_ak/<your-domain>)",
    4: "our key has been disabled in the car",
    5: "the car says the command signature is wrong",
    6: "the car has already seen this command counter",
    7: "our key is not allowed to do this",
    8: "the command was addressed to the wrong part of the car",
    9: "the car does not know this command",
    10: "the car could not read the command",
    11: "internal error in the car",
    12: "the command was signed for another car (wrong VIN)",
    13: "the car rejected a parameter",
    14: "the car's keychain is full",
    15: "the car rebooted since our session began (new epoch)",
    16: "wrong nonce length",
    17: "the command expired before the car checked it (clocks out of step)",
    18: "the car has no VIN provisioned",
    19: "internal error in the car (metadata)",
    20: "the command lives too long for the car's taste",
    21: "mobile access is disabled in the car",
    22: "remote service access is disabled",
    23: "the command needs account credentials",
    24: "the request was too large",
    25: "the reply was too large",
    26: "the car has already seen this command counter",
    27: "unknown key handle",
    28: "the car requires encrypted replies",
}

# Faults whose reply carries fresh session info: re-sync and try once more.
RESYNC_FAULTS = frozenset({5, 6, 15, 17})


@dataclass(frozen=True, slots=True)
class Destination:
    """Either a car domain or a client's 16-byte routing address."""

    domain: Domain | None = None
    routing_address: bytes | None = None

    def encode(self) -> bytes:
        """Destination { oneof sub_destination { domain = 1; routing_address = 2 } }."""
        w = Writer()
        if self.domain is not None:
            w.uint(1, int(self.domain), always=True)
        if self.routing_address is not None:
            w.bytes_(2, self.routing_address, always=True)
        return w.finish()

    @staticmethod
    def decode(f: Fields | None) -> Destination | None:
        """None when absent."""
        if f is None:
            return None
        known = f.has(1) and f.uint(1) in {d.value for d in Domain}
        domain = Domain(f.uint(1)) if known else None
        return Destination(domain, f.bytes_(2) if f.has(2) else None)


@dataclass(frozen=True, slots=True)
class HmacPersonalized:
    """Signatures.HMAC_Personalized_Signature_Data: what a Fleet command is signed with."""

    epoch: bytes
    counter: int
    expires_at: int
    tag: bytes

    def encode(self) -> bytes:
        """epoch 1, counter 2 (uint32), expires_at 3 (fixed32), tag 4."""
        return (
            Writer()
            .bytes_(1, self.epoch)
            .uint(2, self.counter)
            .fixed32(3, self.expires_at)
            .bytes_(4, self.tag)
            .finish()
        )


@dataclass(frozen=True, slots=True)
class AesGcmPersonalized:
    """Signatures.AES_GCM_Personalized_Signature_Data (BLE; decoded for completeness)."""

    epoch: bytes
    nonce: bytes
    counter: int
    expires_at: int
    tag: bytes

    def encode(self) -> bytes:
        """epoch 1, nonce 2, counter 3, expires_at 4 (fixed32), tag 5."""
        return (
            Writer()
            .bytes_(1, self.epoch)
            .bytes_(2, self.nonce)
            .uint(3, self.counter)
            .fixed32(4, self.expires_at)
            .bytes_(5, self.tag)
            .finish()
        )


@dataclass(frozen=True, slots=True)
class AesGcmResponse:
    """Signatures.AES_GCM_Response_Signature_Data: an encrypted reply's nonce, counter, tag."""

    nonce: bytes
    counter: int
    tag: bytes

    def encode(self) -> bytes:
        """nonce 1, counter 2, tag 3."""
        return Writer().bytes_(1, self.nonce).uint(2, self.counter).bytes_(3, self.tag).finish()


@dataclass(frozen=True, slots=True)
class SignatureData:
    """Signatures.SignatureData: signer's public key and one kind of signature."""

    signer_public_key: bytes | None = None
    hmac_personalized: HmacPersonalized | None = None
    aes_gcm_personalized: AesGcmPersonalized | None = None
    session_info_tag: bytes | None = None
    aes_gcm_response: AesGcmResponse | None = None

    def encode(self) -> bytes:
        """signer_identity 1, then the oneof sig_type (5, 6, 8, 9)."""
        w = Writer()
        if self.signer_public_key is not None:
            w.message(1, Writer().bytes_(1, self.signer_public_key, always=True).finish())
        if self.aes_gcm_personalized is not None:
            w.message(5, self.aes_gcm_personalized.encode())
        if self.session_info_tag is not None:
            w.message(6, Writer().bytes_(1, self.session_info_tag).finish())
        if self.hmac_personalized is not None:
            w.message(8, self.hmac_personalized.encode())
        if self.aes_gcm_response is not None:
            w.message(9, self.aes_gcm_response.encode())
        return w.finish()

    @staticmethod
    def decode(f: Fields) -> SignatureData:
        """The fields we act on; others are ignored."""
        identity = f.message(1)
        hmac = f.message(8)
        gcm = f.message(5)
        tag = f.message(6)
        response = f.message(9)
        return SignatureData(
            signer_public_key=identity.bytes_(1) if identity is not None else None,
            hmac_personalized=(
                HmacPersonalized(hmac.bytes_(1), hmac.uint(2), hmac.uint(3), hmac.bytes_(4))
                if hmac is not None
                else None
            ),
            aes_gcm_personalized=(
                AesGcmPersonalized(
                    gcm.bytes_(1), gcm.bytes_(2), gcm.uint(3), gcm.uint(4), gcm.bytes_(5)
                )
                if gcm is not None
                else None
            ),
            session_info_tag=tag.bytes_(1) if tag is not None else None,
            aes_gcm_response=(
                AesGcmResponse(response.bytes_(1), response.uint(2), response.bytes_(3))
                if response is not None
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class RoutableMessage:
    """UniversalMessage.RoutableMessage: the envelope of every request and reply."""

    to_destination: Destination | None = None
    from_destination: Destination | None = None
    payload: bytes | None = None  # protobuf_message_as_bytes
    session_info_request: bytes | None = None  # the client's public key
    session_info_challenge: bytes | None = None
    session_info: bytes | None = None
    signature_data: SignatureData | None = None
    operation_status: int = 0
    fault: int = 0  # signedMessageStatus.signed_message_fault
    request_uuid: bytes = b""
    uuid: bytes = b""
    flags: int = 0

    def encode(self) -> bytes:
        """Plain fields by number (6, 7, 12, 50, 51, 52), then oneofs (10, 13, 14, 15)."""
        w = Writer()
        if self.to_destination is not None:
            w.message(6, self.to_destination.encode())
        if self.from_destination is not None:
            w.message(7, self.from_destination.encode())
        if self.operation_status or self.fault:
            status = Writer().uint(1, self.operation_status).uint(2, self.fault).finish()
            w.message(12, status)
        w.bytes_(50, self.request_uuid).bytes_(51, self.uuid).uint(52, self.flags)
        if self.payload is not None:
            w.bytes_(10, self.payload, always=True)
        if self.signature_data is not None:
            w.message(13, self.signature_data.encode())
        if self.session_info_request is not None:
            request = (
                Writer()
                .bytes_(1, self.session_info_request)
                .bytes_(2, self.session_info_challenge)
                .finish()
            )
            w.message(14, request)
        if self.session_info is not None:
            w.bytes_(15, self.session_info, always=True)
        return w.finish()

    @staticmethod
    def decode(data: bytes) -> RoutableMessage:
        """Parse a RoutableMessage; DecodeError when the bytes are not one."""
        f = decode(data)
        status = f.message(12)
        request = f.message(14)
        signature = f.message(13)
        return RoutableMessage(
            to_destination=Destination.decode(f.message(6)),
            from_destination=Destination.decode(f.message(7)),
            payload=f.bytes_(10) if f.has(10) else None,
            session_info_request=request.bytes_(1) if request is not None else None,
            session_info_challenge=request.bytes_(2) if request is not None else None,
            session_info=f.bytes_(15) if f.has(15) else None,
            signature_data=SignatureData.decode(signature) if signature is not None else None,
            operation_status=status.uint(1) if status is not None else 0,
            fault=status.uint(2) if status is not None else 0,
            request_uuid=f.bytes_(50),
            uuid=f.bytes_(51),
            flags=f.uint(52),
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Signatures.SessionInfo: the car's clock, counter, epoch and public key for a domain."""

    counter: int
    public_key: bytes
    epoch: bytes
    clock_time: int
    status: int = 0  # 1: our key is not on the car's whitelist
    handle: int = 0

    def encode(self) -> bytes:
        """counter 1, publicKey 2, epoch 3, clock_time 4 (fixed32), status 5, handle 6."""
        return (
            Writer()
            .uint(1, self.counter)
            .bytes_(2, self.public_key)
            .bytes_(3, self.epoch)
            .fixed32(4, self.clock_time)
            .uint(5, self.status)
            .uint(6, self.handle)
            .finish()
        )

    @staticmethod
    def decode(data: bytes) -> SessionInfo:
        """Parse; DecodeError when not a SessionInfo."""
        f = decode(data)
        return SessionInfo(
            counter=f.uint(1),
            public_key=f.bytes_(2),
            epoch=f.bytes_(3),
            clock_time=f.uint(4),
            status=f.uint(5),
            handle=f.uint(6),
        )


# --- CarServer (infotainment) ----------------------------------------------------------------

_VEHICLE_ACTION = 2  # Action.vehicleAction
_CHARGING_START_STOP = 6  # VehicleAction.chargingStartStopAction
_SET_CHARGING_AMPS = 43  # VehicleAction.setChargingAmpsAction
_START = 2  # ChargingStartStopAction.start
_STOP = 5  # ChargingStartStopAction.stop
VOID = b""


def _action(vehicle_action: bytes) -> bytes:
    return Writer().message(_VEHICLE_ACTION, vehicle_action).finish()


def set_charging_amps_action(amps: int) -> bytes:
    """CarServer.Action { vehicleAction { setChargingAmpsAction { charging_amps } } }."""
    inner = Writer().uint(1, amps).finish()
    return _action(Writer().message(_SET_CHARGING_AMPS, inner).finish())


def charge_start_action() -> bytes:
    """CarServer.Action { vehicleAction { chargingStartStopAction { start {} } } }."""
    inner = Writer().message(_START, VOID).finish()
    return _action(Writer().message(_CHARGING_START_STOP, inner).finish())


def charge_stop_action() -> bytes:
    """CarServer.Action { vehicleAction { chargingStartStopAction { stop {} } } }."""
    inner = Writer().message(_STOP, VOID).finish()
    return _action(Writer().message(_CHARGING_START_STOP, inner).finish())


@dataclass(frozen=True, slots=True)
class CarAction:
    """A decoded CarServer.Action: the command name and its JSON-like body (the simulator's)."""

    name: str
    body: dict[str, int]


def decode_action(data: bytes) -> CarAction:
    """The charging actions we send; DecodeError for anything else."""
    f = decode(data)
    vehicle = f.message(_VEHICLE_ACTION)
    if vehicle is None:
        raise DecodeError("Action.vehicleAction missing")
    amps = vehicle.message(_SET_CHARGING_AMPS)
    if amps is not None:
        return CarAction("set_charging_amps", {"charging_amps": int32(amps.uint(1))})
    start_stop = vehicle.message(_CHARGING_START_STOP)
    if start_stop is not None:
        if start_stop.has(_START):
            return CarAction("charge_start", {})
        if start_stop.has(_STOP):
            return CarAction("charge_stop", {})
    raise DecodeError(f"unsupported vehicle action (fields {sorted(vehicle.values)})")


@dataclass(frozen=True, slots=True)
class CarResponse:
    """CarServer.Response.actionStatus: OK, or an error with the car's reason."""

    ok: bool
    reason: str = ""

    def encode(self) -> bytes:
        """Response { actionStatus { result 1; result_reason { plain_text 1 } } }."""
        reason = Writer().bytes_(1, self.reason.encode()).finish() if self.reason else None
        status = Writer().uint(1, 0 if self.ok else 1)
        if reason is not None:
            status.message(2, reason)
        return Writer().message(1, status.finish()).finish()

    @staticmethod
    def decode(data: bytes) -> CarResponse:
        """A missing actionStatus means OK (proto3 leaves out a zero result)."""
        status = decode(data).message(1)
        if status is None:
            return CarResponse(True)
        reason = status.message(2)
        text = reason.bytes_(1).decode("utf-8", "replace") if reason is not None else ""
        return CarResponse(status.uint(1) == 0, text)
