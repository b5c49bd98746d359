"""The controller benchmark: policies driven through reference house traces in virtual time.

`python -m tesla_smart_charger.bench` (`make bench`, bench/tables.py) prints one table per trace
and a targets section; docs/benchmarks.md explains the model and the policies. Nothing sleeps.
The reference policies (step, evcc-like, the oracles) run on a small callback scheduler with a
virtual clock; ours is the daemon's own shell (`ChargeService` with its escalation, the meter
poller and `TeslaClient`) on a virtual-time asyncio loop (bench/shell.py). Both drive the
simulated car (`simulator.car.CarModel`) with the same latencies. Every figure is deterministic
for the seeds.

The model, per second of a trace:
- the meter reads house + car draw at that instant, once a second (a Shelly polled at 1 Hz);
- a command reaches the car `COMMAND_LATENCY` after it is sent, a data read answers after
  `DATA_LATENCY`; the car's draw follows a new setpoint `RAMP_DELAY` after the command lands;
- overload is judged on the worst phase against homeMaxAmps (not homeMaxAmps - margin).
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tesla_smart_charger.bench.common import (
    BASE_SEEDS,
    CHARGER_MAX_AMPS,
    CHARGER_MIN_AMPS,
    COMMAND_LATENCY,
    DATA_LATENCY,
    EVCC_DATA_CACHE,
    EVCC_INTERVAL,
    HOUR,
    INTERVALS,
    POLICIES,
    STEP_DOWN,
    STEP_NO_CHANGE_ROUNDS,
    STEP_RETRIES,
    STEP_RETRY_WAIT,
    STEP_SLEEP_SECS,
    STEP_STABILISE_ROUNDS,
    Metrics,
    Phases,
    Result,
    Trace,
    build_trace,
    control_config,
    make_car,
    result,
    supply,
)
from tesla_smart_charger.bench.shell import run_shell
from tesla_smart_charger.car.fleet_api import (
    interpret_reply,
)
from tesla_smart_charger.simulator.car import BillingCounter, CarModel, envelope

# --- virtual time and the Fleet API -------------------------------------------------------


class Clock:
    """A virtual clock with callbacks: nothing ever sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Run `callback` at virtual time `when`."""
        heapq.heappush(self._heap, (when, next(self._seq), callback))

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` `delay` seconds from now."""
        self.at(self.now + delay, callback)

    def run_until(self, when: float) -> None:
        """Run every callback due up to `when`, in time order, then stand at `when`."""
        heap = self._heap
        while heap and heap[0][0] <= when:
            t, _, callback = heapq.heappop(heap)
            self.now = t
            callback()
        self.now = when


Reply = tuple[int, dict[str, Any]]


class Fleet:
    """The car as the Fleet API and tesla-http-proxy show it, with latency and billing."""

    def __init__(self, car: CarModel, clock: Clock) -> None:
        self.car = car
        self.clock = clock
        self.billing = BillingCounter()
        self.commands = 0
        self.data_calls = 0

    @property
    def wakes(self) -> int:
        """Times the car was woken."""
        return self.car.wakes

    def command(self, name: str, body: dict[str, Any], done: Callable[[Reply], None]) -> None:
        """POST a command; the car acts on it and `done` gets the reply after the latency."""

        def land() -> None:
            status, payload = self.car.command(name, body, self.clock.now)
            self.billing.record("wake" if name == "wake_up" else "command", status)
            done((status, payload))

        if name != "wake_up":
            self.commands += 1
        self.clock.after(COMMAND_LATENCY, land)

    def vehicle(self, done: Callable[[Reply], None]) -> None:
        """GET /api/1/vehicles/{vin}: the state, without waking or touching the car."""

        def answer() -> None:
            self.car.advance(self.clock.now)
            self.billing.record("data", 200)
            done((200, envelope(self.car.vehicle_json())))

        self.data_calls += 1
        self.clock.after(DATA_LATENCY, answer)

    def vehicle_data(self, done: Callable[[Reply], None]) -> None:
        """GET vehicle_data?endpoints=charge_state: 408 when asleep; keeps an idle car awake."""

        def answer() -> None:
            car, now = self.car, self.clock.now
            car.advance(now)
            if car.state != "online":
                status, payload = 408, envelope(None, "vehicle unavailable")
            else:
                car.touch(now)
                status, payload = 200, envelope({"charge_state": car.charge_state_json()})
            self.billing.record("data", status)
            done((status, payload))

        self.data_calls += 1
        self.clock.after(DATA_LATENCY, answer)


