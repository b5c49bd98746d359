"""Every worked example of Tesla's protocol.md (vehicle-command, pkg/protocol), byte for byte.

The expected values are copied from the document, never computed by our code, so these tests
hold our encoder, key agreement, metadata and tags to Tesla's own numbers.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.messages import (
    AesGcmResponse,
    Destination,
    Domain,
    RoutableMessage,
    SessionInfo,
    SignatureData,
    SignatureType,
    Tag,
)
from tesla_smart_charger.car.signing.protobuf import Writer
from tesla_smart_charger.car.signing.session import (
    Session,
    SessionError,
    open_reply,
    resync,
    sign,
    verified_info,
)
from tesla_smart_charger.config.keys import load_private_key

VEHICLE_KEY = """-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIDRO5bRmp88e6xK29QMx2y5exYNO9fS+/P2MvlXCUo1woAoGCCqGSM49
AwEHoUQDQgAEx6H0cThIaqRymXFJSHjTOxok45Vx90im4WxZVbPYd9OmqqDpVRZk
dK9dMsQQ9DmiI0E3rRuwhf1OiBPJWPEdlw==
-----END EC PRIVATE KEY-----
"""
VEHICLE_PUBLIC = (
    "04c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3"
    "a6aaa0e955166474af5d32c410f439a2234137ad1bb085fd4e8813c958f11d97"
)
CLIENT_KEY = """-----BEGIN EC PRIVATE KEY-----
MHcCAQEEICU4zcKal8GcHpmmN9bPT4yXDBGLVu3h5jI+bRYsSzDboAoGCCqGSM49
AwEHoUQDQgAEsra8aMLaBmXOZWgVWUmWxiOU7di+qQX+eBp1T+aoRacUMwkC8iXp
Jp1GbgWzSZgf2p2FzCPG+0RKpztikQXcbg==
-----END EC PRIVATE KEY-----
"""
CLIENT_PUBLIC = (
    "04b2b6bc68c2da0665ce656815594996c62394edd8bea905fe781a754fe6a845a7"
    "14330902f225e9269d466e05b349981fda9d85cc23c6fb444aa73b629105dc6e"
)
K = bytes.fromhex("1b2fce19967b79db696f909cff89ea9a")
VIN = "5YJ30123456789ABC"
EPOCH = bytes.fromhex("4c463f9cc0d3d26906e982ed224adde6")
CHALLENGE = bytes.fromhex("1588d5a30eabc6f8fc9a951b11f6fd11")
SESSION_INFO = bytes.fromhex(
    "0806124104c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3"
    "a6aaa0e955166474af5d32c410f439a2234137ad1bb085fd4e8813c958f11d971a104c463f9c"
    "c0d3d26906e982ed224adde6255a0a0000"
)
SESSION_INFO_TAG = bytes.fromhex("996c1fe38331be138f8039c194b14db2198846ed7d8251e6749284d7b32ea002")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    vehicle, client = tmp_path / "vehicle.key", tmp_path / "client.key"
    vehicle.write_text(VEHICLE_KEY)
    client.write_text(CLIENT_KEY)
    return vehicle, client


def test_tlv_of_a_vin_and_a_counter() -> None:
    assert crypto.metadata([(Tag.PERSONALIZATION, b"abc")]).hex() == "0203616263ff"
    assert crypto.metadata([(Tag.COUNTER, crypto.uint32(100))]).hex() == "050400000064ff"
    serialized = crypto.metadata([(Tag.PERSONALIZATION, b"abc"), (Tag.COUNTER, crypto.uint32(100))])
    assert serialized.hex() == "0203616263050400000064ff"


def test_metadata_refuses_tags_out_of_order() -> None:
    with pytest.raises(ValueError, match="increasing order"):
        crypto.metadata([(Tag.COUNTER, b"\x00"), (Tag.PERSONALIZATION, b"abc")])


def test_test_keys_encode_as_published(keys: tuple[Path, Path]) -> None:
    vehicle, client = (load_private_key(p) for p in keys)
    assert crypto.public_bytes(vehicle).hex() == VEHICLE_PUBLIC
    assert crypto.public_bytes(client).hex() == CLIENT_PUBLIC
    assert vehicle.private_numbers().private_value == int(
        "344EE5B466A7CF1EEB12B6F50331DB2E5EC5834EF5F4BEFCFD8CBE55C2528D70", 16
    )


def test_shared_key_k_from_either_side(keys: tuple[Path, Path]) -> None:
    vehicle, client = (load_private_key(p) for p in keys)
    assert crypto.shared_key(client, bytes.fromhex(VEHICLE_PUBLIC)) == K
    assert crypto.shared_key(vehicle, bytes.fromhex(CLIENT_PUBLIC)) == K


def test_session_info_key() -> None:
    assert crypto.subkey(K, b"session info").hex() == (
        "fceb679ee7bca756fcd441bf238bf2f338629b41d9eb9c67be1b32c9672ce300"
    )


def test_session_info_metadata_and_tag() -> None:
    assert crypto.session_info_metadata(VIN, CHALLENGE).hex() == (
        "000106021135594a333031323334353637383941424306101588d5a30eabc6f8fc9a951b11f6fd11ff"
    )
    assert crypto.session_info_tag(K, VIN, CHALLENGE, SESSION_INFO) == SESSION_INFO_TAG


def test_session_info_decodes_and_reencodes_identically() -> None:
    info = SessionInfo.decode(SESSION_INFO)
    assert info.counter == 6
    assert info.public_key.hex() == VEHICLE_PUBLIC
    assert info.epoch == EPOCH
    assert info.clock_time == 2650
    assert info.encode() == SESSION_INFO


def _example_response(tag: bytes = SESSION_INFO_TAG) -> RoutableMessage:
    return RoutableMessage(
        to_destination=Destination(
            routing_address=bytes.fromhex("2c907bd76c640d360b3027dc7404efde")
        ),
        from_destination=Destination(domain=Domain.INFOTAINMENT),
        session_info=SESSION_INFO,
        signature_data=SignatureData(session_info_tag=tag),
        request_uuid=CHALLENGE,
    )


def test_handshake_response_accepted_with_its_tag() -> None:
    reply = RoutableMessage.decode(_example_response().encode())
    info = verified_info(K, VIN, CHALLENGE, reply)
    assert (info.counter, info.clock_time, info.epoch) == (6, 2650, EPOCH)


@pytest.mark.parametrize(
    ("vin", "challenge", "tag"),
    [
        ("5YJ30123456789ABD", CHALLENGE, SESSION_INFO_TAG),  # another car
        (VIN, bytes(16), SESSION_INFO_TAG),  # not our request
        (VIN, CHALLENGE, SESSION_INFO_TAG[:-1] + b"\x00"),  # a modified tag
    ],
)
def test_handshake_response_discarded_when_tag_does_not_verify(
    vin: str, challenge: bytes, tag: bytes
) -> None:
    with pytest.raises(SessionError, match="does not verify"):
        verified_info(K, vin, challenge, _example_response(tag))


def test_debug_line_of_tesla_control_encodes_byte_for_byte() -> None:
    tx = bytes.fromhex(
        "320208023a1212100a7962c10d38b61dd2a7722780a4f0969a031005514f57616bcc81a8ce0f9d7b"
        "48322952040a020805"
    )
    message = RoutableMessage(
        to_destination=Destination(domain=Domain.VEHICLE_SECURITY),
        from_destination=Destination(
            routing_address=bytes.fromhex("0a7962c10d38b61dd2a7722780a4f096")
        ),
        payload=bytes.fromhex("0a020805"),
        uuid=bytes.fromhex("05514f57616bcc81a8ce0f9d7b483229"),
    )
    assert message.encode() == tx
    assert RoutableMessage.decode(tx) == message


def test_hvac_action_encoding() -> None:
    hvac = Writer().uint(1, 1).finish()  # HvacAutoAction { power_on: true }
    vehicle_action = Writer().message(10, hvac).finish()
    assert Writer().message(2, vehicle_action).finish().hex() == "120452020801"


AES_METADATA = (
    "000105010103021135594a333031323334353637383941424303104c463f9cc0d3d26906e982ed224adde6"
    "040400000a5f050400000007ff"
)


def test_command_metadata_of_the_aes_gcm_example() -> None:
    meta = crypto.command_metadata(
        SignatureType.AES_GCM_PERSONALIZED,
        Domain.INFOTAINMENT,
        VIN,
        epoch=EPOCH,
        expires_at=2655,
        counter=7,
        flags=0,
    )
    assert meta.hex() == AES_METADATA


def test_aes_gcm_example_decrypts_to_the_hvac_command() -> None:
    plaintext = crypto.gcm_decrypt(
        K,
        bytes.fromhex("dbf79447fa156674dae1caed"),
        bytes.fromhex("38038e8c0f2e"),
        bytes.fromhex("8e128da165f162f4d7d2c8da866cf82a"),
        bytes.fromhex(AES_METADATA),
    )
    assert plaintext.hex() == "120452020801"
    with pytest.raises(ValueError, match="does not verify"):
        crypto.gcm_decrypt(
            K,
            bytes.fromhex("dbf79447fa156674dae1caed"),
            bytes.fromhex("38038e8c0f2f"),
            bytes.fromhex("8e128da165f162f4d7d2c8da866cf82a"),
            bytes.fromhex(AES_METADATA),
        )


def test_flags_enter_command_metadata_only_when_set() -> None:
    without = crypto.command_metadata(
        SignatureType.HMAC_PERSONALIZED,
        Domain.INFOTAINMENT,
        VIN,
        epoch=EPOCH,
        expires_at=2655,
        counter=7,
        flags=0,
    )
    with_flags = crypto.command_metadata(
        SignatureType.HMAC_PERSONALIZED,
        Domain.INFOTAINMENT,
        VIN,
        epoch=EPOCH,
        expires_at=2655,
        counter=7,
        flags=2,
    )
    assert not without.endswith(bytes.fromhex("070400000002ff"))
    assert with_flags == without[:-1] + bytes.fromhex("070400000002ff")


def test_hmac_tag_follows_the_documented_formula() -> None:
    meta = crypto.command_metadata(
        SignatureType.HMAC_PERSONALIZED,
        Domain.INFOTAINMENT,
        VIN,
        epoch=EPOCH,
        expires_at=2655,
        counter=7,
        flags=2,
    )
    payload = bytes.fromhex("120452020801")
    k_prime = hmac.new(K, b"authenticated command", hashlib.sha256).digest()
    expected = hmac.new(k_prime, meta + payload, hashlib.sha256).digest()
    assert crypto.command_hmac_tag(K, meta, payload) == expected


# --- session rules (pure functions; Go's UpdateSessionInfo and response decryption) ----------


def _session(counter: int = 10, set_time: int = 2650) -> Session:
    return Session(VIN, Domain.INFOTAINMENT, bytes.fromhex(VEHICLE_PUBLIC), EPOCH, counter,
                   clock_zero=1000.0, set_time=set_time)  # fmt: skip


def _info(counter: int, epoch: bytes = EPOCH, clock: int = 2700) -> SessionInfo:
    return SessionInfo(counter, bytes.fromhex(VEHICLE_PUBLIC), epoch, clock)


def test_resync_never_rolls_the_counter_back_within_an_epoch() -> None:
    assert resync(_session(counter=10), _info(counter=4), now=5000.0).counter == 10
    assert resync(_session(counter=10), _info(counter=15), now=5000.0).counter == 15
    fresh = resync(_session(counter=10), _info(counter=2, epoch=bytes(16)), now=5000.0)
    assert (fresh.counter, fresh.epoch) == (2, bytes(16))  # a new epoch starts over
    assert fresh.car_time(5000.0) == 2700


def test_resync_ignores_older_clock_info_of_the_same_epoch() -> None:
    session = _session(set_time=3000)
    assert resync(session, _info(counter=20, clock=2900), now=9999.0) == session


def test_resync_refuses_another_car_key() -> None:
    other = SessionInfo(10, bytes.fromhex(CLIENT_PUBLIC), EPOCH, 2700)
    with pytest.raises(SessionError, match="public key changed"):
        resync(_session(), other, now=5000.0)


def test_sign_advances_the_counter_and_expires_after_the_lifetime() -> None:
    signed = sign(_session(counter=10), K, bytes.fromhex(CLIENT_PUBLIC), b"\x12\x00",
                  now=1000.0 + 2650, uuid=CHALLENGE, address=bytes(16))  # fmt: skip
    data = signed.message.signature_data
    assert data is not None
    assert data.hmac_personalized is not None
    assert (data.hmac_personalized.counter, signed.session.counter) == (11, 11)
    assert data.hmac_personalized.expires_at == 2650 + 10
    assert signed.message.flags == 2
    assert signed.request_hash == bytes((SignatureType.HMAC_PERSONALIZED,)) + (
        data.hmac_personalized.tag
    )


def test_encrypted_reply_opens_only_with_its_request_hash() -> None:
    req_hash = bytes((SignatureType.HMAC_PERSONALIZED,)) + bytes(32)
    meta = crypto.response_metadata(
        Domain.INFOTAINMENT, VIN, counter=3, flags=2, req_hash=req_hash, fault=0
    )
    nonce, ciphertext, tag = crypto.gcm_encrypt(K, b"\x0a\x00", meta)
    reply = RoutableMessage(
        from_destination=Destination(domain=Domain.INFOTAINMENT),
        payload=ciphertext,
        signature_data=SignatureData(aes_gcm_response=AesGcmResponse(nonce, 3, tag)),
        flags=2,
    )
    assert open_reply(K, VIN, reply, req_hash) == b"\x0a\x00"
    with pytest.raises(SessionError, match="does not verify"):
        open_reply(K, VIN, reply, req_hash[:-1] + b"\x01")  # a reply to another request
    plain = RoutableMessage(payload=b"\x0a\x00")  # firmware before 2024.38 ignores the flag
    assert open_reply(K, VIN, plain, req_hash) == b"\x0a\x00"


def test_vcsec_request_hash_is_truncated() -> None:
    tag = bytes(range(32))
    assert (
        len(crypto.request_hash(SignatureType.HMAC_PERSONALIZED, tag, Domain.VEHICLE_SECURITY))
        == 17
    )
    assert len(crypto.request_hash(SignatureType.HMAC_PERSONALIZED, tag, Domain.INFOTAINMENT)) == 33
