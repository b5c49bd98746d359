"""The main breaker's heat in the running daemon: the conservative replica fed live readings.

It lives in the shell because it keeps mutable history and logs when the supply has been over
the rating too long; the replica itself is pure (control/breaker.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from tesla_smart_charger.control.breaker import (
    CONSERVATIVE,
    MAX_GAP_SECS,
    WARN_RATIO,
    Calibration,
    ThermalReplica,
)
from tesla_smart_charger.control.models import MeterReading

_LOG = logging.getLogger(__name__)


@dataclass
class BreakerMonitor:
    """The conservative replica fed by live meter readings, for /status, /metrics and /health.

    `rating` is homeMaxAmps (the supply's breaker). Each valid reading's currents are held until
    the next one; a gap longer than MAX_GAP_SECS is not integrated, so a meter outage neither
    heats nor cools the replica.

    The replica restarts cold after it trips (it counts trips for the benchmark), but a real
    house would be dark by then: a trip is latched as "over too long" until the supply is
    back at or under the rating, so /health cannot turn healthy on the reset alone.
    """

    rating: float
    cal: Calibration = CONSERVATIVE
    trips: int = field(default=0, init=False)  # modelled trips since the daemon started
    _replica: ThermalReplica | None = field(default=None, init=False, repr=False)
    _last: MeterReading | None = field(default=None, init=False, repr=False)
    _over_since: float | None = field(default=None, init=False, repr=False)
    _tripped: bool = field(default=False, init=False, repr=False)  # latched until back under

    def observe(self, reading: MeterReading | None) -> None:
        """Fold one reading in; runs in the controller's loop, so it never raises."""
        try:
            self._observe(reading)
        except Exception:  # noqa: BLE001 (a bug here must cost the gauge, never the controller)
            _LOG.exception("breaker model: could not fold a reading in")

    def _observe(self, reading: MeterReading | None) -> None:
        """An invalid, empty, non-finite or already seen reading is ignored."""
        if reading is None or not reading.valid or not reading.phase_amps:
            return
        if reading is self._last or not all(map(math.isfinite, reading.phase_amps)):
            return
        amps = [max(0.0, a) for a in reading.phase_amps]
        prev, replica = self._last, self._replica
        tripped = False
        if replica is None or prev is None or len(replica.heat) != len(amps):
            self._replica = ThermalReplica(self.cal, self.rating, amps)
        else:
            dt = reading.at - prev.at
            if 0.0 < dt <= MAX_GAP_SECS:
                # The previous currents held until now; the new ones count from here.
                tripped = replica.step([max(0.0, a) for a in prev.phase_amps], dt)
        self._last = reading
        self._latch(tripped, max(amps), reading.at)

    def _latch(self, tripped: bool, worst: float, at: float) -> None:
        """Keep "over too long" from a trip until the supply is back at or under the rating."""
        if tripped:
            self.trips += 1
            if not self._tripped:
                self._tripped = True
                _LOG.warning(
                    "main breaker: the supply has been over %g A for longer than a breaker"
                    " allows (the conservative model would have tripped)",
                    self.rating,
                )
        if worst > self.rating:
            if self._over_since is None:
                self._over_since = at
            return
        if self._tripped:
            _LOG.info("main breaker: the supply is back under %g A", self.rating)
        self._over_since = None
        self._tripped = False

    @property
    def over_too_long(self) -> bool:
        """The supply has been over the rating for longer than the model allows (latched)."""
        return self._tripped

    def heat_ratio(self) -> list[float] | None:
        """Heat per phase as a fraction of the trip heat; None before the first reading."""
        return None if self._replica is None else self._replica.ratio()

    def status(self) -> dict[str, object]:
        """The /status block: heat per phase in % of trip, and the calibration."""
        ratio = self.heat_ratio()
        return {
            "heat_pct": None if ratio is None else [round(100.0 * r, 1) for r in ratio],
            "calibration": f"{self.cal.name} (k {self.cal.k:g}, tau {self.cal.tau:g} s)",
            "rating_amps": self.rating,
            "trips": self.trips,
            "over_too_long": self._tripped,
        }

    def problem(self) -> str | None:
        """A /health reason in words: over the rating longer than the model allows (latched
        after a modelled trip), or a phase above WARN_RATIO of its trip heat."""
        if self._tripped:
            last = self._last
            secs = last.at - self._over_since if last and self._over_since is not None else 0.0
            return (
                f"main breaker overloaded: the supply has been over {self.rating:g} A for"
                f" {secs:.0f} s, longer than the conservative model allows (it would have"
                " tripped); the house load is too high"
            )
        ratio = self.heat_ratio()
        if not ratio or max(ratio) <= WARN_RATIO:
            return None
        phase = max(range(len(ratio)), key=ratio.__getitem__) + 1
        return (
            f"main breaker heating up: phase {phase} at {100.0 * ratio[phase - 1]:.0f} % of what"
            f" would trip a {self.rating:g} A breaker (conservative model); the house load is"
            " too high"
        )
