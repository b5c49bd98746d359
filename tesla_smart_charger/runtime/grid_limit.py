"""The grid operator's limit in the shell: its sources read, combined, said once, told to control.

Three sources may say the limit is on: a Shelly input on the control box's contact (polled
here through its own `RetryPolicy`), an MQTT topic (the Home Assistant bridge reports it) and
`POST /grid-limit`. `control.grid_limit.combine` decides; this module only keeps what each
source said last, puts one `GridLimitChanged` on the controller's queue when the result
changes, and logs each change once in words. A source not heard from within
START_GRACE_SECS of the start counts as lost, and so as on (fail-safe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from tesla_smart_charger.control.events import Event, GridLimitChanged
from tesla_smart_charger.control.grid_limit import (
    SOURCE_WORDS,
    Combined,
    SourceReading,
    car_watts,
    combine,
)
from tesla_smart_charger.errors import InputAuthError, InputError
from tesla_smart_charger.retry import FailureKind, RetryPolicy, _duration
from tesla_smart_charger.runtime.status import GridLimitSource, GridLimitView
from tesla_smart_charger.shelly.input import ShellyInput

_LOG = logging.getLogger(__name__)

# A configured source says nothing this long after the start: counted as lost (so on).
START_GRACE_SECS: Final = 10.0
# The input's policy backs off from 1 s to this: a refused device on the LAN costs nothing,
# and the limit must end within seconds of the contact reading off again.
INPUT_BACKOFF_CAP: Final = 5.0
SOURCES: Final = ("input", "mqtt", "api")


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


class GridLimitWatch:
    """What each source said, the combined limit, and the one line per change."""

    def __init__(
        self,
        *,
        limit_kw: float,
        cars: int,
        send: Callable[[Event], None],
        sources: Sequence[str] = ("api",),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        grace: float = START_GRACE_SECS,
    ) -> None:
        self.limit_kw = limit_kw
        self.car_watts = car_watts(limit_kw, cars)
        self._send = send
        self._clock = clock
        self._wall = wall
        self._grace = grace
        self._order = tuple(name for name in SOURCES if name in sources)
        started = clock()
        # Heard from: in `_readings`; configured but not heard from yet: in `_pending`.
        self._readings: dict[str, SourceReading] = {}
        self._pending = {name: started for name in self._order if name != "api"}
        if "api" in self._order:
            self._readings["api"] = SourceReading("inactive")
        self._api_used = False
        self._combined = Combined(False, (), (), "")
        self._since_mono: float | None = None
        self._since_wall: float | None = None
        self._sent_active = False

    @property
    def combined(self) -> Combined:
        """The limit as the sources said it last."""
        return self._combined

    @property
    def active(self) -> bool:
        """True while the chargers are held under gridLimitKw."""
        return self._combined.active

    def report(self, source: str, reading: SourceReading) -> None:
        """A source said something (or could not be read): decide again."""
        self._pending.pop(source, None)
        if self._readings.get(source) == reading:
            return
        self._readings[source] = reading
        self._update()

    @property
    def in_use(self) -> bool:
        """A source besides the API is configured, or the API has been used: worth showing."""
        return len(self._order) > 1 or self._api_used

    def set_api(self, active: bool) -> None:
        """`POST /grid-limit`."""
        self._api_used = True
        self.report("api", SourceReading("active" if active else "inactive"))

    def check_pending(self) -> None:
        """A source still silent after the grace counts as lost (on, to be safe)."""
        now = self._clock()
        for name, since in list(self._pending.items()):
            if now - since >= self._grace:
                self.report(
                    name,
                    SourceReading("lost", f"no word from it {self._grace:g} s after the start"),
                )

    def _update(self) -> None:
        ordered = {n: self._readings[n] for n in self._order if n in self._readings}
        new = combine(ordered)
        old = self._combined
        self._combined = new
        if new.active != self._sent_active:
            self._sent_active = new.active
            self._send(GridLimitChanged(self.car_watts if new.active else None, new.reason))
        if (new.active, new.sources) == (old.active, old.sources):
            return
        now = self._clock()
        if new.active and not old.active:
            self._since_mono, self._since_wall = now, self._wall()
            _LOG.warning(
                "Grid limit on: %s; the chargers together now draw at most %.1f kW",
                new.reason,
                self.limit_kw,
            )
        elif new.active:
            _LOG.warning("Grid limit still on, now because %s", new.reason)
        else:
            lasted = now - (self._since_mono if self._since_mono is not None else now)
            self._since_mono, self._since_wall = None, self._wall()
            _LOG.warning(
                "Grid limit ended after %s: every source reads off again; charging goes back "
                "up step by step",
                _duration(lasted),
            )

    # --- what the endpoints show ---------------------------------------------------------------

    def status(self) -> GridLimitView:
        """/status `grid_limit` and GET /grid-limit."""
        c = self._combined
        sources: dict[str, GridLimitSource] = {}
        for name in self._order:
            if name in self._pending:
                sources[name] = GridLimitSource(state="unknown", detail="not heard from yet")
            else:
                r = self._readings[name]
                sources[name] = GridLimitSource(state=r.state, detail=r.detail or None)
        return GridLimitView(
            active=c.active,
            source=c.source,
            since=_iso(self._since_wall),
            limit_kw=round(self.limit_kw, 3),
            car_kw=round(self.car_watts / 1000.0, 3),
            reason=c.reason or None,
            lost=list(c.lost),
            sources=sources,
        )

    def warning(self) -> str | None:
        """A /health warning while a source cannot be read (the breaker is still protected)."""
        lost = self._combined.lost
        if not lost:
            return None
        names = " and ".join(SOURCE_WORDS.get(n, n) for n in lost)
        return (
            f"grid limit: {names} cannot be read, so the chargers are held at "
            f"{self.limit_kw:.1f} kW to be safe until it reads off again"
        )


def input_policy() -> RetryPolicy:
    """The input's own retry policy; the watch says its conditions, the policy only counts."""
    return RetryPolicy(
        "grid limit input",
        cap=INPUT_BACKOFF_CAP,
        logger=logging.getLogger(__name__ + ".input"),
        say=False,
    )


async def poll_input(
    watch: GridLimitWatch,
    shelly: ShellyInput,
    policy: RetryPolicy,
    *,
    every: float,
    inverted: bool = False,
) -> None:
    """Read the input every `every` s (slower while its policy backs off); runs until cancelled."""
    while True:
        if policy.allowed():
            try:
                on = await shelly.read()
            except InputError as err:
                kind: FailureKind = "fault" if isinstance(err, InputAuthError) else "transient"
                policy.failure(kind, str(err))
                watch.report("input", SourceReading("lost", str(err)))
            else:
                policy.success()
                watch.report("input", SourceReading("active" if on != inverted else "inactive"))
        watch.check_pending()
        await asyncio.sleep(max(every, policy.wait_secs()))


async def watch_pending(watch: GridLimitWatch, every: float = 1.0) -> None:
    """Without an input to poll: still turn a silent source into a lost one after the grace."""
    while True:
        watch.check_pending()
        await asyncio.sleep(every)
