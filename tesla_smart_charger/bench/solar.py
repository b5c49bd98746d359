"""Solar and two-car benchmarks (issue 14), in virtual time at 1 s steps.

Solar table: a 6 kWp roof on a clear and a cloudy summer day (`simulator/pv.py`: 1 s
irradiance, passing clouds), a daytime house, one car plugged 08:00-18:00. Rows:
- `no car`: the roof and the house alone (the self-consumption the car starts from).
- `evcc-like pv`: evcc's PV mode from its documented rules: every `interval` (30 s, evcc's
  default) target = measured car current + surplus (= -grid current); not charging: once the
  target has covered `minCurrent` for `enable.delay` (1 min, threshold 0 W) it starts at
  `minCurrent` and follows the target from the next cycle; charging: a target below
  `minCurrent` holds `minCurrent` and, after the grid has imported (>= `disable.threshold` 0 W)
  for `disable.delay` (3 min), stops; a cycle without import resets that timer. Whole amps
  (Tesla `coarsecurrent`), a command only on change, vehicle data once per 15 min cache while
  charging. Sources: docs.evcc.io reference/configuration/loadpoints (`enable`/`disable`
  `threshold`/`delay`); evcc-io/evcc core/loadpoint.go `NewLoadpoint` (Enable 1 min / 0 W,
  Disable 3 min / 0 W, min 6 A, max 16 A) and core/loadpoint_pv.go `pvMaxCurrent` (the timer
  rules above); cmd/setup.go (interval 30 s); /work/shared/reference/peers-evcc-and-others.md.
- `oracle`: knows house and PV every second, sets the car to floor(PV - house) within
  [min, max] at once (0 below min): never imports for the car; its commands are free and
  instant (the count shows what that would cost on Fleet).
- `ours`: the daemon's shell (bench/shell.py: `ChargeService` in `solar` mode, shipped
  defaults; two cars: `runtime.Fleet`) on a virtual-time loop, against simulated cars behind
  the in-process proxy: plugged in at the car's own 16 A, as a Tesla starts. `OURS_SOLAR` / `OURS_TWO_CARS` are the seams; a row says "n/a" when one is missing.

Two-car table: the winter evening (`houses.winter_evening`, 30 A main) with two 16 A cars on the
same phase. `evcc-like` is two independent evcc loadpoints in fast mode (no rebalancing, each
caps itself to old + headroom of the same reading: each thinks it has the whole house);
`oracle` splits limit - house evenly every second (one car at a time when there is room for only
one minimum, the one with less energy so far). `ours` is the daemon's `Fleet`: two
`ChargeService`s behind `control.car_readings.split`, pauseWhenOverloaded on, equal priority; `ours pause 30s` the same
with pauseAfterSecs 30 instead of the shipped 120 (context: the shipped default pauses sooner
by itself when the overload would heat the breaker). Overload is judged with the breaker replicas of
`breaker.py` through `bench.Metrics`; fairness is Jain's index of the two cars' energy.

Commands take COMMAND_LATENCY + RAMP_DELAY (4 s) to change what the car draws, as in bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tesla_smart_charger import control as core
from tesla_smart_charger.bench import common as bench
from tesla_smart_charger.bench.shell import Shell, quietly, settings_for
from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.const import PRICE_PER_CALL
from tesla_smart_charger.control import breaker
from tesla_smart_charger.simulator import house as houses
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.pv import solar_day
from tesla_smart_charger.simulator.world import settings_keys

VOLTS = bench.VOLTS
LAG = bench.COMMAND_LATENCY + bench.RAMP_DELAY  # s from a command to the new draw
MIN_AMPS = bench.CHARGER_MIN_AMPS
MAX_AMPS = bench.CHARGER_MAX_AMPS
HOUR = 3600
SUN_START, SUN_STOP = 6 * HOUR, 20 * HOUR  # the simulated window of a solar day
PLUG_IN, UNPLUG = 8 * HOUR, 18 * HOUR  # the car is home all day (home office)
QUICK_WINDOW = (11 * HOUR, 14 * HOUR)
EVCC_INTERVAL = 30  # s (cmd/setup.go)
EVCC_ENABLE_DELAY = 60.0  # s, enable.delay (core/loadpoint.go)
EVCC_DISABLE_DELAY = 180.0  # s, disable.delay
EVCC_THRESHOLD_AMPS = 0.0  # enable/disable threshold 0 W
EVCC_DATA_CACHE = 900.0  # s, vehicle data cache while charging
PV_SEED = 1
EVENING_SEEDS = (1, 2, 3)
EVENING_LIMIT = 30.0
SHORT_PAUSE = 30.0  # s, the pauseAfterSecs of the second `ours` two-car row
OURS_SHORT_PAUSE = "ours pause 30s"
SOLAR_LIMIT = 32.0  # homeMaxAmps of the solar house (the limit never binds by day)


def _cost(commands: int, data: int) -> float:
    return commands * PRICE_PER_CALL["command"] + data * PRICE_PER_CALL["data"]


# --- the car as the benchmark sees it ------------------------------------------------------


class LaggedCar:
    """A car whose draw follows a command LAG seconds later; counts Fleet calls."""

    __slots__ = ("_pending", "amp_secs", "commands", "data", "draw", "lag")

    def __init__(self, draw: float = 0.0, lag: float = LAG) -> None:
        self.draw = draw
        self.lag = lag
        self.commands = 0
        self.data = 0
        self.amp_secs = 0.0
        self._pending: deque[tuple[float, float]] = deque()

    def command(self, t: float, amps: float, calls: int = 1) -> None:
        """Send `calls` commands at `t` that make the car draw `amps` `lag` s later."""
        self.commands += calls
        self._pending.append((t + self.lag, amps))

    def advance(self, t: float) -> None:
        """Apply what is due at `t`."""
        while self._pending and self._pending[0][0] <= t:
            self.draw = self._pending.popleft()[1]

    def unplug(self) -> None:
        """The cable comes out: no draw, and whatever was in flight is void."""
        self.draw = 0.0
        self._pending.clear()

    def set_now(self, amps: float) -> None:
        """The oracle: the draw changes at once (counted as one command when it changes)."""
        if amps != self.draw:
            self.commands += 1
            self.draw = amps

    @property
    def energy_kwh(self) -> float:
        return self.amp_secs * VOLTS / 3.6e6


# --- solar policies ------------------------------------------------------------------------


class _EvccLoadpoint:
    """What evcc's loadpoints share while charging: a command on change, cached vehicle data."""

    offered: int | None
    last_data: float | None

    def _charge_at(self, t: float, amps: int, car: LaggedCar) -> None:
        """Send `amps` if it is not what was offered; vehicle data once per EVCC_DATA_CACHE."""
        if amps != self.offered:
            self.offered = amps
            car.command(t, float(amps))
        if self.last_data is None or t - self.last_data >= EVCC_DATA_CACHE:
            self.last_data = t
            car.data += 1


