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

`runtime.breaker_monitor.BreakerMonitor` is the live use: the daemon feeds it every meter reading and shows the heat
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
import math
from collections.abc import Sequence
from dataclasses import dataclass


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


# --- what /health warns at (the live monitor is runtime/breaker_monitor.py) -------------------

WARN_RATIO = 0.9  # /health reports a problem above 90 % of the trip heat
MAX_GAP_SECS = 30.0  # a longer silence between readings is not integrated (no data, no guess)
