"""The capacity tariff benchmark: an evening under a 2.5 kW import limit in 15-minute windows.

`python -m tesla_smart_charger.bench.capacity` prints one table. The trace is
`simulator.house.capacity_evening` (18:00-22:00, one phase, a 30 A main; the house alone stays
under the limit in every window, so a window over it is the charging policy's doing) with a
16 A car plugged in all evening and hungry for all of it. Three rows:

- oracle: knows the whole trace and puts, in each window, exactly the energy the limit leaves
  (at most 16 A, at least chargerMinAmps or nothing, never over the breaker): the most any
  policy can charge without a window over the limit;
- evcc-like: evcc has no window-average guard (requests open since 2022); the nearest it
  ships is a circuit's `maxPower`, an instantaneous limit: every 30 s (its `interval`) the
  current is set so the grid's import now is at most the limit (old + headroom, truncated;
  below the minimum charge_stop, back on at the first interval with room);
- ours: the daemon's own runtime (`bench.shell.Shell`: ChargeService, MeterPoller with the
  capacity guard, TeslaClient against the in-process Fleet API) on the virtual-time loop, with
  a car that stays awake like the other rows' (evcc wakes the car);
- ours with the simulator's car, which sleeps after 10 minutes paused: the daemon never wakes
  a car, so a capacity pause longer than that ends the evening's charging.

Per row: the car's energy, how many windows went over the limit, the worst window, and the
commands sent. The model's lags are the other tables': a command lands `COMMAND_LATENCY`
after it is sent and the car follows `RAMP_DELAY` later.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from tesla_smart_charger.bench import common
from tesla_smart_charger.bench.shell import Shell, quietly, settings_for
from tesla_smart_charger.control.capacity import CapacityConfig
from tesla_smart_charger.runtime.capacity import CapacityGuard
from tesla_smart_charger.simulator import house as houses

VOLTS = 230.0
LIMIT_KW = 2.5
WINDOW_MINS = 15
BREAKER_AMPS = 30.0  # homeMaxAmps
MARGIN_AMPS = 1.0  # safetyMarginAmps
CAR_MAX_AMPS = 16
CAR_MIN_AMPS = 6
COMMAND_LATENCY = 1.0  # as in bench.evening: s from sending a command to the car acting on it
RAMP_DELAY = 3.0  # s from the car accepting a setpoint to drawing the new current
EVCC_INTERVAL = 30  # s, evcc's default `interval`
SEED = 12
SLEEP_AFTER = 600.0  # the simulated car sleeps after 10 minutes online and not charging
# 18:00 in Brussels on a winter evening: the windows follow this wall clock.
START = datetime(2026, 1, 14, 18, 0, 0, tzinfo=timezone(timedelta(hours=1)))


@dataclass(frozen=True)
class CapacityTrace:
    """The house's amps once a second from `start`, and the tariff it lives under."""

    house: tuple[float, ...]
    start: datetime = START
    limit_kw: float = LIMIT_KW
    window_mins: int = WINDOW_MINS
    seed: int = SEED

    @property
    def window_secs(self) -> int:
        """The window's length in seconds."""
        return self.window_mins * 60

    def windows(self) -> list[range]:
        """Each whole window of the trace as a range of seconds (the trace starts on one)."""
        w = self.window_secs
        return [range(i, i + w) for i in range(0, len(self.house) - w + 1, w)]


def build_trace(seed: int = SEED, *, quick: bool = False) -> CapacityTrace:
    """The capacity evening at `seed`; `quick` keeps its first hour (the tests)."""
    h = houses.capacity_evening(seed)
    stop = 3600 if quick else int(h.duration)
    return CapacityTrace(tuple(a[0] for a in h.sample(0.0, stop)), seed=seed)