def _charge_state(reply: Reply) -> dict[str, Any] | None:
    status, payload = reply
    if status != 200:
        return None
    cs: dict[str, Any] = payload["response"]["charge_state"]
    return cs


class Policy(Protocol):
    """What the driver loop needs from a policy under test."""

    def on_reading(self, t: float, supply: Phases) -> None:
        """A meter reading at integer second `t`."""

    def on_plug(self, t: float, plugged: bool) -> None:
        """The driver plugged the car in or out at `t`."""


# --- policy 1: the original project's push mode -------------------------------------------


class StepPolicy:
    """The seed's `/overload` from a Shelly over-power URL action, then its supervised loop.

    First cut as v2 does it (clamped): max(chargerMinAmps, floor(actual x 0.5)); then v1's
    thread: up to 10 rounds of sleepTimeSecs waiting for the load to settle (leaving early if
    still overloaded), then every sleepTimeSecs: read vehicle_data, new = actual - (meter -
    homeMaxAmps) clamped to [min, max], sent if it changed; the session ends when the car is not
    charging, after 5 rounds without change, or once actual reaches chargerMaxAmps.
    """

    def __init__(self, clock: Clock, fleet: Fleet, trace: Trace) -> None:
        self.clock = clock
        self.fleet = fleet
        self.limit = trace.limit
        self.supply: Phases = (0.0,) * trace.phases
        self.was_over = [False] * trace.phases
        self.session = False

    def on_plug(self, t: float, plugged: bool) -> None:
        """The seed does not know about plugging."""

    def on_reading(self, t: float, supply: Phases) -> None:
        """The Shelly's over-power action fires on an upward crossing (per phase)."""
        self.supply = supply
        fired = False
        for i, amps in enumerate(supply):
            over = amps > self.limit
            if over and not self.was_over[i]:
                fired = True
            self.was_over[i] = over
        if fired and not self.session:  # a running handler answers 202 and does nothing
            self.session = True
            self._read_car(self._first_cut)

    def _meter(self) -> float:
        # The seed sums the Shelly's channels; with one phase that is the supply. In a
        # three-phase house we give it the worst phase (its most favourable reading).
        return max(self.supply)

    def _read_car(self, then: Callable[[dict[str, Any] | None], None], attempt: int = 1) -> None:
        def done(reply: Reply) -> None:
            cs = _charge_state(reply)
            if cs is None and attempt < STEP_RETRIES:
                self.clock.after(STEP_RETRY_WAIT, lambda: self._read_car(then, attempt + 1))
                return
            then(cs)

        self.fleet.vehicle_data(done)

    def _end(self) -> None:
        self.session = False

    def _first_cut(self, cs: dict[str, Any] | None) -> None:
        if cs is None or cs["charging_state"] != "Charging":
            self._end()
            return
        actual = round(cs["charger_actual_current"])
        new = max(CHARGER_MIN_AMPS, math.floor(actual * STEP_DOWN))
        self.fleet.command(
            "set_charging_amps", {"charging_amps": new}, lambda _r: self._stabilise(0)
        )

    def _stabilise(self, rounds: int) -> None:
        def check() -> None:
            if self._meter() > self.limit or rounds + 1 >= STEP_STABILISE_ROUNDS:
                self._read_car(lambda cs: self._round(cs, 0))
            else:
                self._stabilise(rounds + 1)

        self.clock.after(STEP_SLEEP_SECS, check)

    def _round(self, cs: dict[str, Any] | None, unchanged: int) -> None:
        if (
            cs is None
            or cs["charging_state"] != "Charging"
            or unchanged >= STEP_NO_CHANGE_ROUNDS
            or round(cs["charger_actual_current"]) >= CHARGER_MAX_AMPS
        ):
            self._end()
            return
        actual = float(cs["charger_actual_current"])
        new = actual - (self._meter() - self.limit)
        new = min(float(CHARGER_MAX_AMPS), max(float(CHARGER_MIN_AMPS), new))
        amps = round(new)

        def next_round() -> None:
            self.clock.after(
                STEP_SLEEP_SECS,
                lambda: self._read_car(lambda c: self._round(c, 0 if changed else unchanged + 1)),
            )

        changed = amps != round(actual)
        if changed:
            self.fleet.command(
                "set_charging_amps", {"charging_amps": amps}, lambda _r: next_round()
            )
        else:
            next_round()


