"""The signing key file teslaPrivateKey names: read and checked here, where the settings are.

Both the configuration check (check-config, the daemon's start) and the signer load the key
with this one function, so they agree on what a usable key is, and the settings need not
import the signer to check it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class SigningKeyError(ValueError):
    """A private or public key that is not a usable P-256 key."""


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in `path` (SEC1 "EC PRIVATE KEY" or PKCS#8 PEM, as keygen writes)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SigningKeyError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"{path} is not a P-256 (prime256v1) key")
    return key
