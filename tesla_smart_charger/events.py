"""Typed events on the one queue the charge controller consumes (never raw dicts)."""

from __future__ import annotations

from dataclasses import dataclass

from tesla_smart_charger.models import MeterReading


@dataclass(frozen=True, slots=True)
class Overload:
    """`/overload` was called (Shelly URL action, webhook, or a person)."""

    at: float
    source: str = "http"


@dataclass(frozen=True, slots=True)
class Reading:
    """The meter poller produced a reading (valid or not)."""

    reading: MeterReading


@dataclass(frozen=True, slots=True)
class MeterFailed:
    """The meter poll failed; `error` is a one-line reason without secrets."""

    at: float
    error: str
    auth: bool = False


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """The token task stored a new token pair; a held-back command may go now."""

    at: float


@dataclass(frozen=True, slots=True)
class AuthLost:
    """The refresh token is no longer accepted: the owner must log in again."""

    at: float
    reason: str


Event = Overload | Reading | MeterFailed | TokenRefreshed | AuthLost