# --- policy 2: evcc-like ------------------------------------------------------------------


class EvccLikePolicy:
    """evcc's load management as `peers-evcc-and-others.md` describes it (fast mode, 16 A).

    Every `interval` s (at `offset` past the minute grid): headroom = homeMaxAmps - worst
    measured phase; a request above old + headroom is capped to it (old = the car's current as
    the charger measures it), truncated to whole amps; below chargerMinAmps -> charge_stop at
    once. In fast ("now") mode evcc's loadpoint calls setLimit(maxCurrent) on every cycle with
    no enable timer (`fastCharging()` in core/loadpoint.go; the 1 min Enable.Delay is read only
    by the PV-mode path), so charging restarts on the next tick with room for the minimum (a
    sleeping car is woken first). Commands only on change; vehicle data read once per 15 min
    cache while charging.
    """

    def __init__(
        self,
        clock: Clock,
        fleet: Fleet,
        trace: Trace,
        interval: int = EVCC_INTERVAL,
        offset: int = 0,
    ) -> None:
        self.clock = clock
        self.fleet = fleet
        self.limit = trace.limit
        self.interval = interval
        self.offset = offset % interval
        self.plugged = trace.plugged_at_start
        self.enabled = self.plugged
        self.offered: int | None = None
        self.last_data: float | None = None
        self.busy = False

    def on_plug(self, t: float, plugged: bool) -> None:
        """The wallbox reports the connection locally (free); a Tesla starts on plug-in."""
        self.plugged = plugged
        self.enabled = plugged
        self.offered = None

    def on_reading(self, t: float, supply: Phases) -> None:
        """Act on the site loop's interval."""
        if (int(t) - self.offset) % self.interval or not self.plugged or self.busy:
            return
        worst = max(supply)
        headroom = self.limit - worst
        want = CHARGER_MAX_AMPS
        if self.enabled:
            old = self.fleet.car.current_draw(t)  # the charger's own meter, read locally
            new = float(want)
            if new - old > headroom:
                new = max(0.0, old + headroom)
            amps = math.trunc(new)
            if amps < CHARGER_MIN_AMPS:
                self.enabled = False
                self._send(["charge_stop"])
                return
            if amps != self.offered:
                self.offered = amps
                self._send([("set_charging_amps", amps)])
            if self.last_data is None or t - self.last_data >= EVCC_DATA_CACHE:
                self.last_data = t
                self.fleet.vehicle_data(lambda _r: None)
            return
        amps = math.trunc(min(float(want), max(0.0, headroom)))
        if amps < CHARGER_MIN_AMPS:
            return
        self.enabled = True
        steps: list[str | tuple[str, int]] = []
        if amps != self.offered:
            self.offered = amps
            steps.append(("set_charging_amps", amps))
        steps.append("charge_start")
        self._send(steps)

    def _send(self, steps: Sequence[str | tuple[str, int]], woke: bool = False) -> None:
        """Send commands in order; on 'asleep' wake the car once and retry (evcc does)."""
        if not steps:
            self.busy = False
            return
        self.busy = True
        step = steps[0]
        name, body = (step, {}) if isinstance(step, str) else (step[0], {"charging_amps": step[1]})

        def done(reply: Reply) -> None:
            outcome, _ = interpret_reply(*reply, what=name, command=name)
            if outcome == "asleep" and not woke:
                self.fleet.command("wake_up", {}, lambda _r: self._send(steps, woke=True))
                return
            self._send(steps[1:], woke)

        self.fleet.command(name, body, done)


