"""What every table of the benchmark shares: the model, the traces, the metrics and a result.

Kept apart from the tables (evening, roads, solar) and the shell runner so that none of them
imports another: each imports this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol

from tesla_smart_charger import control as core
from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.const import PRICE_PER_CALL
from tesla_smart_charger.control import breaker
from tesla_smart_charger.simulator import house as houses
from tesla_smart_charger.simulator.car import BillingCounter, CarModel

# --- the model (documented in docs/benchmarks.md) ----------------------------------------------

VOLTS = 230.0
COMMAND_LATENCY = 1.0  # s from sending a command to the car acting on it (and the reply)
DATA_LATENCY = 0.5  # s for one data read (vehicle state or vehicle_data)
RAMP_DELAY = 3.0  # s from the car accepting a setpoint to drawing the new current
DRIVER_AMPS = 16  # the driver's own setting; the EVSE pilot is 16 A too
CHARGER_MAX_AMPS = 16
CHARGER_MIN_AMPS = 6
HOUR = 3600.0
DAY = 24 * HOUR
PLUG_IN_HOUR = 18.0  # the week: plugged 18:00 -> 07:00 every day
UNPLUG_HOUR = 7.0

# The original project (seed) and the evcc-like policy.
STEP_SLEEP_SECS = 20.0  # sleepTimeSecs
STEP_DOWN = 0.5  # downStepPercentage
STEP_STABILISE_ROUNDS = 10
STEP_NO_CHANGE_ROUNDS = 5
STEP_RETRIES = 5  # its @retry on any error, 408 included
STEP_RETRY_WAIT = 4.0
EVCC_INTERVAL = 30  # s, evcc's default `interval` (cmd/setup.go)
EVCC_FAST_INTERVAL = 10  # s, the shortest interval evcc's docs call possible (sensitivity row)
EVCC_DATA_CACHE = 900.0

POLICIES = (
    "step",
    "evcc-like",
    "evcc-10s",
    "ours",
    "ours-min0",
    "oracle-matched",
    "oracle-held",
    "oracle",
)
INTERVALS = {"evcc-like": EVCC_INTERVAL, "evcc-10s": EVCC_FAST_INTERVAL}  # tick offsets vary
Phases = tuple[float, ...]


# --- traces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """A house load sampled once a second plus when the car is plugged in."""

    key: str
    title: str
    phases: int
    limit: float  # homeMaxAmps per phase
    house: tuple[Phases, ...]  # house load per phase at t = 0, 1, 2, ... s
    plugged_at_start: bool
    plug_changes: tuple[tuple[int, bool], ...] = ()  # (second, plugged) after the start
    seed: int = 0

    @property
    def seconds(self) -> int:
        """Length of the trace in seconds."""
        return len(self.house)


TRACE_KEYS = ("winter-evening", "random-week", "three-phase-evening")
# Each trace's reference seed (the simulator's default); variance runs use seed, seed+1, ...
BASE_SEEDS = {"winter-evening": 1, "random-week": 7, "three-phase-evening": 3}


def _plugged(hour_of_day: float) -> bool:
    return hour_of_day >= PLUG_IN_HOUR or hour_of_day < UNPLUG_HOUR


@functools.lru_cache(maxsize=8)
def build_trace(key: str, *, seed: int | None = None, quick: bool = False) -> Trace:
    """The named reference trace at `seed`; `quick` keeps a short window of it (for the tests)."""
    if key not in BASE_SEEDS:
        raise ValueError(f"unknown trace {key!r}; one of {', '.join(TRACE_KEYS)}")
    seed = BASE_SEEDS[key] if seed is None else seed
    if key == "winter-evening":
        h = houses.winter_evening(seed)
        stop = 2400 if quick else int(h.duration)
        return Trace(
            key,
            "winter evening 17:00-20:00 (1 phase, homeMaxAmps 30 A)",
            1,
            30.0,
            tuple(h.sample(0.0, stop)),
            True,
            seed=seed,
        )
    if key == "three-phase-evening":
        h = houses.three_phase_evening(seed)
        stop = 2400 if quick else int(h.duration)
        return Trace(
            key,
            "three-phase evening 17:00-20:00 (3 x 25 A, 3-phase car)",
            3,
            25.0,
            tuple(h.sample(0.0, stop)),
            True,
            seed=seed,
        )
    days = houses.random_week(seed)
    if quick:
        days = days[:1]
    samples: list[Phases] = []
    for day in days:
        samples.extend(day.sample(0.0, DAY))
    start, stop = (int(17.5 * HOUR), int(18.5 * HOUR)) if quick else (0, len(samples))
    changes: list[tuple[int, bool]] = []
    for index in range(len(days)):
        for hour, plugged in ((UNPLUG_HOUR, False), (PLUG_IN_HOUR, True)):
            t = int(index * DAY + hour * HOUR)
            if start < t < stop:
                changes.append((t - start, plugged))
    title = "random week, 7 seeded days (1 phase, 30 A; car plugged 18:00-07:00)"
    if quick:
        title = "random week, day 1 17:30-18:30 (1 phase, 30 A; car plugged at 18:00)"
    return Trace(
        key,
        title,
        1,
        30.0,
        tuple(samples[start:stop]),
        _plugged(start % DAY / HOUR),
        tuple(changes),
        seed=seed,
    )


# --- metrics --------------------------------------------------------------------------------

HOT_RATIO = 0.9  # "seconds >= 90 %" of the conservative replica's trip heat


@dataclass(slots=True)
class Metrics:
    """Accumulates the per-second figures of one run: breaker replicas first, then A*s.

    The replicas are warm-started from the first second's supply (the house had been drawing
    it for a while). In (the breaker's rating) is homeMaxAmps.
    """

    limit: float
    phases: int
    preload: Phases | None = None
    overload_amp_secs: float = 0.0
    longest_overload: int = 0
    car_amp_secs: float = 0.0  # per phase
    secs_hot: int = 0
    events: list[int] = field(default_factory=list)  # length of each overload, in seconds
    conservative: breaker.ThermalReplica = field(init=False)
    typical: breaker.ThermalReplica = field(init=False)
    fuse: breaker.FuseReplica = field(init=False)
    _run: int = 0
    _held: Phases = ()
    _held_secs: int = 0

    def __post_init__(self) -> None:
        preload = self.preload if self.preload is not None else (0.0,) * self.phases
        self.conservative = breaker.ThermalReplica(breaker.CONSERVATIVE, self.limit, preload)
        self.typical = breaker.ThermalReplica(breaker.TYPICAL, self.limit, preload)
        self.fuse = breaker.FuseReplica(self.limit, len(preload))

    def add(self, supply: Phases, car_amps: float) -> None:
        """One second: the supply per phase and the car's draw per phase."""
        excess = max(supply) - self.limit
        if excess > 0:
            self.overload_amp_secs += excess
            self._run += 1
        elif self._run:
            self._close_event()
        self.car_amp_secs += car_amps
        # The supply is piecewise constant (appliance cycles, car setpoints): the replicas
        # advance once per constant stretch, second by second only near a threshold.
        if supply == self._held:
            self._held_secs += 1
        else:
            self._advance()
            self._held, self._held_secs = supply, 1

    def _advance(self) -> None:
        supply, n = self._held, self._held_secs
        self._held_secs = 0
        if not n:
            return
        cons, typ, fuse = self.conservative, self.typical, self.fuse
        hot = HOT_RATIO * cons.cal.trip_heat
        inv2 = 1.0 / (self.limit * self.limit)
        targets = [a * a * inv2 for a in supply]
        # Heat moves monotonically toward its target, so a stretch whose start and target both
        # stay below a threshold cannot cross it: one exact step of n seconds is enough.
        if max(*cons.heat, *targets) < hot:
            cons.step(supply, float(n))
        else:
            for _ in range(n):
                cons.step(supply)
                if max(cons.heat) >= hot:
                    self.secs_hot += 1
        if max(*typ.heat, *targets) <= typ.cal.trip_heat:
            typ.step(supply, float(n))
        else:
            for _ in range(n):
                typ.step(supply)
        if max(supply) <= breaker.FUSE_NON_FUSING * self.limit:
            fuse.step(supply, float(n))
        else:
            for _ in range(n):
                fuse.step(supply)

    def _close_event(self) -> None:
        self.events.append(self._run)
        self.longest_overload = max(self.longest_overload, self._run)
        self._run = 0

    def finish(self) -> None:
        """Advance the replicas to the end; close an overload still running."""
        self._advance()
        if self._run:
            self._close_event()

    @property
    def energy_kwh(self) -> float:
        """Energy delivered to the car."""
        return self.car_amp_secs * self.phases * VOLTS / 3.6e6


@dataclass(frozen=True)
class Result:
    """One policy on one trace at one seed (and tick offset, for interval policies)."""

    policy: str
    trips: int  # conservative replica
    trips_typical: int
    fuse_melts: int
    peak_pct: float  # the conservative replica's peak heat, % of its trip heat
    secs_hot: int  # seconds at >= 90 % of the conservative trip heat
    events: tuple[int, ...]  # overload durations in seconds
    overload_amp_secs: float
    longest_overload: int
    energy_kwh: float
    commands: int
    data_calls: int
    wakes: int
    cost: float  # US dollars over the whole trace
    seconds: int
    seed: int = 0
    offset: int = 0
    matched_kwh: float = 0.0  # the constraint-matched oracle's energy at this seed
    oracle_kwh: float = 0.0  # the unmatched oracle's energy at this seed
    held_kwh: float = 0.0  # the oracle that also raises only after sleepTimeSecs, this seed
    matched_peak_pct: float = 0.0  # the constraint-matched oracle's peak at this seed
    data_cost: float = 0.0  # US dollars of data calls alone (commands over BLE cost nothing)

    @property
    def cost_per_day(self) -> float:
        """The trace's Fleet API cost scaled to 24 h."""
        return self.cost * DAY / self.seconds

    @property
    def matched_pct(self) -> float:
        """Energy as % of the constraint-matched oracle."""
        return 100.0 * self.energy_kwh / self.matched_kwh if self.matched_kwh > 0 else 100.0

    @property
    def oracle_pct(self) -> float:
        """Energy as % of the unmatched oracle."""
        return 100.0 * self.energy_kwh / self.oracle_kwh if self.oracle_kwh > 0 else 100.0

    @property
    def held_pct(self) -> float:
        """Energy as % of the oracle that obeys every rule of ours, the raise hold included."""
        return 100.0 * self.energy_kwh / self.held_kwh if self.held_kwh > 0 else 100.0

    @property
    def ble_cost_per_day(self) -> float:
        """Fleet API dollars a day with commands over the BLE road (issue 11): data calls only."""
        return self.data_cost * DAY / self.seconds


class Calls(Protocol):
    """What a run's Fleet API side counted (the old callback Fleet and the in-process one)."""

    @property
    def commands(self) -> int:
        """Commands sent (wake_up excluded)."""
        ...

    @property
    def data_calls(self) -> int:
        """Data reads sent."""
        ...

    @property
    def wakes(self) -> int:
        """Times a car was woken."""
        ...

    @property
    def billing(self) -> BillingCounter:
        """What Tesla bills."""
        ...


def result(policy: str, m: Metrics, fleet: Calls | None, trace: Trace, offset: int = 0) -> Result:
    """The run's figures, once its last second is in."""
    m.finish()
    cons, typ, fuse = m.conservative, m.typical, m.fuse
    return Result(
        policy,
        cons.trips,
        typ.trips,
        fuse.melts,
        round(100.0 * cons.peak / cons.cal.trip_heat, 6),
        m.secs_hot,
        tuple(m.events),
        round(m.overload_amp_secs, 6),
        m.longest_overload,
        m.energy_kwh,
        fleet.commands if fleet else 0,
        fleet.data_calls if fleet else 0,
        fleet.wakes if fleet else 0,
        fleet.billing.cost() if fleet else 0.0,
        trace.seconds,
        trace.seed,
        offset,
        data_cost=fleet.billing.data * PRICE_PER_CALL["data"] if fleet else 0.0,
    )


def control_config(trace: Trace) -> core.ControlConfig:
    """The controller's settings: the shipped defaults plus this house's limit and phases."""
    settings = Settings.model_construct(
        home_max_amps=trace.limit,
        charger_max_amps=float(CHARGER_MAX_AMPS),
        charger_min_amps=float(CHARGER_MIN_AMPS),
        supply_phases=3 if trace.phases == 3 else 1,
    )
    return core.ControlConfig.from_settings(settings, measured=True)


def make_car(trace: Trace) -> CarModel:
    """The benchmark's car: 16 A driver setting on a 16 A EVSE, never full, 3 s ramp."""
    plugged = trace.plugged_at_start
    return CarModel(
        state="online" if plugged else "asleep",
        plugged=plugged,
        charging_state="Charging" if plugged else "Disconnected",
        request_amps=DRIVER_AMPS,
        pilot_amps=CHARGER_MAX_AMPS,
        phases=trace.phases,
        ramp_delay=RAMP_DELAY,
        capacity_kwh=None,
    )


def supply(trace: Trace, load: Phases, draw: float) -> Phases:
    """House plus car per phase (the car uses the first phases of the supply)."""
    if trace.phases == 1:
        return (load[0] + draw,)
    return tuple(a + draw for a in load)  # the benchmark's 3-phase car draws on every phase