class EvccPv(_EvccLoadpoint):
    """evcc's PV mode for one loadpoint (module docstring); acts every `interval` s."""

    def __init__(self, interval: int = EVCC_INTERVAL, offset: int = 0) -> None:
        self.interval = interval
        self.offset = offset
        self.enabled = False
        self.offered = 0
        self.timer: float | None = None  # evcc's pvTimer: enable or disable, never both
        self.last_data: float | None = None

    def unplugged(self) -> None:
        """Plug-out resets the loadpoint."""
        self.enabled, self.offered, self.timer = False, 0, None

    def tick(self, t: float, grid_amps: float, car: LaggedCar) -> None:
        """One control cycle on the grid current (import +) and the car's measured draw."""
        if (int(t) - self.offset) % self.interval:
            return
        effective = car.draw if self.enabled else 0.0
        target = effective - grid_amps
        if self.enabled:
            if target < MIN_AMPS:
                if grid_amps >= EVCC_THRESHOLD_AMPS:
                    self.timer = t if self.timer is None else self.timer
                    if t - self.timer >= EVCC_DISABLE_DELAY:
                        self.enabled, self.offered, self.timer = False, 0, None
                        car.command(t, 0.0)  # charge_stop
                        return
                else:
                    self.timer = None
                amps = MIN_AMPS
            else:
                self.timer = None
                amps = min(MAX_AMPS, math.trunc(target))
            self._charge_at(t, amps, car)
            return
        if target >= MIN_AMPS:
            self.timer = t if self.timer is None else self.timer
            if t - self.timer >= EVCC_ENABLE_DELAY:
                # pvMaxCurrent returns minCurrent when the enable timer elapses.
                self.enabled, self.offered, self.timer = True, MIN_AMPS, None
                car.command(t, float(MIN_AMPS), calls=2)  # set_charging_amps + charge_start
        else:
            self.timer = None