# --- running ------------------------------------------------------------------------------


def run_oracle(
    trace: Trace,
    *,
    margin: float = 0.0,
    minimum: int = CHARGER_MIN_AMPS,
    pause: bool = True,
    hold: int = 0,
    name: str = "oracle",
) -> Result:
    """The car draws what the house leaves (less `margin`), to the amp, each second, instantly.

    Below `minimum` it pauses (`pause`) or holds the minimum, as ours does with
    pauseWhenOverloaded off. The unmatched oracle keeps no margin and pauses; the matched one
    keeps ours' margin, minimum and pause rule. With `hold` > 0 it lowers at once but draws
    more only once the room for it has lasted `hold` seconds: the least of the last `hold` + 1
    seconds' room (ours' sleepTimeSecs, with no latency and no wasted second).
    """
    changes = dict(trace.plug_changes)

    def car_at(load: Phases, plugged: bool) -> int:
        if not plugged:
            return 0
        room = math.floor(trace.limit - margin - max(load) + 1e-9)
        if room >= minimum:
            return min(CHARGER_MAX_AMPS, room)
        return 0 if pause else minimum

    plugged = trace.plugged_at_start
    first = trace.house[0]
    m = Metrics(trace.limit, trace.phases, supply(trace, first, car_at(first, plugged)))
    window: deque[tuple[int, int]] = deque()  # (second, room): a sliding minimum
    for t, load in enumerate(trace.house):
        plugged = changes.get(t, plugged)
        room = car_at(load, plugged)
        if hold:
            while window and window[-1][1] >= room:
                window.pop()
            window.append((t, room))
            if window[0][0] < t - hold:
                window.popleft()
            room = window[0][1]
        car = float(room)
        m.add(supply(trace, load, car), car)
    return result(name, m, None, trace)


def run_matched_oracle(trace: Trace) -> Result:
    """The oracle under ours' constraints: same margin, same minimum, same pause rule."""
    cfg = control_config(trace)
    return run_oracle(
        trace,
        margin=cfg.safety_margin,
        minimum=int(cfg.charger_min_amps),
        pause=cfg.pause_when_overloaded,
        name="oracle-matched",
    )


def run_held_oracle(trace: Trace) -> Result:
    """The matched oracle that also raises only after sleepTimeSecs of room, as ours must."""
    cfg = control_config(trace)
    return run_oracle(
        trace,
        margin=cfg.safety_margin,
        minimum=int(cfg.charger_min_amps),
        pause=cfg.pause_when_overloaded,
        hold=round(cfg.sleep_secs),
        name="oracle-held",
    )


def run_policy(trace: Trace, policy: str, offset: int = 0) -> Result:
    """Drive one policy through one trace, second by second, in virtual time."""
    if policy == "oracle":
        return run_oracle(trace)
    if policy == "oracle-matched":
        return run_matched_oracle(trace)
    if policy == "oracle-held":
        return run_held_oracle(trace)
    if policy == "ours":
        return run_shell(trace, control_config(trace))
    if policy == "ours-min0":
        # chargerMinAmps 0: the car may go below 6 A (sub-5 A sent twice) down to 0 A. Tesla
        # keeps the session at 0 A, so the car can absorb an overload the house alone nearly
        # causes, where the default holds 6 A and says it cannot resolve it.
        return run_shell(trace, replace(control_config(trace), charger_min_amps=0), policy)
    clock = Clock()
    car = make_car(trace)
    fleet = Fleet(car, clock)
    p: Policy
    if policy in INTERVALS:
        p = EvccLikePolicy(clock, fleet, trace, INTERVALS[policy], offset)
    elif policy == "step":
        p = StepPolicy(clock, fleet, trace)
    else:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    m = Metrics(trace.limit, trace.phases, supply(trace, trace.house[0], car.current_draw(0.0)))
    changes = dict(trace.plug_changes)
    single = trace.phases == 1
    for t, load in enumerate(trace.house):
        now = float(t)
        clock.run_until(now)
        if t in changes:
            if changes[t]:
                car.plug_in(now)
            else:
                car.unplug(now)
            p.on_plug(now, changes[t])
        draw = car.current_draw(now)
        now_supply: Phases = (load[0] + draw,) if single else tuple(a + draw for a in load)
        m.add(now_supply, draw)
        p.on_reading(now, now_supply)
    return result(policy, m, fleet, trace, offset)