@dataclass(frozen=True)
class CapacityResult:
    """One policy's evening."""

    policy: str
    car_kwh: float
    windows: tuple[float, ...]  # each window's average import, kW
    limit_kw: float
    commands: int
    overload_secs: int  # seconds over the breaker's rating

    @property
    def windows_over(self) -> int:
        """Windows whose average import went over the limit (what the tariff bills)."""
        return sum(1 for w in self.windows if w > self.limit_kw + 1e-9)

    @property
    def worst_kw(self) -> float:
        """The highest window: the month's peak, if this evening were the month."""
        return max(self.windows, default=0.0)


def score(
    policy: str, trace: CapacityTrace, car_amps: Sequence[float], commands: int
) -> CapacityResult:
    """The figures of a run: per second, the car's amps (the house is the trace's)."""
    supply = [h + c for h, c in zip(trace.house, car_amps, strict=True)]
    windows = tuple(sum(supply[t] for t in w) * VOLTS / len(w) / 1000.0 for w in trace.windows())
    return CapacityResult(
        policy,
        car_kwh=sum(car_amps) * VOLTS / 3.6e6,
        windows=windows,
        limit_kw=trace.limit_kw,
        commands=commands,
        overload_secs=sum(1 for s in supply if s > BREAKER_AMPS),
    )


# --- the oracle ---------------------------------------------------------------------------------


def run_oracle(trace: CapacityTrace) -> CapacityResult:
    """The most energy any policy can put in the car with no window over the limit.

    Per second the car may draw up to 16 A within the breaker (less its margin), and either
    nothing or at least the minimum; per window what the limit leaves after the house. The
    seconds with the most room are filled first, the last one partly: the window's energy is
    exactly the smaller of the two.
    """
    car = [0.0] * len(trace.house)
    budget_as = trace.limit_kw * 1000.0 * trace.window_secs / VOLTS  # amp-seconds per window
    for w in trace.windows():
        left = budget_as - sum(trace.house[t] for t in w)
        room = {t: _room(trace.house[t]) for t in w}
        for t in sorted(w, key=lambda t: -room[t]):
            if left < CAR_MIN_AMPS or room[t] < CAR_MIN_AMPS:
                break
            amps = min(room[t], left)
            car[t] = amps
            left -= amps
    return score("oracle", trace, car, commands=0)


def _room(house: float) -> float:
    """What the breaker leaves the car (whole amps, at most 16)."""
    return float(min(CAR_MAX_AMPS, math.floor(BREAKER_AMPS - MARGIN_AMPS - house)))


# --- the evcc-like policy -------------------------------------------------------------------


class LaggedCar:
    """A car that follows a command `COMMAND_LATENCY + RAMP_DELAY` after it was sent."""

    def __init__(self, amps: int) -> None:
        self.amps = float(amps)
        self.pending: list[tuple[float, float]] = []  # (when it shows, amps)

    def command(self, t: float, amps: float) -> None:
        """Send a setpoint (0: charge_stop)."""
        self.pending.append((t + COMMAND_LATENCY + RAMP_DELAY, amps))

    def draw(self, t: float) -> float:
        """What the car draws at `t`."""
        while self.pending and self.pending[0][0] <= t:
            self.amps = self.pending.pop(0)[1]
        return self.amps


def run_evcc_like(trace: CapacityTrace, interval: int = EVCC_INTERVAL) -> CapacityResult:
    """evcc's circuit `maxPower` as the limit: the import now, not the window's average."""
    car = LaggedCar(CAR_MAX_AMPS)
    limit_amps = trace.limit_kw * 1000.0 / VOLTS
    offered: float = CAR_MAX_AMPS
    commands = 0
    draws: list[float] = []
    for t, house in enumerate(trace.house):
        draw = car.draw(float(t))
        draws.append(draw)
        if t % interval:
            continue
        grid = house + draw
        headroom = min(limit_amps - grid, BREAKER_AMPS - grid)
        want = float(math.trunc(min(CAR_MAX_AMPS, draw + headroom)))
        if want < CAR_MIN_AMPS:
            want = 0.0
        if want != offered:
            restart = offered == 0.0
            offered = want
            car.command(float(t), want)
            commands += 2 if restart else 1  # a restart is set_charging_amps + charge_start
    return score("evcc-like", trace, draws, commands)


