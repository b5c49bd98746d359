"""What trips a breaker: a thermal replica of a miniature circuit breaker, and a gG fuse peer.

A breaker's thermal release heats roughly with I² and cools with a time constant, so a house
already at 0.9 In has used most of its margin and a short 2 In spike hurts more than a long
1.03 In load. The replica is the usual first-order model, per phase, in units of (I/In)²:

    H' = ((I/In)² - H) / τ        trips when H > k²

warm-started at the preload (H = (I0/In)²: the house has been drawing I0 for a while). Steady
current below k·In never trips; above it the time to trip from heat H0 is
τ·ln((x² - H0) / (x² - k²)) with x = I/In.

Two calibrations, both inside IEC 60898-1's gates (tests/unit/test_breaker.py pins them):
- CONSERVATIVE (k 1.13, τ 40 s): trips at the standard's non-tripping current and fast: from
  cold 1.45 In in 37 s, 2 In in 15 s, 2.55 In in 9 s. Real breakers are slower, so "no trip
  here" is a strong claim.
- TYPICAL (k 1.30, τ 190 s): closer to a real B/C curve: 1.45 In in 5 min, 2.55 In in 57 s.

Limits: one time constant cannot fit a real curve everywhere. It is conservative for long
small overloads (a real breaker at 1.2 In takes tens of minutes, the conservative replica
about 90 s), and the magnetic release (3-20 In, instant) is out of scope: a charger
cannot cause it.

`BreakerMonitor` is the live use: the daemon feeds it every meter reading and shows the heat
in /status, /metrics and on the dashboard. It is a measure and a warning, never a licence to
overload. The controller uses the conservative calibration only to pause sooner: an overload
the car cannot resolve at its minimum is paused (pauseWhenOverloaded, on by default) before
this replica, starting from a house at its limit, would reach the /health warning (and
within half its time to trip: `pause_deadline`), if that is sooner than pauseAfterSecs; and at
once (once it has lasted carSettleSecs) when its own copy of the replica on the real supply
(`advance_heat`) is past the warning: a breaker warm before the overload, or heated by the
cars' ramp down, is not left to the closed form.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tesla_smart_charger.control.models import MeterReading

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Calibration:
    """One thermal replica's parameters: trip ratio `k` (x In) and time constant `tau` (s)."""

    name: str
    k: float
    tau: float

    @property
    def trip_heat(self) -> float:
        """The heat (in (I/In)² units) above which the replica trips."""
        return self.k * self.k

    def time_to_trip(self, multiple: float, heat: float = 0.0) -> float:
        """Seconds until a steady `multiple` x In trips it from `heat` (inf if never)."""
        x2 = multiple * multiple
        if x2 <= self.trip_heat:
            return math.inf
        if heat > self.trip_heat:
            return 0.0
        return self.tau * math.log((x2 - heat) / (x2 - self.trip_heat))


CONSERVATIVE = Calibration("conservative", 1.13, 40.0)
TYPICAL = Calibration("typical", 1.30, 190.0)
CALIBRATIONS = (CONSERVATIVE, TYPICAL)

# The heat a pause deadline starts from: a house that has been at its limit for a while.
PAUSE_START_HEAT = 1.0


def pause_deadline(multiple: float, cal: Calibration = CONSERVATIVE) -> float:
    """Seconds an overload of `multiple` x In may last before the car must be paused.

    From a house at its limit (heat 1.0), the sooner of: half the time `cal` needs to trip
    (the margin covers a breaker already warmer than that and the pause taking a few seconds
    to land), and the time until it reaches /health's warning (WARN_RATIO of the trip heat),
    so the controller never heads into its own warning by design. inf when neither comes at
    that current, so only pauseAfterSecs applies.
    """
    half = 0.5 * cal.time_to_trip(multiple, PAUSE_START_HEAT)
    x2 = multiple * multiple
    warn = WARN_RATIO * cal.trip_heat
    if x2 <= warn or warn <= PAUSE_START_HEAT:
        return half
    return min(half, cal.tau * math.log((x2 - PAUSE_START_HEAT) / (x2 - warn)))


def advance_heat(
    heat: Sequence[float], amps: Sequence[float], dt: float, rating: float
) -> tuple[float, ...]:
    """The conservative replica's heat per phase after `amps` held for `dt` seconds.

    Pure, for the controller: the heat of the real supply it tracks reading by reading, so a
    pause is not late when the overload began from a warm breaker or with a spike the closed
    form (`pause_deadline`) does not see. A warm start (`heat` of another length) takes the
    currents as held for a while, but no warmer than a house at its limit (PAUSE_START_HEAT,
    what `pause_deadline` starts from: the history before the first reading is unknown); a gap
    longer than MAX_GAP_SECS or a non-finite current changes nothing; a trip does not reset it
    (it only matters before one).
    """
    if rating <= 0 or not all(map(math.isfinite, amps)):
        return tuple(heat)
    inv = 1.0 / (rating * rating)
    target = [max(0.0, a) ** 2 * inv for a in amps]
    if len(heat) != len(amps):
        return tuple(min(t, PAUSE_START_HEAT) for t in target)
    if not 0.0 < dt <= MAX_GAP_SECS:
        return tuple(heat)
    decay = math.exp(-dt / CONSERVATIVE.tau)
    return tuple(t + (h - t) * decay for h, t in zip(heat, target, strict=True))