@dataclass(frozen=True)
class Plan:
    """What one benchmark run covers: seeds per trace, tick offsets, the policies."""

    quick: bool = False
    seeds: int = 5  # per evening trace
    week_seeds: int = 1  # the week is 7 seeded days already; each seed costs ~20 s of `ours`
    offset_step: int = 1  # every tick offset of the interval policies on the evenings
    week_offset_step: int = 5  # every 5th offset on the week (the 30 s budget)
    week_min0: bool = False  # ours-min0 on the week costs another ~20 s

    def seed_list(self, key: str) -> list[int]:
        """The seeds a trace runs at."""
        n = self.week_seeds if key == "random-week" else self.seeds
        return [BASE_SEEDS[key] + i for i in range(max(1, n))]

    def offsets(self, key: str, policy: str) -> list[int]:
        """The tick offsets a policy runs at (just 0 for event-driven ones)."""
        if policy not in INTERVALS:
            return [0]
        step = self.week_offset_step if key == "random-week" else self.offset_step
        return list(range(0, INTERVALS[policy], max(1, step)))

    def policies(self, key: str) -> list[str]:
        """The policies run on a trace."""
        if key == "random-week" and not self.week_min0:
            return [p for p in POLICIES if p != "ours-min0"]
        return list(POLICIES)


QUICK_PLAN = Plan(quick=True, seeds=2, week_seeds=1, offset_step=10, week_offset_step=10)

Job = tuple[str, int, str, bool, tuple[int, ...]]


def _job(job: Job) -> tuple[str, list[Result]]:
    key, seed, policy, quick, offsets = job
    trace = build_trace(key, seed=seed, quick=quick)
    return key, [run_policy(trace, policy, offset) for offset in offsets]


def _cost(job: Job) -> float:
    """A rough runtime estimate, to start the slowest jobs first."""
    key, _, policy, _, offsets = job
    per_second = 35.0 if policy.startswith("ours") else 1.5
    length = 7 * 24.0 if key == "random-week" else 3.0
    return per_second * length * len(offsets)


def run_all(
    keys: Sequence[str], plan: Plan = Plan(), *, jobs: int = 2
) -> dict[str, dict[str, list[Result]]]:
    """Every policy on every trace at every seed (and offset); energy shares filled in."""
    work: list[Job] = []
    for key in keys:
        for seed in plan.seed_list(key):
            for policy in plan.policies(key):
                work.append((key, seed, policy, plan.quick, tuple(plan.offsets(key, policy))))
    order = sorted(range(len(work)), key=lambda i: -_cost(work[i]))
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = dict(zip(order, pool.map(_job, [work[i] for i in order]), strict=True))
    else:
        done = {i: _job(work[i]) for i in order}
    out: dict[str, dict[str, list[Result]]] = {k: {} for k in keys}
    for i in range(len(work)):  # the plan's order, however the pool ran them
        key, results = done[i]
        for r in results:
            out[key].setdefault(r.policy, []).append(r)
    for by_policy in out.values():
        matched = {r.seed: r for r in by_policy["oracle-matched"]}
        oracle = {r.seed: r.energy_kwh for r in by_policy["oracle"]}
        held = {r.seed: r.energy_kwh for r in by_policy["oracle-held"]}
        for policy, results in by_policy.items():
            by_policy[policy] = [
                replace(
                    r,
                    matched_kwh=matched[r.seed].energy_kwh,
                    oracle_kwh=oracle[r.seed],
                    held_kwh=held[r.seed],
                    matched_peak_pct=matched[r.seed].peak_pct,
                )
                for r in results
            ]
    return {k: {p: out[k][p] for p in POLICIES if p in out[k]} for k in keys}


# --- output -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float], digits: int = 0) -> str:
    """'median' when every run agrees, else 'median [min-max]'."""
    fmt = f"{{:.{digits}f}}"
    lo, hi, mid = min(values), max(values), statistics.median(values)
    if fmt.format(lo) == fmt.format(hi):
        return fmt.format(mid)
    return f"{fmt.format(mid)} [{fmt.format(lo)}-{fmt.format(hi)}]"