def oracle_solar_amps(surplus: float) -> float:
    """The oracle's setpoint for a surplus (PV - house, A): whole amps, never importing."""
    amps = min(MAX_AMPS, math.floor(surplus))
    return float(amps) if amps >= MIN_AMPS else 0.0


# --- the solar day ---------------------------------------------------------------------------


def daytime_house(seed: int = 1) -> houses.House:
    """A summer weekday at home: base load, fridge, washer, dishwasher, kettles, an oven."""
    h = HOUR
    runs = [
        houses.ApplianceRun(houses.BASE_LOAD, 0.0, 17 * h, amps=0.8),
        houses.ApplianceRun(houses.BASE_LOAD, 17 * h, 7 * h, amps=1.6),
        houses.ApplianceRun(houses.FRIDGE, 0.0, 24 * h, seed),
        houses.ApplianceRun(houses.KETTLE, 7.5 * h, 180.0, seed, 11.0),
        houses.ApplianceRun(houses.WASHER_MOTOR, 10 * h, 95 * 60, seed),
        houses.ApplianceRun(houses.WASHER_HEATER, 10 * h + 120, 20 * 60, seed),
        houses.ApplianceRun(houses.WASHER_SPIN, 10 * h + 85 * 60, 8 * 60, seed),
        houses.ApplianceRun(houses.KETTLE, 12.5 * h, 150.0, seed + 1, 10.0),
        houses.ApplianceRun(houses.DISHWASHER_PUMP, 13.5 * h, 100 * 60, seed),
        houses.ApplianceRun(houses.DISHWASHER_HEATER, 13.5 * h + 300, 20 * 60, seed),
        houses.ApplianceRun(houses.DISHWASHER_HEATER, 13.5 * h + 70 * 60, 12 * 60, seed),
        houses.ApplianceRun(houses.KETTLE, 16 * h, 180.0, seed + 2, 12.0),
        houses.ApplianceRun(houses.OVEN, 18.5 * h, 50 * 60, seed),
    ]
    return houses.House(1, runs, name="summer day at home", duration=24 * h)


@dataclass(frozen=True)
class SolarResult:
    """One policy on one solar day."""

    policy: str
    pv_kwh: float
    export_kwh: float
    car_kwh: float
    car_import_kwh: float
    commands: int
    data: int

    @property
    def self_consumption(self) -> float:
        """% of the PV energy used in the house or the car (not exported)."""
        return 100.0 * (self.pv_kwh - self.export_kwh) / self.pv_kwh if self.pv_kwh else 0.0

    @property
    def cost(self) -> float:
        """Fleet US dollars for the day."""
        return _cost(self.commands, self.data)


def run_solar(
    policy: str, sky: str, *, quick: bool = False, step: int = 1, seed: int = PV_SEED
) -> SolarResult:
    """One policy ("no car", "evcc-like pv", "oracle") through one solar day at `step` s."""
    if policy not in SOLAR_POLICIES:
        raise ValueError(f"unknown solar policy {policy!r}")
    start, stop = QUICK_WINDOW if quick else (SUN_START, SUN_STOP)
    loads, pvs = _solar_inputs(sky, seed, start, stop, step)
    car = LaggedCar()
    evcc = EvccPv() if policy == "evcc-like pv" else None
    export = imported_for_car = 0.0
    pv_amp_secs = 0.0
    for k, (h, p) in enumerate(zip(loads, pvs, strict=True)):
        t = start + k * step
        plugged = PLUG_IN <= t < UNPLUG
        if not plugged:
            if car.draw or (evcc is not None and evcc.enabled):
                car.unplug()
                if evcc is not None:
                    evcc.unplugged()
        elif policy == "oracle":
            car.set_now(oracle_solar_amps(p - h))
        elif evcc is not None:
            car.advance(t)
            evcc.tick(t, h + car.draw - p, car)
            car.advance(t)
        grid = h + car.draw - p
        export += max(0.0, -grid) * step
        imported_for_car += (max(0.0, grid) - max(0.0, h - p)) * step
        car.amp_secs += car.draw * step
        pv_amp_secs += p * step
    kwh = VOLTS / 3.6e6
    return SolarResult(
        policy,
        pv_amp_secs * kwh,
        export * kwh,
        car.energy_kwh,
        imported_for_car * kwh,
        car.commands,
        car.data,
    )