# --- ours: the daemon's runtime ---------------------------------------------------------------


def bench_trace(trace: CapacityTrace) -> common.Trace:
    """The evening as the other tables' trace (the shell's car and settings are built from it)."""
    return common.Trace(
        "capacity-evening",
        "capacity evening 18:00-22:00",
        1,
        BREAKER_AMPS,
        tuple((a,) for a in trace.house),
        plugged_at_start=True,
        seed=trace.seed,
    )


async def _drive_ours(trace: CapacityTrace, *, sleep_after: float | None) -> CapacityResult:
    """The daemon's shell with the capacity guard on its meter poller, as `install_capacity`
    wires it, the wall clock the trace's evening on the virtual loop.

    `sleep_after`: the car sleeps after this long paused (None: it stays awake, as the other
    rows' cars do); the daemon never wakes it, so a pause longer than that ends the evening.
    """
    bt = bench_trace(trace)
    cfg = common.control_config(bt)
    car = common.make_car(bt)
    car.sleep_after = math.inf if sleep_after is None else sleep_after
    shell = Shell([car], cfg, settings_for(bt.limit, cfg), seed=trace.seed)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    guard = CapacityGuard(
        CapacityConfig(trace.limit_kw, trace.window_mins),
        wall=lambda: trace.start + timedelta(seconds=loop.time() - t0),
    )
    service = shell.services[0]
    guard.bound = lambda: service.state.capacity_bound
    shell.poller.capacity = guard
    shell.start()
    draws: list[float] = []
    for t, load in enumerate(trace.house):
        now = t0 + float(t)
        await shell.at(now)
        draw = car.current_draw(now)
        draws.append(draw)
        await shell.read((load + draw,))
    await shell.stop()
    name = "ours" if sleep_after is None else f"ours, car asleep after {sleep_after / 60:.0f} min"
    return score(name, trace, draws, shell.api.commands)


def run_ours(trace: CapacityTrace) -> CapacityResult:
    """Our row: the daemon's runtime through the evening in virtual time, the car awake."""
    return quietly(_drive_ours(trace, sleep_after=None))


def run_ours_sleeping(trace: CapacityTrace) -> CapacityResult:
    """The same with the simulator's car, which sleeps after 10 minutes paused."""
    return quietly(_drive_ours(trace, sleep_after=SLEEP_AFTER))


# --- the table ----------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[CapacityTrace], CapacityResult]] = {
    "evcc-like": run_evcc_like,
    "ours": run_ours,
    "ours-sleeps": run_ours_sleeping,
    "oracle": run_oracle,
}


def format_table(trace: CapacityTrace, results: Sequence[CapacityResult]) -> str:
    """The table docs/benchmarks.md shows."""
    oracle = next((r for r in results if r.policy == "oracle"), None)
    lines = [
        f"capacity evening 18:00-22:00 (1 phase, 30 A main, {trace.limit_kw:g} kW import limit,"
        f" {trace.window_mins}-minute windows, seed {trace.seed}; {len(trace.windows())} windows)",
        "",
        "| policy | car kWh | % of oracle | windows over the limit | worst window kW"
        " | commands | s over the breaker |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = f"{100.0 * r.car_kwh / oracle.car_kwh:.0f} %" if oracle and oracle.car_kwh else "-"
        lines.append(
            f"| {r.policy} | {r.car_kwh:.2f} | {share} | {r.windows_over} | {r.worst_kw:.2f}"
            f" | {r.commands} | {r.overload_secs} |"
        )
    return "\n".join(lines)


def run_all(trace: CapacityTrace, policies: Sequence[str]) -> list[CapacityResult]:
    """Each policy's result on `trace`, in the order given."""
    return [RUNNERS[p](trace) for p in policies]


def report(*, quick: bool = False, seed: int = SEED) -> str:
    """The capacity tariff table (deterministic text)."""
    trace = build_trace(seed, quick=quick)
    return format_table(trace, run_all(trace, list(RUNNERS)))


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the first hour only")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    print(report(quick=args.quick, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
