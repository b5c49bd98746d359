"""Typed events on the one queue the charge controller consumes (never raw dicts)."""

from __future__ import annotations

from dataclasses import dataclass

from tesla_smart_charger.control.models import MeterReading


@dataclass(frozen=True, slots=True)
class Overload:
    """`/overload` was called (Shelly URL action, webhook, or a person)."""

    at: float
    source: str = "http"


@dataclass(frozen=True, slots=True)
class Reading:
    """The meter poller produced a reading (valid or not).

    With several cars each car's controller gets its share (`reading`) and, for its
    escalation, the real reading it was split from (`whole`: the breaker is judged on that)
    and `room_worst` (the house without cars plus the other cars' minimums on its phases: its
    minimum must fit under the limit beside them before it resumes).
    """

    reading: MeterReading
    whole: MeterReading | None = None
    room_worst: float | None = None
    # Several cars: this car gives its turn to one of the same priority that has had less
    # (its share shows it just over the limit, so it pauses after pauseAfterSecs).
    giving_turn: bool = False
    # Capacity tariff: the house's import (W) the window allows from now on (None: no guard).
    import_ceiling_w: float | None = None
    # randomStartDelaySecs: a boundary was crossed; no start or raise before this (monotonic).
    hold_raises_until: float | None = None


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


@dataclass(frozen=True, slots=True)
class DriverLimit:
    """A person set the car's amps ceiling (HTTP `/vehicles/{vin}/limit` or Home Assistant).

    Handled like the driver's own setting in the app: the last writer wins. `amps` is
    already validated (`runtime.driver.parse_driver_limit`).
    """

    vin: str
    amps: int


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A person chose how the car charges: `fast`, `solar` or `minsolar`.

    `mode` is already validated (`runtime.driver.DriverControls.set_mode`).
    """

    vin: str
    mode: str


@dataclass(frozen=True, slots=True)
class CarLinkBack:
    """The proxy's port accepts connections again after refusing them: a waiting cut may go."""

    at: float


@dataclass(frozen=True, slots=True)
class GridLimitChanged:
    """The grid operator's limit came on, changed or ended.

    `car_watts` is this car's share of `gridLimitKw` in W (None: the limit ended); the
    controller turns it into amps (`control.grid_limit.ceiling_amps`). `reason` in words.
    """

    car_watts: float | None
    reason: str = ""


Event = (
    Overload
    | Reading
    | MeterFailed
    | TokenRefreshed
    | AuthLost
    | DriverLimit
    | ModeChange
    | CarLinkBack
    | GridLimitChanged
)
