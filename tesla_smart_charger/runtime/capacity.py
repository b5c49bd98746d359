"""The capacity tariff guard's shell: the wall clock, the random start delay, what /status shows.

The arithmetic is `control.capacity` (pure); this keeps its window between readings, reads the
wall clock (windows follow it: :00, :15, ...) and draws the random delay for a boundary. The
meter poller asks it for each valid reading's import ceiling, which the controller applies as
one more ceiling beside the breaker's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime

from tesla_smart_charger.control import capacity as cap
from tesla_smart_charger.control.models import MeterReading

_LOG = logging.getLogger(__name__)

# A new window raises the ceiling by more than this (about one amp at 230 V): a raise is due.
RAISE_STEP_W = 200.0


def local_now() -> datetime:
    """The wall clock in the local time zone (the tariff's windows and months are local)."""
    return datetime.now().astimezone()


class StartDelay:
    """randomStartDelaySecs: a random wait in [0, N] for the starts and raises after a boundary."""

    def __init__(self, secs: float, rng: random.Random | None = None) -> None:
        self.secs = secs
        self._rng = rng or random.SystemRandom()

    def draw(self) -> float:
        """One delay in seconds (0 when the key is 0)."""
        return self._rng.uniform(0.0, self.secs) if self.secs > 0 else 0.0


class CapacityGuard:
    """Keeps the current window and turns each reading into the import the window allows."""

    def __init__(
        self,
        cfg: cap.CapacityConfig,
        *,
        wall: Callable[[], datetime] = local_now,
        delay: StartDelay | None = None,
    ) -> None:
        self.cfg = cfg
        self._wall = wall
        self._delay = delay or StartDelay(0.0)
        self.window = cap.start(wall(), cfg)
        self.ceiling_w: float | None = None
        self.power_w: float | None = None
        # Whether a controller holds its car below the breaker's room for it (set by the daemon).
        self.bound: Callable[[], bool] = lambda: False
        self._over_logged = False

    def observe(self, reading: MeterReading) -> tuple[float, float | None]:
        """(the import ceiling in W, no raise before this monotonic time or None) for a reading."""
        wall = self._wall()
        watts = cap.power_w(reading.phase_amps, reading.phase_volts)
        self.window = cap.advance(self.window, watts, wall, self.cfg)
        self.power_w = watts
        before, self.ceiling_w = self.ceiling_w, cap.import_ceiling_w(self.window, wall, self.cfg)
        hold = None
        if self.window.boundary:
            self._log_window()
            # Only where the new window lets the cars raise (the last one ended tight): a
            # window that starts as the last one went on changes nothing to delay.
            if before is not None and self.ceiling_w > before + RAISE_STEP_W:
                wait = self._delay.draw()
                hold = reading.at + wait if wait > 0 else None
        return self.ceiling_w, hold

    def _log_window(self) -> None:
        """A window that ended over the limit is said once, in words; back under, once."""
        last = self.window.last_window_kw
        if last is None:
            return
        over = last > self.cfg.limit_kw
        if over and not self._over_logged:
            _LOG.warning(
                "capacity tariff: the last %d-minute window averaged %.2f kW, over the %.2f kW"
                " import limit (a load came too late in it to be made up for)",
                self.cfg.window_mins,
                last,
                self.cfg.limit_kw,
            )
        elif not over and self._over_logged:
            _LOG.info(
                "capacity tariff: windows are back under the %.2f kW import limit",
                self.cfg.limit_kw,
            )
        self._over_logged = over

    def projection_kw(self) -> float | None:
        """The window's average if the import stays as it is until the window ends."""
        if self.power_w is None:
            return None
        return cap.projection_kw(self.window, self.power_w, self._wall(), self.cfg)

    def average_kw(self) -> float:
        """The window's average import so far."""
        return cap.average_kw(self.window, self._wall())