SAFETY_HEADER = (
    f"{'policy':<14} {'runs':>4}  {'trips':<9} {'trips':<9} {'peak':<19} {'s >= 90 %':<15}"
    f" {'overloads':>9} {'p50':>4} {'p95':>4} {'max':>4}  {'fuse':<5} {'A*s':<19} {'longest':<11}"
)
SAFETY_UNITS = (
    f"{'':<14} {'':>4}  {'conserv.':<9} {'typical':<9} {'% of trip':<19} {'[s]':<15}"
    f" {'[count]':>9} {'[s]':>4} {'[s]':>4} {'[s]':>4}  {'melts':<5} {'[A*s]':<19} {'[s]':<11}"
)
ENERGY_HEADER = (
    f"{'policy':<14} {'energy':<22} {'of matched':<19} {'of held':<19} {'of oracle':<19}"
    f" {'commands':<13} {'data calls':<13} {'wakes':>5}  {'Fleet $':<19} {'Fleet $ with':<19}"
)
ENERGY_UNITS = (
    f"{'':<14} {'[kWh]':<22} {'oracle [%]':<19} {'oracle [%]':<19} {'[%]':<19}"
    f" {'':<13} {'':<13} {'':>5}  {'per day':<19} {'BLE cmds, /day':<19}"
)


def _safety_row(policy: str, rs: Sequence[Result]) -> str:
    events = [e for r in rs for e in r.events]
    p50, p95, top = (
        (percentile(events, 50), percentile(events, 95), max(events)) if events else (0, 0, 0)
    )
    return (
        f"{policy:<14} {len(rs):>4}  {spread([r.trips for r in rs]):<9}"
        f" {spread([r.trips_typical for r in rs]):<9} {spread([r.peak_pct for r in rs], 1):<19}"
        f" {spread([r.secs_hot for r in rs]):<15} {len(events) / len(rs):>9.1f}"
        f" {p50:>4.0f} {p95:>4.0f} {top:>4.0f}  {spread([r.fuse_melts for r in rs]):<5}"
        f" {spread([r.overload_amp_secs for r in rs]):<19}"
        f" {spread([r.longest_overload for r in rs]):<11}"
    )


def _energy_row(policy: str, rs: Sequence[Result]) -> str:
    return (
        f"{policy:<14} {spread([r.energy_kwh for r in rs], 2):<22}"
        f" {spread([r.matched_pct for r in rs], 1):<19} {spread([r.held_pct for r in rs], 1):<19}"
        f" {spread([r.oracle_pct for r in rs], 1):<19}"
        f" {spread([r.commands for r in rs]):<13} {spread([r.data_calls for r in rs]):<13}"
        f" {sum(r.wakes for r in rs):>5}  {spread([r.cost_per_day for r in rs], 3):<19}"
        f" {spread([r.ble_cost_per_day for r in rs], 3):<19}"
    ).rstrip()


