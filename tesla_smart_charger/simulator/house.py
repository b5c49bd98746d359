"""A simulated house: appliance load per phase as a pure, seeded function of (virtual) time.

Every scenario is built once into piecewise-constant segments, so `House.amps(t)` is a bisect
and a tuple lookup: a benchmark can ask for every second of a week (604,800 calls) cheaply, or
walk the segments with `sample()`. Randomness comes only from `random.Random(seed)`, so a seed
always gives the same house.

Current figures (230 V single-phase unless noted; reasoning per appliance):
- Oven: 3.0 kW element -> 13 A. Preheat ~10 min flat out, then the thermostat cycles about
  1.5 min on / 2 min off; fan and light draw ~0.3 A between cycles.
- Induction hob: 1.4-3.7 kW per zone, 7.4 kW for the whole hob on a 32 A circuit. Cooking
  is modelled as steps between 7, 10, 13 and 16 A every few minutes (power levels and zones
  switched by the cook). A three-phase house wires it on two phases (one run per phase).
- Kettle: 2.0-3.0 kW -> 9-13 A for 2-4 minutes, then off (no thermostat cycling).
- Heat pump (air-to-water): 1.4-2.3 kW electrical in winter -> 6-10 A, long compressor cycles
  (~45 min on / 15 min off) with a soft-started inrush of +4 A for 2 s at each compressor
  start; the circulation pump and controller keep ~0.4 A between cycles. The three-phase
  variant draws 3 x 5 A (+3 A inrush per phase).
- Washing machine: a 2 kW heater (9 A) in thermostat bursts for the first ~20 min, drum
  motor ~0.6 A for the whole programme, spin ~2.5 A near the end.
- Tumble dryer (condenser, with heater): 2.1-2.5 kW heater -> 9-11 A, cycled by its
  thermostat (8 min on / 2.5 min off), drum motor and fan ~0.8 A throughout.
- Dishwasher: heater 9 A for the wash and rinse heating phases, pump ~0.4 A otherwise.
- Fridge: 100-160 W compressor -> 0.7 A, ~12 min on / 25 min off, 1 s inrush of +2 A.
- Base load: router, standby, lighting, TV: 0.5 A at night to ~2 A in the evening.

Scenarios keep the house alone below the main fuse (a household that tripped its breaker
with the kettle would stop doing that); only the car can push it over. Each builder says the
supply limit it was designed for.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Phase = int | Literal["all"]
Piece = tuple[float, float, float]  # (start, end, amps) on each phase the appliance uses

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class Appliance:
    """How one appliance draws current: a running current, an optional duty cycle and inrush.

    With `on_s == 0` it runs continuously for the whole run; otherwise it alternates `on_s`
    on and `off_s` off (drawing `idle_amps` while off), each period jittered by +-`jitter`.
    With `levels`, each on-period picks one of them instead of `amps` (an induction hob).
    `phase` is 1-based, or "all" for an appliance that loads every phase equally.
    """

    name: str
    amps: float
    phase: Phase = 1
    on_s: float = 0.0
    off_s: float = 0.0
    first_on_s: float = 0.0  # a longer first on-period: the oven's preheat
    idle_amps: float = 0.0
    surge_amps: float = 0.0  # extra current for `surge_s` at each switch-on
    surge_s: float = 0.0
    levels: tuple[float, ...] = ()
    jitter: float = 0.15

    def on_phase(self, phase: Phase) -> Appliance:
        """The same appliance wired to another phase."""
        return replace(self, phase=phase)


OVEN = Appliance("oven", 13.0, on_s=90.0, off_s=120.0, first_on_s=600.0, idle_amps=0.3)
HOB = Appliance("induction hob", 10.0, on_s=180.0, levels=(7.0, 10.0, 13.0, 16.0))
KETTLE = Appliance("kettle", 11.0)
HEAT_PUMP = Appliance(
    "heat pump", 8.0, on_s=2700.0, off_s=900.0, idle_amps=0.4, surge_amps=4.0, surge_s=2.0
)
HEAT_PUMP_3P = Appliance(
    "heat pump (3-phase)",
    5.0,
    phase="all",
    on_s=2700.0,
    off_s=900.0,
    idle_amps=0.15,
    surge_amps=3.0,
    surge_s=2.0,
)
WASHER_HEATER = Appliance("washer heater", 9.0, on_s=300.0, off_s=120.0)
WASHER_MOTOR = Appliance("washer motor", 0.6, jitter=0.0)
WASHER_SPIN = Appliance("washer spin", 2.5, jitter=0.0)
DRYER = Appliance("dryer", 10.0, on_s=480.0, off_s=150.0, idle_amps=0.8)
DISHWASHER_HEATER = Appliance("dishwasher heater", 9.0)
DISHWASHER_PUMP = Appliance("dishwasher pump", 0.4)
FRIDGE = Appliance("fridge", 0.7, on_s=720.0, off_s=1500.0, surge_amps=2.0, surge_s=1.0)
BASE_LOAD = Appliance("base load", 1.0)


@dataclass(frozen=True)
class ApplianceRun:
    """One use of an appliance: from `start` for `duration` seconds.

    `seed` fixes this run's cycle jitter and hob levels; `amps` overrides the appliance's
    running current (a 2 kW or a 3 kW kettle).
    """

    appliance: Appliance
    start: float
    duration: float
    seed: int = 0
    amps: float | None = None

    @property
    def end(self) -> float:
        """When the run stops."""
        return self.start + self.duration

    def pieces(self) -> list[Piece]:
        """The run as constant-current pieces (per phase it uses)."""
        a = self.appliance
        rng = random.Random(f"{self.seed}:{a.name}")

        def jittered(seconds: float) -> float:
            return seconds * rng.uniform(1.0 - a.jitter, 1.0 + a.jitter)

        running = a.amps if self.amps is None else self.amps
        out: list[Piece] = []
        t, end, switched_on = self.start, self.end, True
        first = True
        while t < end:
            if a.on_s <= 0:
                on = end - t
            elif first and a.first_on_s > 0:
                on = jittered(a.first_on_s)
            else:
                on = jittered(a.on_s)
            level = rng.choice(a.levels) if a.levels else running
            on_end = min(t + on, end)
            if switched_on and a.surge_s > 0 and a.surge_amps > 0:
                surge_end = min(t + a.surge_s, on_end)
                out.append((t, surge_end, level + a.surge_amps))
                t = surge_end
            if on_end > t:
                out.append((t, on_end, level))
            t = on_end
            first, switched_on = False, False
            if a.off_s > 0 and t < end:
                off_end = min(t + jittered(a.off_s), end)
                if a.idle_amps > 0:
                    out.append((t, off_end, a.idle_amps))
                t, switched_on = off_end, True
        return out


class House:
    """The house load per phase (the car excluded), built once into constant segments.

    `duration`, when set, cuts every run off there (a day ends at midnight); `period` repeats
    the scenario forever (the demo runs until Ctrl-C) and implies `duration=period`. Before 0
    and after the end the load is zero.
    """

    def __init__(
        self,
        phases: int,
        events: Sequence[ApplianceRun],
        *,
        name: str = "",
        duration: float | None = None,
        period: float | None = None,
    ) -> None:
        if phases not in (1, 2, 3):
            raise ValueError("phases must be 1, 2 or 3")
        if period is not None and period <= 0:
            raise ValueError("period must be positive")
        self.phases = phases
        self.events = tuple(events)
        self.name = name
        self.period = period
        if period is not None:
            duration = period
        if duration is None:
            duration = max((r.end for r in self.events), default=0.0)
        self.duration = duration
        deltas: dict[float, list[float]] = {}
        for run in self.events:
            used = self._phase_indexes(run.appliance)
            for t0, end, amps in run.pieces():
                t1 = min(end, duration)
                if t1 <= t0:
                    continue
                for t, sign in ((t0, 1.0), (t1, -1.0)):
                    row = deltas.setdefault(t, [0.0] * phases)
                    for i in used:
                        row[i] += sign * amps
        times: list[float] = []
        values: list[tuple[float, ...]] = []
        level = [0.0] * phases
        for t in sorted(deltas):
            level = [x + d for x, d in zip(level, deltas[t], strict=True)]
            # Rounding removes float drift, so a run that ends really brings the load back down.
            value = tuple(max(0.0, round(x, 3)) for x in level)
            if values and values[-1] == value:
                continue
            times.append(t)
            values.append(value)
        self._times = times
        self._values = values
        self._zero = (0.0,) * phases

    def _phase_indexes(self, appliance: Appliance) -> range:
        if appliance.phase == "all":
            return range(self.phases)
        if not 1 <= appliance.phase <= self.phases:
            raise ValueError(f"{appliance.name} is on phase {appliance.phase} of {self.phases}")
        return range(appliance.phase - 1, appliance.phase)

    def amps(self, t: float) -> tuple[float, ...]:
        """House load per phase at time `t` (excluding the car)."""
        if self.period is not None and t >= 0:
            t %= self.period
        i = bisect.bisect_right(self._times, t) - 1
        return self._values[i] if i >= 0 else self._zero

    def sample(self, start: float, stop: float, step: float = 1.0) -> list[tuple[float, ...]]:
        """`amps(t)` for t = start, start+step, ... < stop, walking the segments once."""
        if step <= 0:
            raise ValueError("step must be positive")
        count = max(0, int((stop - start) / step + 0.999999999))
        if self.period is not None:
            return [self.amps(start + k * step) for k in range(count)]
        out: list[tuple[float, ...]] = []
        times, values = self._times, self._values
        i = bisect.bisect_right(times, start) - 1
        last = len(times) - 1
        for k in range(count):
            t = start + k * step
            while i < last and times[i + 1] <= t:
                i += 1
            out.append(values[i] if i >= 0 else self._zero)
        return out

    def segments(self) -> list[tuple[float, tuple[float, ...]]]:
        """(start time, load per phase) of each constant piece, in time order."""
        return list(zip(self._times, self._values, strict=True))

    @property
    def segment_count(self) -> int:
        """How many constant pieces the scenario has (the cost of a lookup is its log)."""
        return len(self._times)

    def peak(self, start: float | None = None, end: float | None = None) -> tuple[float, ...]:
        """Highest load per phase, over the whole scenario or within [start, end)."""
        best = list(self._zero)
        lo = 0 if start is None else max(0, bisect.bisect_right(self._times, start) - 1)
        hi = len(self._times) if end is None else bisect.bisect_left(self._times, end)
        for value in self._values[lo:hi]:
            best = [max(b, v) for b, v in zip(best, value, strict=True)]
        return tuple(best)

    def active(self, t: float) -> list[str]:
        """Names of the appliances running at `t` (for the demo's live view)."""
        if self.period is not None and t >= 0:
            t %= self.period
        return sorted({r.appliance.name for r in self.events if r.start <= t < r.end})


# --- scenario building -----------------------------------------------------------------------


class _Planner:
    """Places appliance uses at random times without letting the house alone exceed `limit`."""

    def __init__(self, phases: int, limit: float, rng: random.Random) -> None:
        self.phases = phases
        self.limit = limit
        self.rng = rng
        self.runs: list[ApplianceRun] = []

    def seed(self) -> int:
        return self.rng.randrange(2**31)

    def fixed(self, runs: Sequence[ApplianceRun]) -> None:
        self.runs.extend(runs)

    def place(
        self, make: Callable[[float], list[ApplianceRun]], earliest: float, latest: float
    ) -> bool:
        """Try start times in [earliest, latest]; False when none fits (the use is skipped)."""
        for _ in range(16):
            candidate = make(self.rng.uniform(earliest, latest))
            lo = min(r.start for r in candidate)
            hi = max(r.end for r in candidate)
            nearby = [r for r in self.runs if r.start < hi and r.end > lo]
            peak = House(self.phases, nearby + candidate).peak(lo, hi)
            if max(peak) <= self.limit:
                self.runs.extend(candidate)
                return True
        return False

    def house(self, name: str, duration: float) -> House:
        return House(self.phases, self.runs, name=name, duration=duration)


def _base_load(p: _Planner, end: float, profile: Callable[[float], tuple[float, float]]) -> None:
    """Hourly base load per phase, drawn from `profile(hour) -> (low, high)` amps."""
    t = 0.0
    while t < end:
        low, high = profile(t / HOUR)
        for phase in range(1, p.phases + 1):
            scale = 1.0 if phase == 1 else 0.7
            amps = round(p.rng.uniform(low, high) * scale, 2)
            run = ApplianceRun(BASE_LOAD.on_phase(phase), t, min(HOUR, end - t), amps=amps)
            p.fixed([run])
        t += HOUR


def _daily_profile(hour: float) -> tuple[float, float]:
    """Base load by hour of day: low at night, lights and TV in the evening."""
    h = hour % 24
    if h < 6:
        return 0.5, 0.8
    if h < 9:
        return 1.0, 1.6
    if h < 17:
        return 0.7, 1.2
    if h < 23:
        return 1.4, 2.0
    return 0.8, 1.1


def _kettle(p: _Planner, phase: Phase) -> Callable[[float], list[ApplianceRun]]:
    seed, amps, minutes = p.seed(), p.rng.uniform(9.0, 13.0), p.rng.uniform(2.0, 4.0)
    return lambda t: [ApplianceRun(KETTLE.on_phase(phase), t, minutes * 60, seed, round(amps, 1))]


def _oven(p: _Planner, minutes: float) -> Callable[[float], list[ApplianceRun]]:
    seed = p.seed()
    return lambda t: [ApplianceRun(OVEN, t, minutes * 60, seed)]


def _hob(
    p: _Planner, minutes: float, phases: Sequence[Phase]
) -> Callable[[float], list[ApplianceRun]]:
    seeds = [p.seed() for _ in phases]
    return lambda t: [
        ApplianceRun(HOB.on_phase(ph), t, minutes * 60, s)
        for ph, s in zip(phases, seeds, strict=True)
    ]


def _dryer(p: _Planner, phase: Phase, minutes: float) -> Callable[[float], list[ApplianceRun]]:
    seed, amps = p.seed(), round(p.rng.uniform(9.0, 11.0), 1)
    return lambda t: [ApplianceRun(DRYER.on_phase(phase), t, minutes * 60, seed, amps)]


def _washer(p: _Planner, phase: Phase) -> Callable[[float], list[ApplianceRun]]:
    seed, minutes = p.seed(), p.rng.uniform(80.0, 110.0)

    def make(t: float) -> list[ApplianceRun]:
        return [
            ApplianceRun(WASHER_HEATER.on_phase(phase), t + 120, 20 * 60, seed),
            ApplianceRun(WASHER_MOTOR.on_phase(phase), t, minutes * 60, seed),
            ApplianceRun(WASHER_SPIN.on_phase(phase), t + (minutes - 10) * 60, 8 * 60, seed),
        ]

    return make


def _dishwasher(p: _Planner, phase: Phase) -> Callable[[float], list[ApplianceRun]]:
    seed = p.seed()

    def make(t: float) -> list[ApplianceRun]:
        return [
            ApplianceRun(DISHWASHER_PUMP.on_phase(phase), t, 120 * 60, seed),
            ApplianceRun(DISHWASHER_HEATER.on_phase(phase), t + 5 * 60, 15 * 60, seed),
            ApplianceRun(DISHWASHER_HEATER.on_phase(phase), t + 80 * 60, 10 * 60, seed + 1),
        ]

    return make


def winter_evening(seed: int = 1) -> House:
    """17:00-20:00 in January, single phase, designed for a 30 A main.

    Heat pump (cycling) + fridge + base load all evening; a kettle at ~17:10, the oven from
    ~17:30 for 70 min, another kettle after dinner, then the dryer. The house alone peaks
    around 23-25 A: a 16 A car on top overloads a 30 A main for most of the evening unless
    the charger is throttled.
    """
    p = _Planner(1, 28.0, random.Random(seed))
    end = 3 * HOUR
    _base_load(p, end, lambda h: (1.2, 1.8))
    p.fixed([ApplianceRun(FRIDGE, p.rng.uniform(0, 600), end, p.seed())])
    p.fixed([ApplianceRun(HEAT_PUMP, 0.0, end, p.seed(), round(p.rng.uniform(7.5, 9.0), 1))])
    p.place(_kettle(p, 1), 8 * 60, 15 * 60)
    p.place(_oven(p, 70), 25 * 60, 32 * 60)
    p.place(_kettle(p, 1), 101 * 60, 104 * 60)
    p.place(_dryer(p, 1, 72), 105 * 60, 107 * 60)
    return p.house("winter evening", end)


def three_phase_evening(seed: int = 3) -> House:
    """17:00-20:00 in a three-phase house, designed for a 3 x 25 A main.

    A 3 x 5 A heat pump on all phases; oven and a kettle on L1, the washer and half of the
    induction hob on L2, the other half of the hob and the dryer on L3. Each phase peaks
    around 17-21 A: a three-phase 16 A car overloads the busiest phase.
    """
    p = _Planner(3, 22.0, random.Random(seed))
    end = 3 * HOUR
    _base_load(p, end, lambda h: (1.2, 1.8))
    p.fixed([ApplianceRun(FRIDGE.on_phase(2), p.rng.uniform(0, 600), end, p.seed())])
    p.fixed([ApplianceRun(HEAT_PUMP_3P, 0.0, end, p.seed())])
    p.place(_washer(p, 2), 2 * 60, 10 * 60)
    p.place(_kettle(p, 1), 8 * 60, 15 * 60)
    p.place(_oven(p, 60), 25 * 60, 35 * 60)
    p.place(_hob(p, 25, (2, 3)), 40 * 60, 50 * 60)
    p.place(_kettle(p, 3), 95 * 60, 100 * 60)
    p.place(_dryer(p, 3, 70), 105 * 60, 108 * 60)
    return p.house("three-phase evening", end)


def random_day(seed: int, phases: int = 1) -> House:
    """A seeded random 24 h of appliance use; t is seconds since midnight.

    Designed for a 30 A main (single phase) or 3 x 25 A (three phase): the house alone stays
    at or below 27 A / 22 A per phase. In the heating season (60 % of days) the heat pump
    cycles all day; otherwise it only heats hot water twice.
    """
    if phases not in (1, 3):
        raise ValueError("random_day builds single- or three-phase houses")
    three = phases == 3
    p = _Planner(phases, 22.0 if three else 27.0, random.Random(seed))
    _base_load(p, DAY, _daily_profile)
    p.fixed(
        [ApplianceRun(FRIDGE.on_phase(2 if three else 1), p.rng.uniform(0, 1800), DAY, p.seed())]
    )
    pump = HEAT_PUMP_3P if three else HEAT_PUMP
    if p.rng.random() < 0.6:
        amps = None if three else round(p.rng.uniform(6.0, 10.0), 1)
        p.fixed([ApplianceRun(pump, p.rng.uniform(0, 900), DAY - 900, p.seed(), amps)])
    else:
        for hour in (p.rng.uniform(5, 7), p.rng.uniform(17, 20)):
            p.fixed([ApplianceRun(pump, hour * HOUR, 45 * 60, p.seed())])

    def phase_of(preferred: int) -> Phase:
        return preferred if three else 1

    windows = [(6.5, 8.5), (10.0, 12.0), (15.0, 17.0), (19.0, 22.0), (13.0, 14.0)]
    for i in range(p.rng.randint(3, 7)):
        low, high = windows[i % len(windows)]
        kettle_phase = phase_of(p.rng.choice((1, 2, 3)))
        p.place(_kettle(p, kettle_phase), low * HOUR, high * HOUR)
    if p.rng.random() < 0.4:
        p.place(_hob(p, p.rng.uniform(15, 30), (2, 3) if three else (1,)), 12 * HOUR, 13 * HOUR)
    if p.rng.random() < 0.8:
        p.place(_hob(p, p.rng.uniform(20, 45), (2, 3) if three else (1,)), 17.5 * HOUR, 19.5 * HOUR)
    if p.rng.random() < 0.5:
        p.place(_oven(p, p.rng.uniform(45, 90)), 17.5 * HOUR, 19.5 * HOUR)
    if p.rng.random() < 0.5:
        washer = _washer(p, phase_of(2))
        dryer_follows = p.rng.random() < 0.7
        before = len(p.runs)
        if p.place(washer, 8 * HOUR, 15 * HOUR) and dryer_follows:
            washer_end = max(r.end for r in p.runs[before:])
            gap = 10 * 60
            p.place(
                _dryer(p, phase_of(3), p.rng.uniform(60, 100)),
                washer_end + gap,
                washer_end + 3 * gap,
            )
    if p.rng.random() < 0.6:
        p.place(_dishwasher(p, phase_of(1)), 20 * HOUR, 22 * HOUR)
    return p.house(f"random day {seed}" + (" (3-phase)" if three else ""), DAY)


def random_week(seed: int = 7) -> list[House]:
    """Seven seeded random days (single phase, 30 A main); each day's t starts at 0."""
    rng = random.Random(seed)
    return [random_day(rng.randrange(2**31)) for _ in range(7)]


def demo_evening(seed: int = 5) -> House:
    """A compressed evening for `make demo`, repeating every 4 minutes; single phase, 30 A main.

    Heat pump and base load run all the time (~10 A). A kettle (12 A) switches on 40 s after
    start and the oven (13 A, cycling 30 s on / 15 s off) at 150 s, so with a 16 A car the
    house overloads within a minute of start and again every couple of minutes.
    """
    rng = random.Random(seed)
    period = 240.0
    heat_pump = Appliance("heat pump", round(rng.uniform(7.5, 8.5), 1))
    runs = [
        ApplianceRun(BASE_LOAD, 0.0, period, amps=round(rng.uniform(1.4, 1.8), 2)),
        ApplianceRun(heat_pump, 0.0, period),
        ApplianceRun(KETTLE, 40.0, rng.uniform(60.0, 80.0), amps=12.0),
        ApplianceRun(
            replace(OVEN, on_s=30.0, off_s=15.0, first_on_s=0.0), 150.0, 70.0, rng.randrange(2**31)
        ),
    ]
    return House(1, runs, name="demo evening", period=period)


def capacity_evening(seed: int = 11) -> House:
    """18:00-22:00, single phase, a house that lives with a 2.5 kW capacity tariff.

    No heat pump or dryer: lights and TV, the fridge, a kettle around 18:10, the hob for
    dinner, a kettle after it and the dishwasher. The house alone stays under 2.5 kW on most
    quarter-hours but not in every second: a kettle or the hob takes it far over for minutes,
    which the car must make room for within the same window.
    """
    p = _Planner(1, 28.0, random.Random(seed))
    end = 4 * HOUR
    _base_load(p, end, lambda h: (1.6, 2.4))
    p.fixed([ApplianceRun(FRIDGE, p.rng.uniform(0, 600), end, p.seed())])
    p.place(_kettle(p, 1), 6 * 60, 14 * 60)
    p.place(_hob(p, 12, (1,)), 35 * 60, 50 * 60)
    p.place(_kettle(p, 1), 115 * 60, 125 * 60)
    p.place(_dishwasher(p, 1), 140 * 60, 150 * 60)
    return p.house("capacity evening", end)
