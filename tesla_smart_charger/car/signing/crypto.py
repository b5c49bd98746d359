"""The protocol's cryptography, as pure functions over bytes (protocol.md, "Key Agreement" on).

ECDH P-256 and SHA-1 give the shared key K; HMAC-SHA256 subkeys of K sign commands and
authenticate the car's session info; AES-GCM under K encrypts replies. All from
`cryptography`; tags are compared in constant time. Nothing here keeps state or does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tesla_smart_charger.car.signing.messages import Domain, SignatureType, Tag
from tesla_smart_charger.config.keys import SigningKeyError

LABEL_SESSION_INFO = b"session info"
LABEL_COMMAND = b"authenticated command"
SHARED_KEY_BYTES = 16
NONCE_BYTES = 12


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """ENCODE_PUBLIC: the 65-byte uncompressed point 0x04 || X || Y."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def shared_key(private: ec.EllipticCurvePrivateKey, peer_public: bytes) -> bytes:
    """K = SHA1(BIG_ENDIAN(Sx, 32))[:16] with S = ECDH(private, peer)."""
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public)
    except ValueError as err:
        raise SigningKeyError("the car's public key is not a P-256 point") from err
    secret = private.exchange(ec.ECDH(), peer)  # the 32-byte big-endian x coordinate
    return hashlib.sha1(secret, usedforsecurity=True).digest()[:SHARED_KEY_BYTES]  # noqa: S324 - the protocol's KDF


def subkey(k: bytes, label: bytes) -> bytes:
    """HMAC-SHA256(K, label): "session info" or "authenticated command"."""
    return hmac.new(k, label, hashlib.sha256).digest()


def uint32(value: int) -> bytes:
    """Metadata integers are 4-byte big-endian."""
    return struct.pack(">I", value & 0xFFFFFFFF)


def metadata(items: Iterable[tuple[Tag, bytes]]) -> bytes:
    """TLV-serialise (tag, value) pairs in ascending tag order and end with 0xFF."""
    out = bytearray()
    last = -1
    for tag, value in items:
        if tag <= last:
            raise ValueError("metadata tags must be added in increasing order")
        if len(value) > 255:
            raise ValueError(f"metadata value for {tag.name} is longer than 255 bytes")
        out += bytes((tag, len(value))) + value
        last = tag
    out.append(Tag.END)
    return bytes(out)


def session_info_metadata(vin: str, challenge: bytes) -> bytes:
    """What the car's session-info tag covers besides the info itself."""
    return metadata(
        [
            (Tag.SIGNATURE_TYPE, bytes((SignatureType.HMAC,))),
            (Tag.PERSONALIZATION, vin.encode()),
            (Tag.CHALLENGE, challenge),
        ]
    )


def session_info_tag(k: bytes, vin: str, challenge: bytes, encoded_info: bytes) -> bytes:
    """HMAC-SHA256(HMAC(K, "session info"), METADATA || SESSION_INFO)."""
    meta = session_info_metadata(vin, challenge)
    return hmac.new(subkey(k, LABEL_SESSION_INFO), meta + encoded_info, hashlib.sha256).digest()


def session_info_valid(
    k: bytes, vin: str, challenge: bytes, encoded_info: bytes, tag: bytes
) -> bool:
    """Constant-time check of the car's session-info tag."""
    return hmac.compare_digest(session_info_tag(k, vin, challenge, encoded_info), tag)


def command_metadata(
    signature_type: SignatureType,
    domain: Domain,
    vin: str,
    *,
    epoch: bytes,
    expires_at: int,
    counter: int,
    flags: int,
) -> bytes:
    """M for a command: type, domain, VIN, epoch, expiry, counter, and flags when non-zero."""
    items = [
        (Tag.SIGNATURE_TYPE, bytes((signature_type,))),
        (Tag.DOMAIN, bytes((domain,))),
        (Tag.PERSONALIZATION, vin.encode()),
        (Tag.EPOCH, epoch),
        (Tag.EXPIRES_AT, uint32(expires_at)),
        (Tag.COUNTER, uint32(counter)),
    ]
    if flags:
        items.append((Tag.FLAGS, uint32(flags)))
    return metadata(items)


def command_hmac_tag(k: bytes, meta: bytes, payload: bytes) -> bytes:
    """tag = HMAC-SHA256(HMAC(K, "authenticated command"), M || P)."""
    return hmac.new(subkey(k, LABEL_COMMAND), meta + payload, hashlib.sha256).digest()


def request_hash(signature_type: SignatureType, tag: bytes, domain: Domain) -> bytes:
    """The request's type byte and tag (first 16 bytes of an HMAC tag for VCSEC)."""
    if signature_type is SignatureType.HMAC_PERSONALIZED and domain is Domain.VEHICLE_SECURITY:
        tag = tag[:16]
    return bytes((signature_type,)) + tag


def response_metadata(
    domain: Domain, vin: str, *, counter: int, flags: int, req_hash: bytes, fault: int
) -> bytes:
    """The reply's AES-GCM associated data before hashing (flags and fault always present)."""
    return metadata(
        [
            (Tag.SIGNATURE_TYPE, bytes((SignatureType.AES_GCM_RESPONSE,))),
            (Tag.DOMAIN, bytes((domain,))),
            (Tag.PERSONALIZATION, vin.encode()),
            (Tag.COUNTER, uint32(counter)),
            (Tag.FLAGS, uint32(flags)),
            (Tag.REQUEST_HASH, req_hash),
            (Tag.FAULT, uint32(fault)),
        ]
    )


def gcm_encrypt(
    k: bytes, plaintext: bytes, meta: bytes, nonce: bytes | None = None
) -> tuple[bytes, bytes, bytes]:
    """(nonce, ciphertext, tag) with AAD = SHA256(meta); a fresh random nonce unless given."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    sealed = AESGCM(k).encrypt(nonce, plaintext, hashlib.sha256(meta).digest())
    return nonce, sealed[:-16], sealed[-16:]


def gcm_decrypt(k: bytes, nonce: bytes, ciphertext: bytes, tag: bytes, meta: bytes) -> bytes:
    """The plaintext; ValueError when the tag does not verify."""
    try:
        return AESGCM(k).decrypt(nonce, ciphertext + tag, hashlib.sha256(meta).digest())
    except InvalidTag as err:
        raise ValueError("AES-GCM tag does not verify") from err