def format_table(trace: Trace, results: dict[str, list[Result]]) -> str:
    """Two fixed-width tables for one trace: safety first, then energy and cost."""
    seeds = sorted({r.seed for rs in results.values() for r in rs})
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    hours = trace.seconds / HOUR
    lines = [
        f"{trace.title}, {round(hours, 2):g} h, {seed_text}; median [min-max] over runs",
        SAFETY_HEADER,
        SAFETY_UNITS,
        "-" * len(SAFETY_HEADER),
    ]
    lines += [_safety_row(p, rs) for p, rs in results.items()]
    lines += ["", ENERGY_HEADER, ENERGY_UNITS, "-" * len(ENERGY_HEADER)]
    lines += [_energy_row(p, rs) for p, rs in results.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    """One target: passed or not, with the figures behind it.

    The targets (docs/benchmarks.md) gate the exit code as written. A target that is not `gating` is context:
    what any controller under our rules can reach (docs/benchmarks.md argues each case), shown
    beside the target it explains, never in its place.
    """

    target: str
    passed: bool
    detail: str
    gating: bool = True


ENERGY_TARGET = 98.0  # % of an oracle
PEAK_TARGET = 90.0  # % of the conservative replica's trip heat
COST_TARGET = 0.05  # US dollars a day on the random week


def targets(all_results: dict[str, dict[str, list[Result]]]) -> list[Verdict]:
    """The targets for `ours` (docs/benchmarks.md), checked on every run of every trace.

    Three of them are missed for reasons docs/benchmarks.md (Targets) gives; each is followed by
    a context line stating what any controller under ours' rules can reach, which does not gate.
    """
    out: list[Verdict] = []
    ours = {k: rs["ours"] for k, rs in all_results.items()}
    for key, rs in ours.items():
        worst = max(r.trips for r in rs)
        out.append(Verdict(f"ours: 0 trips, conservative [{key}]", worst == 0, f"max {worst}"))
    for key, rs in ours.items():
        worst = max(r.trips_typical for r in rs)
        out.append(Verdict(f"ours: 0 trips, typical [{key}]", worst == 0, f"max {worst}"))
    for key, rs in ours.items():
        # The matched oracle has perfect foresight and zero latency: where even it peaks above
        # the target, the house alone (with the car held at chargerMinAmps) causes the rest.
        allowed = [max(PEAK_TARGET, r.matched_peak_pct) for r in rs]
        over = [r.peak_pct - a for r, a in zip(rs, allowed, strict=True)]
        worst_run = rs[over.index(max(over))]
        out.append(
            Verdict(
                f"ours: peak <= {PEAK_TARGET:g} % or <= matched oracle's [{key}]",
                max(over) <= 0,
                f"max {max(r.peak_pct for r in rs):.1f} % (matched oracle"
                f" {worst_run.matched_peak_pct:.1f} % in that run)",
                gating=False,
            )
        )
        peak = max(r.peak_pct for r in rs)
        out.append(
            Verdict(
                f"ours: peak <= {PEAK_TARGET:g} % of conservative trip [{key}]",
                peak <= PEAK_TARGET,
                f"max {peak:.1f} %",
            )
        )
    for key, rs in ours.items():
        share = min(r.held_pct for r in rs)
        out.append(
            Verdict(
                f"ours: energy >= {ENERGY_TARGET:g} % of held oracle [{key}]",
                share >= ENERGY_TARGET,
                f"min {share:.1f} %",
                gating=False,
            )
        )
        share = min(r.matched_pct for r in rs)
        out.append(
            Verdict(
                f"ours: energy >= {ENERGY_TARGET:g} % of matched oracle [{key}]",
                share >= ENERGY_TARGET,
                f"min {share:.1f} %",
            )
        )
    if "random-week" in ours:
        week = ours["random-week"]
        cost = max(r.ble_cost_per_day for r in week)
        out.append(
            Verdict(
                f"ours: Fleet API cost <= ${COST_TARGET:.2f}/day, BLE commands [random-week]",
                cost <= COST_TARGET,
                f"${cost:.3f}/day",
                gating=False,
            )
        )
        cost = max(r.cost_per_day for r in week)
        out.append(
            Verdict(
                f"ours: Fleet API cost <= ${COST_TARGET:.2f}/day [random-week]",
                cost <= COST_TARGET,
                f"${cost:.3f}/day",
            )
        )
    wakes = sum(r.wakes for rs in ours.values() for r in rs)
    out.append(Verdict("ours: 0 wakes [all traces]", wakes == 0, f"{wakes} wakes"))
    return out


def format_targets(verdicts: Sequence[Verdict]) -> str:
    """The targets section: PASS/FAIL per target, met/MISS for the context lines."""
    width = max(len(v.target) for v in verdicts)
    lines = ["targets (PASS/FAIL; met/MISS: context, not gating; see docs/benchmarks.md)"]
    for v in verdicts:
        mark = ("PASS" if v.passed else "FAIL") if v.gating else ("met " if v.passed else "MISS")
        lines.append(f"  {v.target:<{width}}  {mark}  {v.detail}")
    return "\n".join(lines)


def nth(step: int) -> str:
    return "" if step <= 1 else f"{step}th "