@functools.cache
def _solar_inputs(
    sky: str, seed: int, start: int, stop: int, step: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """House load and PV feed-in (A, L1) for each step: built once per day, shared by rows."""
    if sky not in SKIES:
        raise ValueError(f"unknown sky {sky!r}; one of {', '.join(SKIES)}")
    pv = solar_day("cloudy" if sky == "cloudy" else "clear", seed=seed)
    loads = tuple(x[0] for x in daytime_house(seed).sample(start, stop, step))
    feed = tuple(pv.amps(start + k * step, 1)[0] for k in range(len(loads)))
    return loads, feed


SOLAR_POLICIES = ("no car", "evcc-like pv", "oracle")
SKIES = ("clear", "cloudy")

# Seams for the real controller (issue 14): runners returning the same result types, set at the
# end of this module (`ours_solar`, `ours_two_cars`); None shows "not wired yet".
OURS_SOLAR: Callable[[str, bool], SolarResult] | None
OURS_TWO_CARS: Callable[[int, bool], TwoCarResult] | None


def _ours_note(
    keys: frozenset[str] | None, key: str, needs: str, present: str, *, seam: str, runner: object
) -> str | None:
    """Why an `ours` row cannot run (None when it can): its settings key, then its runner."""
    keys = settings_keys() if keys is None else keys
    if key not in keys:
        return f"n/a (needs {needs})"
    if runner is None:
        return f"n/a ({present} present; bench_solar.{seam} not wired yet)"
    return None


def ours_solar_note(keys: frozenset[str] | None = None) -> str | None:
    """Why the `ours` solar row cannot run (None when it can)."""
    needs = "solar mode"
    return _ours_note(keys, "solarStartSecs", needs, needs, seam="OURS_SOLAR", runner=OURS_SOLAR)


def ours_two_cars_note(keys: frozenset[str] | None = None) -> str | None:
    """Why the `ours` two-car row cannot run (None when it can)."""
    needs = "multi-car: the vehicles key"
    return _ours_note(
        keys, "vehicles", needs, "vehicles", seam="OURS_TWO_CARS", runner=OURS_TWO_CARS
    )


SOLAR_HEADER = (
    f"{'policy':<14}{'sky':<8}{'PV kWh':>8}{'self-use %':>12}{'car kWh':>9}"
    f"{'car import kWh':>16}{'commands':>10}{'data':>6}{'$/day':>8}"
)


def _solar_row(r: SolarResult, sky: str) -> str:
    money = "free" if r.policy == "oracle" else f"{r.cost:.3f}"
    return (
        f"{r.policy:<14}{sky:<8}{r.pv_kwh:>8.1f}{r.self_consumption:>12.1f}{r.car_kwh:>9.1f}"
        f"{r.car_import_kwh:>16.2f}{r.commands:>10d}{r.data:>6d}{money:>8}"
    )


def solar_table(*, quick: bool = False) -> str:
    """The solar table: every policy on the clear and the cloudy day."""
    window = QUICK_WINDOW if quick else (SUN_START, SUN_STOP)
    lines = [
        f"Solar day: 6 kWp roof (1 phase), car plugged 08:00-18:00 (min {MIN_AMPS} A,"
        f" max {MAX_AMPS} A); simulated {window[0] // HOUR:02d}:00-{window[1] // HOUR:02d}:00"
        " at 1 s; evcc-like pv: 30 s interval, enable 1 min, disable 3 min, thresholds 0 W",
        SOLAR_HEADER,
    ]
    note = ours_solar_note()
    for sky in SKIES:
        for policy in SOLAR_POLICIES:
            lines.append(_solar_row(run_solar(policy, sky, quick=quick), sky))
        if note is None and OURS_SOLAR is not None:
            lines.append(_solar_row(OURS_SOLAR(sky, quick), sky))
        else:
            lines.append(f"{'ours':<14}{sky:<8}{note}")
    return "\n".join(lines)


# --- the two-car evening -----------------------------------------------------------------------


class EvccFast(_EvccLoadpoint):
    """One evcc loadpoint in fast mode that believes it has the whole house (bench.py's rules)."""

    def __init__(self, limit: float, interval: int = EVCC_INTERVAL, offset: int = 0) -> None:
        self.limit = limit
        self.interval = interval
        self.offset = offset
        self.enabled = True
        self.offered: int | None = MAX_AMPS
        self.last_data: float | None = None

    def tick(self, t: float, supply: float, car: LaggedCar) -> None:
        """Cap to old + headroom of this reading; stop below the minimum; restart with room."""
        if (int(t) - self.offset) % self.interval:
            return
        headroom = self.limit - supply
        if self.enabled:
            old = car.draw
            new = float(MAX_AMPS)
            if new - old > headroom:
                new = max(0.0, old + headroom)
            amps = math.trunc(new)
            if amps < MIN_AMPS:
                self.enabled, self.offered = False, None
                car.command(t, 0.0)
                return
            self._charge_at(t, amps, car)
            return
        amps = math.trunc(min(float(MAX_AMPS), max(0.0, headroom)))
        if amps >= MIN_AMPS:
            self.enabled = True
            calls = 2 if amps != self.offered else 1
            self.offered = amps
            car.command(t, float(amps), calls=calls)


def oracle_split(avail: float, energies: Sequence[float]) -> list[float]:
    """Even split of `avail` amps over the cars; room for one minimum goes to the one behind."""
    n = len(energies)
    each = min(float(MAX_AMPS), math.floor(avail / n)) if n else 0.0
    if each >= MIN_AMPS:
        return [each] * n
    out = [0.0] * n
    one = min(float(MAX_AMPS), math.floor(avail))
    if n and one >= MIN_AMPS:
        out[min(range(n), key=lambda i: energies[i])] = one
    return out


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one gets everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


@dataclass(frozen=True)
class TwoCarResult:
    """One policy on one two-car evening."""

    policy: str
    seed: int
    overload_amp_secs: float
    longest_overload: int
    trips_conservative: int
    trips_typical: int
    peak_heat_pct: float  # conservative replica, % of trip heat
    car_kwh: tuple[float, float]
    commands: int
    data: int

    @property
    def fairness(self) -> float:
        """Jain's index of the two cars' energy."""
        return jain(self.car_kwh)


TWO_CAR_POLICIES = ("evcc-like x2", "oracle")


def _two_car_result(
    policy: str, seed: int, metrics: bench.Metrics, cars: Sequence[LaggedCar]
) -> TwoCarResult:
    """One evening's row from the breaker metrics and the two cars' counters."""
    return TwoCarResult(
        policy,
        seed,
        metrics.overload_amp_secs,
        metrics.longest_overload,
        metrics.conservative.trips,
        metrics.typical.trips,
        100.0 * metrics.conservative.peak / breaker.CONSERVATIVE.trip_heat,
        (cars[0].energy_kwh, cars[1].energy_kwh),
        sum(c.commands for c in cars),
        sum(c.data for c in cars),
    )


def run_two_cars(policy: str, seed: int = 1, *, quick: bool = False) -> TwoCarResult:
    """Two 16 A cars through the winter evening under `policy`."""
    if policy not in TWO_CAR_POLICIES:
        raise ValueError(f"unknown two-car policy {policy!r}")
    house = houses.winter_evening(seed)
    stop = 2400 if quick else int(house.duration)
    loads = [x[0] for x in house.sample(0.0, stop)]
    cars = [LaggedCar(float(MAX_AMPS)), LaggedCar(float(MAX_AMPS))]
    loadpoints = [EvccFast(EVENING_LIMIT), EvccFast(EVENING_LIMIT)]
    # Warm start from the house alone: both cars are plugged in as the evening starts.
    metrics = bench.Metrics(EVENING_LIMIT, 1, preload=(loads[0],))
    for t, h in enumerate(loads):
        if policy == "oracle":
            split = oracle_split(EVENING_LIMIT - h, [c.amp_secs for c in cars])
            for car, amps in zip(cars, split, strict=True):
                car.set_now(amps)
        else:
            for car in cars:
                car.advance(t)
            supply = h + sum(c.draw for c in cars)  # one reading, seen by both loadpoints
            for lp, car in zip(loadpoints, cars, strict=True):
                lp.tick(t, supply, car)
            for car in cars:
                car.advance(t)
        draw = sum(c.draw for c in cars)
        for car in cars:
            car.amp_secs += car.draw
        metrics.add((h + draw,), draw)
    metrics.finish()
    return _two_car_result(policy, seed, metrics, cars)


TWO_CAR_HEADER = (
    f"{'policy':<14}{'over A*s':>10}{'longest s':>11}{'trips c/t':>11}{'peak heat %':>13}"
    f"{'car 1 kWh':>11}{'car 2 kWh':>11}{'Jain':>7}{'commands':>10}{'$/evening':>11}"
)


def _two_car_row(policy: str, rs: Sequence[TwoCarResult]) -> str:
    n = len(rs)
    cost = sum(_cost(r.commands, r.data) for r in rs) / n
    money = "free" if policy == "oracle" else f"{cost:.3f}"
    return (
        f"{policy:<14}{sum(r.overload_amp_secs for r in rs) / n:>10.0f}"
        f"{max(r.longest_overload for r in rs):>11d}"
        f"{sum(r.trips_conservative for r in rs):>6d}/{sum(r.trips_typical for r in rs):<4d}"
        f"{max(r.peak_heat_pct for r in rs):>13.0f}"
        f"{sum(r.car_kwh[0] for r in rs) / n:>11.2f}{sum(r.car_kwh[1] for r in rs) / n:>11.2f}"
        f"{sum(r.fairness for r in rs) / n:>7.3f}{sum(r.commands for r in rs) / n:>10.1f}"
        f"{money:>11}"
    )


def two_car_table(*, quick: bool = False) -> str:
    """The two-car evening table: means over the seeds (trips summed, peaks the worst)."""
    seeds = EVENING_SEEDS[:1] if quick else EVENING_SEEDS
    span = "17:00-17:40" if quick else "17:00-20:00"
    lines = [
        f"Two cars, winter evening {span} (1 phase, homeMaxAmps {EVENING_LIMIT:g} A), both"
        f" asking 16 A; seeds {', '.join(map(str, seeds))}: means, trips summed, worst peak",
        TWO_CAR_HEADER,
    ]
    for policy in TWO_CAR_POLICIES:
        lines.append(_two_car_row(policy, [run_two_cars(policy, s, quick=quick) for s in seeds]))
    note = ours_two_cars_note()
    if note is None and OURS_TWO_CARS is not None:
        lines.append(_two_car_row("ours", [OURS_TWO_CARS(s, quick) for s in seeds]))
        lines.append(
            _two_car_row(
                OURS_SHORT_PAUSE,
                [ours_two_cars(s, quick, pause_after=SHORT_PAUSE) for s in seeds],
            )
        )
    else:
        lines.append(f"{'ours':<14}{note}")
    return "\n".join(lines)


def report(*, quick: bool = False) -> str:
    """Both tables (deterministic text)."""
    return solar_table(quick=quick) + "\n\n" + two_car_table(quick=quick)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tesla_smart_charger.bench.solar`: print both tables."""
    parser = argparse.ArgumentParser(
        prog="python -m tesla_smart_charger.bench.solar",
        description="Solar-day and two-car-evening benchmark tables (virtual time).",
    )
    parser.add_argument("--quick", action="store_true", help="short windows (for the tests)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(report(quick=args.quick))
    print(f"\nruntime {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


# --- ours: the real controllers behind the fleet's split, in virtual time --------------------


def _ours_config(limit: float, *, pause: bool) -> core.ControlConfig:
    """Shipped defaults for this house (as bench.control_config), measured, 1 phase."""
    settings = Settings.model_construct(
        home_max_amps=limit,
        charger_max_amps=float(MAX_AMPS),
        charger_min_amps=float(MIN_AMPS),
        supply_phases=1,
        pause_when_overloaded=pause,
    )
    return core.ControlConfig.from_settings(settings, measured=True)


def _car(vin: str, *, plugged: bool = True) -> CarModel:
    """A 16 A car on a 16 A EVSE that never fills, as the other tables' car (`make_car`)."""
    return CarModel(
        vin=vin,
        state="online",
        plugged=plugged,
        charging_state="Charging",
        request_amps=MAX_AMPS,
        pilot_amps=MAX_AMPS,
        ramp_delay=bench.RAMP_DELAY,
        capacity_kwh=None,
        sleep_after=SLEEP_AFTER,
    )


# The peers' rows model a car that never sleeps (LaggedCar); ours gets the same car. A real
# Tesla paused for solar sleeps after ~10 min and the daemon never wakes it (docs/benchmarks.md).
SLEEP_AFTER = float("inf")
SOLAR_VIN = "5YJ3E1EA7KF000001"
TWO_VINS = ("5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002")


async def _ours_solar(sky: str, quick: bool, seed: int) -> SolarResult:
    start, stop = QUICK_WINDOW if quick else (SUN_START, SUN_STOP)
    loads, pvs = _solar_inputs(sky, seed, start, stop, 1)
    shell: Shell | None = None
    car: CarModel | None = None
    export = imported_for_car = pv_amp_secs = car_amp_secs = 0.0
    commands = data = 0
    for k, (h, p) in enumerate(zip(loads, pvs, strict=True)):
        t = start + k
        plugged = PLUG_IN <= t < UNPLUG
        if plugged and shell is None:
            # The daemon's shell from the moment the car is plugged in, at the car's own 16 A
            # (a Tesla starts at its maximum), as a fresh controller would find it.
            await asyncio.sleep(t - asyncio.get_running_loop().time())
            cfg = _ours_config(SOLAR_LIMIT, pause=True)
            car = _car(SOLAR_VIN)
            car.advance(float(t))
            shell = Shell([car], cfg, settings_for(SOLAR_LIMIT, cfg), seed=seed, mode="solar")
            shell.start()
        elif not plugged and shell is not None:
            await shell.stop()
            commands += shell.api.commands
            data += shell.api.data_calls
            shell = car = None
        draw = 0.0
        if shell is not None and car is not None:
            await shell.at(float(t))
            draw = car.current_draw(float(t))
            await shell.read((h - p + draw,))
        grid = h + draw - p
        export += max(0.0, -grid)
        imported_for_car += max(0.0, grid) - max(0.0, h - p)
        car_amp_secs += draw
        pv_amp_secs += p
    if shell is not None:
        await shell.stop()
        commands += shell.api.commands
        data += shell.api.data_calls
    kwh = VOLTS / 3.6e6
    return SolarResult(
        "ours",
        pv_amp_secs * kwh,
        export * kwh,
        car_amp_secs * kwh,
        imported_for_car * kwh,
        commands,
        data,
    )


def ours_solar(sky: str, quick: bool, *, seed: int = PV_SEED) -> SolarResult:
    """The daemon's shell in solar mode through the solar day (one car, same inputs)."""
    return quietly(_ours_solar(sky, quick, seed))


async def _ours_two_cars(seed: int, quick: bool, pause_after: float | None) -> TwoCarResult:
    house = houses.winter_evening(seed)
    stop = 2400 if quick else int(house.duration)
    loads = [x[0] for x in house.sample(0.0, stop)]
    cfg = _ours_config(EVENING_LIMIT, pause=True)
    if pause_after is not None:
        cfg = replace(cfg, pause_after_secs=pause_after)
    cars = [_car(vin) for vin in TWO_VINS]
    shell = Shell(cars, cfg, settings_for(EVENING_LIMIT, cfg), seed=seed)
    shell.start()
    metrics = bench.Metrics(EVENING_LIMIT, 1, preload=(loads[0],))
    tally = [LaggedCar(), LaggedCar()]  # only its counters: what each car drew
    for t, h in enumerate(loads):
        await shell.at(float(t))
        draws = [car.current_draw(float(t)) for car in cars]
        for count, amps in zip(tally, draws, strict=True):
            count.amp_secs += amps
        supply = h + sum(draws)
        metrics.add((supply,), sum(draws))
        await shell.read((supply,))
    await shell.stop()
    metrics.finish()
    tally[0].commands = shell.api.commands  # the row shows the sum of both cars
    tally[0].data = shell.api.data_calls
    return _two_car_result("ours", seed, metrics, tally)


def ours_two_cars(seed: int, quick: bool, *, pause_after: float | None = None) -> TwoCarResult:
    """Two cars on the daemon's fleet (fast mode), each with its controller and escalation.

    pauseWhenOverloaded on (with two cars the shares decide who gives way); pauseAfterSecs the
    shipped 120 s unless `pause_after` says otherwise. When the house leaves less than two
    minimums both cars hold their minimum until the given-up car pauses: after pauseAfterSecs,
    or sooner when that overload would heat the breaker (`breaker.pause_deadline`).
    """
    return quietly(_ours_two_cars(seed, quick, pause_after))


OURS_SOLAR = ours_solar
OURS_TWO_CARS = ours_two_cars


if __name__ == "__main__":
    sys.exit(main())
