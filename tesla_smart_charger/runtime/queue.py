"""The controller's event queue: it coalesces, so producers can never fill it."""

from __future__ import annotations

import asyncio
from collections import deque

from tesla_smart_charger.control.events import (
    AuthLost,
    CarLinkBack,
    DriverLimit,
    Event,
    GridLimitChanged,
    MeterFailed,
    Overload,
    Reading,
    TokenRefreshed,
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
    if isinstance(event, GridLimitChanged):
        return "grid_limit"  # only the newest word of the grid operator matters
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