class ThermalReplica:
    """The replica's heat per phase, advanced with the exact solution for a constant current.

    After a trip the phase restarts from cold (the house was dark until someone reset it).
    """

    __slots__ = ("_decay", "_inv_rating2", "cal", "heat", "peak", "rating", "trips")

    def __init__(self, cal: Calibration, rating: float, preload: Sequence[float]) -> None:
        if rating <= 0:
            raise ValueError(f"breaker rating must be positive, got {rating!r}")
        self.cal = cal
        self.rating = rating
        self._inv_rating2 = 1.0 / (rating * rating)
        self.heat = [a * a * self._inv_rating2 for a in preload]
        self.trips = 0
        self.peak = max(self.heat) if self.heat else 0.0
        self._decay = math.exp(-1.0 / cal.tau)

    def step(self, amps: Sequence[float], dt: float = 1.0) -> bool:
        """Hold `amps` per phase for `dt` seconds; True if a phase tripped."""
        decay = self._decay if dt == 1.0 else math.exp(-dt / self.cal.tau)
        limit = self.cal.trip_heat
        tripped = False
        heat = self.heat
        for i, a in enumerate(amps):
            target = a * a * self._inv_rating2
            h = target + (heat[i] - target) * decay
            if h > limit:
                self.trips += 1
                tripped = True
                self.peak = max(self.peak, h)
                h = 0.0
            elif h > self.peak:
                self.peak = h
            heat[i] = h
        return tripped

    def ratio(self) -> list[float]:
        """Heat per phase as a fraction of the trip heat (1.0 = trips)."""
        return [h / self.cal.trip_heat for h in self.heat]


# --- the gG fuse peer --------------------------------------------------------------------------

# A typical gG pre-arcing (melting) characteristic in multiples of In, drawn through IEC
# 60269-2's gates for 16-63 A: conventional non-fusing current 1.25 In (>= 1 h), conventional
# fusing current 1.6 In (melts within 1 h), at least 10 s at about 2 In, at most 5 s at about
# 4 In; 2 In melts in about 20 min (13-30 min across 16-100 A ratings).
FUSE_NON_FUSING = 1.25
FUSE_CURVE: tuple[tuple[float, float], ...] = (
    (1.6, 3000.0),
    (2.0, 1200.0),
    (2.5, 180.0),
    (3.0, 40.0),
    (4.0, 4.5),
    (6.0, 0.8),
    (10.0, 0.08),
)
FUSE_COOL_TAU = 600.0  # s: how fast accumulated pre-arcing damage fades below 1.25 In (assumed)


def fuse_melting_time(multiple: float) -> float:
    """Seconds a gG fuse carries a steady `multiple` x In before melting (inf below 1.25 In)."""
    if multiple <= FUSE_NON_FUSING:
        return math.inf
    xs = [x for x, _ in FUSE_CURVE]
    if multiple >= xs[-1]:
        return FUSE_CURVE[-1][1]
    if multiple <= xs[0]:
        # Between the non-fusing current and 1.6 In: the time grows without bound toward 1.25 In.
        x0, t0 = FUSE_CURVE[0]
        return t0 * (x0 - FUSE_NON_FUSING) / (multiple - FUSE_NON_FUSING)
    i = bisect.bisect_right(xs, multiple)
    (x0, t0), (x1, t1) = FUSE_CURVE[i - 1], FUSE_CURVE[i]
    slope = math.log(t1 / t0) / math.log(x1 / x0)
    return t0 * math.exp(slope * math.log(multiple / x0))


class FuseReplica:
    """Pre-arcing damage per phase (Miner's rule on the melting curve); melts at 1.0.

    Below the non-fusing current the damage fades with FUSE_COOL_TAU. After a melt the phase
    restarts at zero (a new fuse).
    """

    __slots__ = ("damage", "melts", "peak", "rating")

    def __init__(self, rating: float, phases: int) -> None:
        self.rating = rating
        self.damage = [0.0] * phases
        self.melts = 0
        self.peak = 0.0

    def step(self, amps: Sequence[float], dt: float = 1.0) -> bool:
        """Hold `amps` per phase for `dt` seconds; True if a fuse melted."""
        melted = False
        for i, a in enumerate(amps):
            multiple = a / self.rating
            d = self.damage[i]
            if multiple > FUSE_NON_FUSING:
                d += dt / fuse_melting_time(multiple)
            elif d > 0.0:
                d *= math.exp(-dt / FUSE_COOL_TAU)
                if d < 1e-9:
                    d = 0.0
            else:
                continue
            if d >= 1.0:
                self.melts += 1
                melted = True
                self.peak = max(self.peak, d)
                d = 0.0
            elif d > self.peak:
                self.peak = d
            self.damage[i] = d
        return melted


# --- live use ----------------------------------------------------------------------------------

WARN_RATIO = 0.9  # /health reports a problem above 90 % of the trip heat
MAX_GAP_SECS = 30.0  # a longer silence between readings is not integrated (no data, no guess)


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
