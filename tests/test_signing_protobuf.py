"""Our wire encoding against Google's protobuf runtime (a test-only dependency).

`tesla-protocol` (generated bindings of Tesla's .proto files) is not on our package index, so
the messages are declared here from Tesla's field numbers and types (universal_message.proto,
signatures.proto, car_server.proto) and parsed and built by Google's own implementation: an
encoder or decoder bug of ours cannot hide behind the same bug on the other side. Enums are
declared as their varint type, which is wire-identical.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tesla_smart_charger.signing import crypto
from tesla_smart_charger.signing.messages import (
    CarResponse,
    Domain,
    RoutableMessage,
    SessionInfo,
    SignatureType,
    charge_start_action,
    charge_stop_action,
    decode_action,
    set_charging_amps_action,
)
from tesla_smart_charger.signing.session import (
    Session,
    handshake_request,
    new_address,
    new_uuid,
    sign,
)

pb = pytest.importorskip("google.protobuf", reason="protobuf (test extra) is not installed")

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

F = descriptor_pb2.FieldDescriptorProto
BYTES, U32, I32, FIX32, MSG, STR = (
    F.TYPE_BYTES, F.TYPE_UINT32, F.TYPE_INT32, F.TYPE_FIXED32, F.TYPE_MESSAGE, F.TYPE_STRING,
)  # fmt: skip
PKG = "tsc.crosscheck"
VIN = "5YJ3E1EA7KF000001"

# name: (oneof names, [(field, number, type, message type or "", oneof index or None)])
MESSAGES: dict[str, tuple[tuple[str, ...], list[tuple[str, int, int, str, int | None]]]] = {
    "Destination": (("sub_destination",), [
        ("domain", 1, U32, "", 0), ("routing_address", 2, BYTES, "", 0),
    ]),
    "MessageStatus": ((), [("operation_status", 1, U32, "", None),
                           ("signed_message_fault", 2, U32, "", None)]),
    "SessionInfoRequest": ((), [("public_key", 1, BYTES, "", None),
                                ("challenge", 2, BYTES, "", None)]),
    "KeyIdentity": (("identity_type",), [("public_key", 1, BYTES, "", 0),
                                         ("handle", 3, U32, "", 0)]),
    "AesGcmPersonalized": ((), [
        ("epoch", 1, BYTES, "", None), ("nonce", 2, BYTES, "", None),
        ("counter", 3, U32, "", None), ("expires_at", 4, FIX32, "", None),
        ("tag", 5, BYTES, "", None),
    ]),
    "AesGcmResponse": ((), [("nonce", 1, BYTES, "", None), ("counter", 2, U32, "", None),
                            ("tag", 3, BYTES, "", None)]),
    "HmacSignature": ((), [("tag", 1, BYTES, "", None)]),
    "HmacPersonalized": ((), [
        ("epoch", 1, BYTES, "", None), ("counter", 2, U32, "", None),
        ("expires_at", 3, FIX32, "", None), ("tag", 4, BYTES, "", None),
    ]),
    "SignatureData": (("sig_type",), [
        ("signer_identity", 1, MSG, "KeyIdentity", None),
        ("AES_GCM_Personalized_data", 5, MSG, "AesGcmPersonalized", 0),
        ("session_info_tag", 6, MSG, "HmacSignature", 0),
        ("HMAC_Personalized_data", 8, MSG, "HmacPersonalized", 0),
        ("AES_GCM_Response_data", 9, MSG, "AesGcmResponse", 0),
    ]),
    "RoutableMessage": (("payload", "sub_sigData"), [
        ("to_destination", 6, MSG, "Destination", None),
        ("from_destination", 7, MSG, "Destination", None),
        ("protobuf_message_as_bytes", 10, BYTES, "", 0),
        ("session_info_request", 14, MSG, "SessionInfoRequest", 0),
        ("session_info", 15, BYTES, "", 0),
        ("signature_data", 13, MSG, "SignatureData", 1),
        ("signedMessageStatus", 12, MSG, "MessageStatus", None),
        ("request_uuid", 50, BYTES, "", None), ("uuid", 51, BYTES, "", None),
        ("flags", 52, U32, "", None),
    ]),
    "SessionInfo": ((), [
        ("counter", 1, U32, "", None), ("publicKey", 2, BYTES, "", None),
        ("epoch", 3, BYTES, "", None), ("clock_time", 4, FIX32, "", None),
        ("status", 5, U32, "", None), ("handle", 6, U32, "", None),
    ]),
    "Void": ((), []),
    "SetChargingAmpsAction": ((), [("charging_amps", 1, I32, "", None)]),
    "ChargingStartStopAction": (("charging_action",), [
        ("unknown", 1, MSG, "Void", 0), ("start", 2, MSG, "Void", 0),
        ("start_standard", 3, MSG, "Void", 0), ("start_max_range", 4, MSG, "Void", 0),
        ("stop", 5, MSG, "Void", 0),
    ]),
    "VehicleAction": (("vehicle_action_msg",), [
        ("chargingStartStopAction", 6, MSG, "ChargingStartStopAction", 0),
        ("setChargingAmpsAction", 43, MSG, "SetChargingAmpsAction", 0),
    ]),
    "Action": (("action_msg",), [("vehicleAction", 2, MSG, "VehicleAction", 0)]),
    "ResultReason": (("reason",), [("plain_text", 1, STR, "", 0)]),
    "ActionStatus": ((), [("result", 1, U32, "", None),
                          ("result_reason", 2, MSG, "ResultReason", None)]),
    "Response": ((), [("actionStatus", 1, MSG, "ActionStatus", None)]),
}  # fmt: skip


@pytest.fixture(scope="module")
def types() -> dict[str, Any]:
    """Google message classes for the declarations above."""
    fdp = descriptor_pb2.FileDescriptorProto(name="crosscheck.proto", package=PKG, syntax="proto3")
    for name, (oneofs, fields) in MESSAGES.items():
        message = fdp.message_type.add(name=name)
        for oneof in oneofs:
            message.oneof_decl.add(name=oneof)
        for field, number, kind, type_name, oneof_index in fields:
            f = message.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".{PKG}.{type_name}"
            if oneof_index is not None:
                f.oneof_index = oneof_index
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PKG}.{name}"))
        for name in MESSAGES
    }


def signed_command() -> tuple[Session, Any]:
    session = Session(
        vin=VIN,
        domain=Domain.INFOTAINMENT,
        car_public_key=b"\x04" + bytes(64),
        epoch=bytes(range(16)),
        counter=41,
        clock_zero=time.time() - 5000,
        set_time=5000,
    )
    signed = sign(
        session,
        bytes(16),
        b"\x04" + b"\x11" * 64,
        set_charging_amps_action(13),
        now=time.time(),
        uuid=new_uuid(),
        address=new_address(),
    )
    return session, signed


def test_signed_command_parses_field_by_field_in_googles_runtime(types: dict[str, Any]) -> None:
    _, signed = signed_command()
    ours = signed.message
    theirs = types["RoutableMessage"]()
    theirs.ParseFromString(ours.encode())
    assert theirs.to_destination.domain == 3
    assert theirs.from_destination.routing_address == ours.from_destination.routing_address
    assert theirs.WhichOneof("payload") == "protobuf_message_as_bytes"
    assert theirs.protobuf_message_as_bytes == ours.payload
    sig = theirs.signature_data
    assert sig.signer_identity.public_key == b"\x04" + b"\x11" * 64
    assert sig.WhichOneof("sig_type") == "HMAC_Personalized_data"
    hmac_data = ours.signature_data.hmac_personalized
    assert hmac_data is not None
    assert sig.HMAC_Personalized_data.epoch == bytes(range(16))
    assert sig.HMAC_Personalized_data.counter == 42
    assert sig.HMAC_Personalized_data.expires_at == hmac_data.expires_at
    assert 5000 < sig.HMAC_Personalized_data.expires_at <= 5011
    assert sig.HMAC_Personalized_data.tag == hmac_data.tag
    assert len(theirs.uuid) == 16
    assert theirs.uuid == ours.uuid
    assert theirs.flags == 2  # 1 << FLAG_ENCRYPT_RESPONSE
    assert not theirs.HasField("signedMessageStatus")
    action = types["Action"]()
    action.ParseFromString(theirs.protobuf_message_as_bytes)
    assert action.vehicleAction.setChargingAmpsAction.charging_amps == 13


def test_handshake_request_parses_in_googles_runtime(types: dict[str, Any]) -> None:
    uuid, address, public = new_uuid(), new_address(), b"\x04" + b"\x22" * 64
    theirs = types["RoutableMessage"]()
    theirs.ParseFromString(
        handshake_request(Domain.INFOTAINMENT, public, uuid=uuid, address=address).encode()
    )
    assert theirs.WhichOneof("payload") == "session_info_request"
    assert theirs.session_info_request.public_key == public
    assert theirs.uuid == uuid
    assert theirs.to_destination.domain == 3
    assert theirs.from_destination.routing_address == address


@pytest.mark.parametrize(
    ("action", "which"),
    [(charge_start_action(), "start"), (charge_stop_action(), "stop")],
)
def test_charge_start_stop_parse_in_googles_runtime(
    types: dict[str, Any], action: bytes, which: str
) -> None:
    theirs = types["Action"]()
    theirs.ParseFromString(action)
    vehicle = theirs.vehicleAction
    assert vehicle.WhichOneof("vehicle_action_msg") == "chargingStartStopAction"
    assert vehicle.chargingStartStopAction.WhichOneof("charging_action") == which
    assert decode_action(theirs.SerializeToString()).name == f"charge_{which}"


def test_googles_reply_with_session_info_and_fault_decodes_in_ours(types: dict[str, Any]) -> None:
    info = types["SessionInfo"](
        counter=7, publicKey=b"\x04" + b"\x33" * 64, epoch=b"e" * 16, clock_time=123456
    )
    reply = types["RoutableMessage"]()
    reply.to_destination.routing_address = b"r" * 16
    reply.from_destination.domain = 3
    reply.session_info = info.SerializeToString()
    reply.signature_data.session_info_tag.tag = b"t" * 32
    reply.signedMessageStatus.signed_message_fault = 17
    reply.request_uuid = b"u" * 16
    reply.flags = 2
    ours = RoutableMessage.decode(reply.SerializeToString())
    assert ours.from_destination is not None
    assert ours.from_destination.domain is Domain.INFOTAINMENT
    assert ours.to_destination is not None
    assert ours.to_destination.routing_address == b"r" * 16
    assert ours.fault == 17
    assert ours.request_uuid == b"u" * 16
    assert ours.flags == 2
    assert ours.signature_data is not None
    assert ours.signature_data.session_info_tag == b"t" * 32
    assert ours.session_info is not None
    decoded = SessionInfo.decode(ours.session_info)
    assert (decoded.counter, decoded.epoch, decoded.clock_time) == (7, b"e" * 16, 123456)
    # And back: Google reads our SessionInfo identically.
    again = types["SessionInfo"]()
    again.ParseFromString(decoded.encode())
    assert again == info


def test_googles_encrypted_reply_metadata_fields_decode_in_ours(types: dict[str, Any]) -> None:
    reply = types["RoutableMessage"]()
    reply.from_destination.domain = 3
    reply.protobuf_message_as_bytes = b"\x01\x02"
    reply.signature_data.AES_GCM_Response_data.nonce = b"n" * 12
    reply.signature_data.AES_GCM_Response_data.counter = 9
    reply.signature_data.AES_GCM_Response_data.tag = b"g" * 16
    ours = RoutableMessage.decode(reply.SerializeToString())
    assert ours.signature_data is not None
    assert ours.signature_data.aes_gcm_response is not None
    gcm = ours.signature_data.aes_gcm_response
    assert (gcm.nonce, gcm.counter, gcm.tag) == (b"n" * 12, 9, b"g" * 16)
    assert ours.payload == b"\x01\x02"


def test_car_response_both_ways(types: dict[str, Any]) -> None:
    refused = types["Response"]()
    refused.actionStatus.result = 1
    refused.actionStatus.result_reason.plain_text = "is_charging"
    assert CarResponse.decode(refused.SerializeToString()) == CarResponse(False, "is_charging")
    assert CarResponse.decode(types["Response"]().SerializeToString()) == CarResponse(True)
    theirs = types["Response"]()
    theirs.ParseFromString(CarResponse(False, "complete").encode())
    assert theirs.actionStatus.result == 1
    assert theirs.actionStatus.result_reason.plain_text == "complete"


def test_our_tag_verifies_with_the_fields_google_parsed(types: dict[str, Any]) -> None:
    """The car recomputes the tag from what it parsed: do that from Google's parse."""
    _, signed = signed_command()
    theirs = types["RoutableMessage"]()
    theirs.ParseFromString(signed.message.encode())
    data = theirs.signature_data.HMAC_Personalized_data
    meta = crypto.command_metadata(
        SignatureType.HMAC_PERSONALIZED,
        Domain(theirs.to_destination.domain),
        VIN,
        epoch=data.epoch,
        expires_at=data.expires_at,
        counter=data.counter,
        flags=theirs.flags,
    )
    assert crypto.command_hmac_tag(bytes(16), meta, theirs.protobuf_message_as_bytes) == data.tag
