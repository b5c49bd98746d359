"""Signed-command sessions on disk, so a restart costs no handshake (and no billed request).

One JSON file beside the token store, written atomically with mode 0600 after every signed
command (the counter must survive a crash: a counter used twice costs a re-sync). Entries are
keyed by VIN and domain and remember which of our public keys they belong to, so a new key
never reuses an old session. A file we cannot read is ignored (a handshake recovers), never
fatal.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tesla_smart_charger.car.signing.messages import Domain
from tesla_smart_charger.car.signing.session import EPOCH_BYTES, Session
from tesla_smart_charger.car.tokens import atomic_write_bytes

_LOGGER = logging.getLogger(__name__)

CACHE_FILE = "signing-sessions.json"
_VERSION = 1


def _entry(session: Session) -> dict[str, Any]:
    return {
        "car_public_key": session.car_public_key.hex(),
        "epoch": session.epoch.hex(),
        "counter": session.counter,
        "clock_zero": session.clock_zero,
        "set_time": session.set_time,
    }


def _session(vin: str, domain: Domain, entry: Any) -> Session | None:
    if not isinstance(entry, dict):
        return None
    try:
        epoch = bytes.fromhex(entry["epoch"])
        session = Session(
            vin=vin,
            domain=domain,
            car_public_key=bytes.fromhex(entry["car_public_key"]),
            epoch=epoch,
            counter=int(entry["counter"]),
            clock_zero=float(entry["clock_zero"]),
            set_time=int(entry["set_time"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if len(epoch) != EPOCH_BYTES or not 0 <= session.counter <= 0xFFFFFFFF:
        return None
    return session


class SessionCache:
    """`signing-sessions.json`: {"version", "key": our public key, "sessions": {VIN: {domain}}}."""

    def __init__(self, path: Path, our_public: bytes) -> None:
        self.path = path
        self._key = our_public.hex()

    def __repr__(self) -> str:
        return f"SessionCache({str(self.path)!r})"

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            _LOGGER.warning("ignoring the signing session cache %s (%s)", self.path, err)
            return {}
        if not isinstance(raw, dict) or raw.get("version") != _VERSION:
            return {}
        if raw.get("key") != self._key:
            return {}  # sessions of another key pair: useless with ours
        sessions = raw.get("sessions")
        return sessions if isinstance(sessions, dict) else {}

    def load(self, vin: str, domain: Domain) -> Session | None:
        """The cached session for this car and domain, if any and readable."""
        per_car = self._read().get(vin)
        if not isinstance(per_car, dict):
            return None
        return _session(vin, domain, per_car.get(str(int(domain))))

    def save(self, session: Session) -> None:
        """Store `session` (atomic, 0600); an I/O error is logged, the command still goes."""
        sessions = self._read()
        per_car = sessions.get(session.vin)
        if not isinstance(per_car, dict):
            per_car = {}
        per_car[str(int(session.domain))] = _entry(session)
        sessions[session.vin] = per_car
        data = {"version": _VERSION, "key": self._key, "sessions": sessions}
        try:
            atomic_write_bytes(self.path, (json.dumps(data, indent=1) + "\n").encode(), mode=0o600)
        except OSError as err:
            _LOGGER.warning("cannot write the signing session cache %s: %s", self.path, err)
            return

    def forget(self, vin: str, domain: Domain) -> None:
        """Drop a session the car no longer accepts."""
        sessions = self._read()
        per_car = sessions.get(vin)
        if isinstance(per_car, dict) and per_car.pop(str(int(domain)), None) is not None:
            data = {"version": _VERSION, "key": self._key, "sessions": sessions}
            try:
                atomic_write_bytes(self.path, json.dumps(data).encode(), mode=0o600)
            except OSError as err:
                _LOGGER.warning("cannot write the signing session cache %s: %s", self.path, err)
