"""Typed events on the one queue the charge controller consumes (never raw dicts)."""

from __future__ import annotations

import asyncio
from collections import deque
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
    already validated (`commands.parse_driver_limit`).
    """

    vin: str
    amps: int


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A person chose how the car charges: `fast`, `solar` or `minsolar` (issue 14).

    `mode` is already validated (`commands.DriverControls.set_mode`).
    """

    vin: str
    mode: str


@dataclass(frozen=True, slots=True)
class CarLinkBack:
    """The proxy's port accepts connections again after refusing them: a waiting cut may go."""

    at: float


Event = (
    Overload
    | Reading
    | MeterFailed
    | TokenRefreshed
    | AuthLost
    | DriverLimit
    | ModeChange
    | CarLinkBack
)


def _slot(event: Event) -> str | None:
    """Events of one slot replace each other in the queue: only the newest matters."""
    if isinstance(event, Reading | MeterFailed):
        return "meter"
    if isinstance(event, TokenRefreshed | AuthLost):
        return "auth"
    if isinstance(event, Overload):
        return "overload"
    if isinstance(event, DriverLimit):
        return "driver_limit"  # a slider dragged: only where it stopped matters
    if isinstance(event, CarLinkBack):
        return "link"
    return None


class EventQueue(asyncio.Queue[Event]):
    """The controller's queue: it coalesces, so it can never fill up and end the process.

    The controller needs only the newest meter reading and the newest auth news, and one
    queued overload stands for a burst. A new event of a kind already waiting replaces it
    (in place, so the order of kinds is kept); the queue thus holds at most one event per
    kind, whatever the producers do while the controller is busy with a slow car call.
    """

    def _init(self, maxsize: int) -> None:
        self._items: deque[Event] = deque()

    def qsize(self) -> int:
        """Number of events waiting."""
        return len(self._items)

    def full(self) -> bool:
        """Never full: a new event replaces a waiting one of its kind."""
        return False

    def _put(self, item: Event) -> None:
        slot = _slot(item)
        if slot is not None:
            for i, waiting in enumerate(self._items):
                if _slot(waiting) == slot:
                    self._items[i] = item
                    return
        self._items.append(item)

    def _get(self) -> Event:
        return self._items.popleft()

    def empty(self) -> bool:
        """True when no event waits."""
        return not self._items
