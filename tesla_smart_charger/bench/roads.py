"""Benchmark: Tesla's cloud fails for 10 minutes in the middle of an evening (issue 11).

One hour of the winter evening (18:00-19:00, seed 1), during which the cloud road answers the
way vehicle-command issue 452 reports it: every command `500 vehicle unavailable: vehicle is
offline or asleep` and every `vehicle_data` 408 while the car is visibly charging. The real
controller (`bench.OursPolicy`) and the real escalation (`escalation.step`) run in virtual
time, with and without a BLE bridge (free, 0.5 s, unaffected by the outage) and a safety relay
(0.2 s). Reported: overload A*s and the longest overload, the breaker replicas' trips and
peak, energy, escalation steps and the Fleet API cost. Part of `make bench`; `--quick` runs the
same hour (it takes about a second per variant).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from tesla_smart_charger import control as core
from tesla_smart_charger.bench import common as bench
from tesla_smart_charger.bench.common import (
    COMMAND_LATENCY,
    DATA_LATENCY,
    MIN_WAIT,
    VOLTS,
    Metrics,
    Phases,
    Result,
    Trace,
    control_config,
)
from tesla_smart_charger.bench.evening import Clock, Fleet, Reply
from tesla_smart_charger.car.fleet_api import (
    interpret_reply,
    parse_charge_state,
    parse_vehicle_state,
)
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control.events import Reading
from tesla_smart_charger.control.models import MeterReading, VehicleSnapshot, VehicleState
from tesla_smart_charger.runtime.safety import CUT_FAILURES, ROAD_FAILURES, look_again, resumed_at
from tesla_smart_charger.simulator.car import CarModel, envelope, unavailable_reply

WINDOW: Final = (3600, 7200)  # 18:00-19:00 of the winter evening (it starts at 17:00)
OUTAGE: Final = (1500.0, 2100.0)  # s into the window: 18:25-18:35
BLE_LATENCY: Final = 0.5  # s for a command or a read over the BLE bridge
RELAY_LATENCY: Final = 0.2  # s for the relay to switch and confirm
ESCALATE_AFTER: Final = 20.0  # escalateAfterSecs, the shipped default
Variant = Literal["no-escalation", "cloud", "cloud+relay", "ble+cloud", "ble+cloud+relay"]
# no-escalation: the cloud road alone as before issue 11 (no failed-cut detection).
VARIANTS: Final[tuple[Variant, ...]] = (
    "no-escalation",
    "cloud",
    "cloud+relay",
    "ble+cloud",
    "ble+cloud+relay",
)


def outage_trace() -> Trace:
    """The hour of the winter evening the outage falls into."""
    full = bench.build_trace("winter-evening")
    start, stop = WINDOW
    return replace(
        full,
        key="cloud-outage",
        title="cloud outage: winter evening 18:00-19:00, the cloud road fails 18:25-18:35",
        house=full.house[start:stop],
    )


class OursPolicy:  # the copy of the shell this table still runs (moving to the real one)
    """`controller.decide` in a synchronous copy of `service.ChargeService`.

    Like the daemon it handles one event at a time and awaits each action in turn; readings that
    arrive meanwhile queue up and are handled afterwards. A Tick fires at `next_deadline()` only
    if no event arrived before it.
    """

    def __init__(self, clock: Clock, fleet: Fleet, trace: Trace) -> None:
        self.clock = clock
        self.fleet = fleet
        self.cfg = control_config(trace)
        self.state = core.initial_state(0.0)
        self.volts: tuple[float | None, ...] = (VOLTS,) * trace.phases
        self.queue: deque[core.ControllerEvent] = deque()
        self.pending: deque[core.ControllerEvent] = deque()
        self.actions: deque[core.Action] = deque()
        self.busy = False
        self.ticks = 0
        self._wait = 0  # bumped when an event arrives: a Tick armed before it no longer fires
        self._next_reading = 0.0

    def on_plug(self, t: float, plugged: bool) -> None:
        """The controller only learns about the car from the meter and the API."""

    def on_reading(self, t: float, supply: Phases) -> None:
        """The meter poller's reading goes on the queue."""
        self.queue.append(Reading(MeterReading(supply, self.volts, None, True, t)))
        self._wait += 1
        self._next_reading = t + 1.0
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while not self.busy and self.queue:
            self.pending.append(self.queue.popleft())
            self._continue()
        if not self.busy:
            self._arm_tick()

    def _arm_tick(self) -> None:
        deadline = core.next_deadline(self.state, self.cfg)
        if deadline is None:
            return
        when = self.clock.now + max(deadline - self.clock.now, MIN_WAIT)
        if when > self._next_reading:
            return  # the next reading comes first, and the deadline is recomputed after it
        token = self._wait
        self.clock.at(when, lambda: self._tick(token))

    def _tick(self, token: int) -> None:
        if token != self._wait or self.busy or self.queue:
            return
        self.ticks += 1
        self.pending.append(core.Tick())
        self._continue()
        if not self.busy:
            self._drain()

    def _continue(self) -> None:
        """Decide on pending events; start the next action and return while it is in flight."""
        while True:
            if self.actions:
                self.busy = True
                self._execute(self.actions.popleft())
                return
            if not self.pending:
                self.busy = False
                return
            decision = core.decide(self.state, self.pending.popleft(), self.clock.now, self.cfg)
            self.state = decision.state
            self.actions.extend(decision.actions)

    def _outcome(self, event: core.ControllerEvent) -> None:
        self.pending.append(event)
        self._continue()
        if not self.busy:
            self._drain()

    def _execute(self, action: core.Action) -> None:
        if isinstance(action, core.RefreshVehicle):
            self._refresh(action.known_online)
        elif isinstance(action, core.SetAmps):
            body = {"charging_amps": action.amps}
            times = 2 if action.amps < 5 else 1  # below 5 A tesla.py sends it twice
            self._command("set_charging_amps", body, action.amps, times)
        elif isinstance(action, core.StartCharging):
            self._command("charge_start", {}, None, 1)
        else:
            self._command("charge_stop", {}, None, 1)

    def _command(
        self,
        name: Literal["set_charging_amps", "charge_start", "charge_stop"],
        body: dict[str, Any],
        amps: int | None,
        times: int,
    ) -> None:
        def done(reply: Reply) -> None:
            outcome, err = interpret_reply(*reply, what=name, command=name)
            if outcome == "ok" and times > 1:
                self._command(name, body, amps, times - 1)
            elif outcome == "ok":
                self._outcome(core.CommandDone(name, amps))
            else:
                self._outcome(_unavailable(outcome, err, command=True))

        self.fleet.command(name, body, done)

    def _refresh(self, known_online: bool) -> None:
        """tesla.TeslaVehicle.snapshot: state call (unless known online), then charge_state."""

        def data(reply: Reply) -> None:
            outcome, err = interpret_reply(*reply, what="vehicle_data", command=None)
            now = self.clock.now
            if outcome == "asleep":
                snap = VehicleSnapshot(VehicleState.ASLEEP, None, now)
            elif outcome != "ok":
                self._outcome(_unavailable(outcome, err, command=False))
                return
            else:
                snap = VehicleSnapshot(VehicleState.ONLINE, parse_charge_state(reply[1]), now)
            self._outcome(core.VehicleUpdate(snap))

        def state(reply: Reply) -> None:
            vehicle_state = parse_vehicle_state(reply[1])
            if vehicle_state is not VehicleState.ONLINE:
                snap = VehicleSnapshot(vehicle_state, None, self.clock.now)
                self._outcome(core.VehicleUpdate(snap))
            else:
                self.fleet.vehicle_data(data)

        if known_online:
            self.fleet.vehicle_data(data)
        else:
            self.fleet.vehicle(state)


class OursMin0Policy(OursPolicy):
    """Ours with chargerMinAmps 0: the car may go below 6 A (sub-5 A sent twice) down to 0 A.

    Tesla keeps the charging session at 0 A, so the car can absorb an overload the house alone
    nearly causes, where the default holds 6 A (the IEC minimum) and says it cannot resolve it.
    """

    def __init__(self, clock: Clock, fleet: Fleet, trace: Trace) -> None:
        super().__init__(clock, fleet, trace)
        self.cfg = replace(self.cfg, charger_min_amps=0)


def _unavailable(outcome: str, err: Exception | None, *, command: bool) -> core.VehicleUnavailable:
    kinds = ("asleep", "rate_limited", "auth", "transient", "refused", "error")
    kind = outcome if outcome in kinds else "error"
    detail = getattr(err, "reason", None) or str(err)
    return core.VehicleUnavailable(kind, detail, command=command)  # type: ignore[arg-type]


class OutageFleet(Fleet):
    """The cloud road; inside `window` it answers as in vehicle-command issue 452."""

    def __init__(self, car: CarModel, clock: Clock, window: tuple[float, float]) -> None:
        super().__init__(car, clock)
        self.window = window

    def _down(self) -> bool:
        return self.window[0] <= self.clock.now < self.window[1]

    def command(self, name: str, body: dict[str, Any], done: Callable[[Reply], None]) -> None:
        """A command: 500 "vehicle unavailable" (not billed) during the outage."""
        if not self._down():
            super().command(name, body, done)
            return
        self.commands += 1
        self.clock.after(COMMAND_LATENCY, lambda: done(unavailable_reply(500)))

    def vehicle_data(self, done: Callable[[Reply], None]) -> None:
        """vehicle_data: 408 (billed) during the outage, though the car is awake."""
        if not self._down():
            super().vehicle_data(done)
            return

        def answer() -> None:
            self.billing.record("data", 408)
            done((408, envelope(None, "vehicle unavailable")))

        self.data_calls += 1
        self.clock.after(DATA_LATENCY, answer)


class BleFleet(Fleet):
    """The BLE road: the same shapes, faster, never billed, never down in this trace."""

    def command(self, name: str, body: dict[str, Any], done: Callable[[Reply], None]) -> None:
        """A command over BLE."""

        def land() -> None:
            done(self.car.command(name, body, self.clock.now, road="ble"))

        self.commands += 1
        self.clock.after(BLE_LATENCY, land)

    def vehicle(self, done: Callable[[Reply], None]) -> None:
        """body_controller_state: the sleep state without waking the car."""

        def answer() -> None:
            self.car.advance(self.clock.now)
            done((200, envelope(self.car.vehicle_json())))

        self.data_calls += 1
        self.clock.after(BLE_LATENCY, answer)

    def vehicle_data(self, done: Callable[[Reply], None]) -> None:
        """charge_state over BLE."""

        def answer() -> None:
            car, now = self.car, self.clock.now
            car.advance(now)
            if car.state != "online":
                done((408, envelope(None, "vehicle unavailable")))
                return
            car.touch(now)
            done((200, envelope({"charge_state": car.charge_state_json()})))

        self.data_calls += 1
        self.clock.after(BLE_LATENCY, answer)


class RoadsPolicy(OursPolicy):
    """Ours plus the escalation, on the cloud road alone or with BLE first, relay or not."""

    def __init__(
        self,
        clock: Clock,
        cloud: OutageFleet,
        trace: Trace,
        *,
        ble: bool,
        relay: bool,
        escalate: bool = True,
    ) -> None:
        road: Fleet = BleFleet(cloud.car, clock) if ble else cloud
        super().__init__(clock, road, trace)
        self.cloud = cloud
        self.escalate = escalate
        self.esc_cfg = esc.EscalationConfig(
            home_max_amps=trace.limit,
            charger_min_amps=float(self.cfg.charger_min_amps),
            car_settle_secs=self.cfg.settle_secs,
            escalate_after_secs=ESCALATE_AFTER,
            relay_configured=relay,
            safety_margin_amps=self.cfg.safety_margin,
        )
        self.esc = esc.EscalationState()
        self.cut: tuple[float, float] | None = None  # (from, to) of the cut in flight
        self.steps = {"charge_stop": 0, "relay_off": 0}
        self.alerts = 0

    # --- hooks into the controller's shell -----------------------------------------------------
    def on_reading(self, t: float, supply: bench.Phases) -> None:
        """The controller first, then the escalation sees the same reading."""
        super().on_reading(t, supply)
        target = self.state.target if self.state.target is not None else self.state.setpoint
        self._feed(esc.ControllerTarget(None if target is None else float(target)))
        self._feed(esc.Measured(max(supply)))

    def _execute(self, action: core.Action) -> None:
        self.cut = None
        if isinstance(action, core.SetAmps):
            before = self.state.command_from
            lowering = before is not None and action.amps < before
            if self.esc.active and not lowering:
                held = core.VehicleUnavailable("refused", "raise held: escalation", command=True)
                self.clock.after(0.0, lambda: self._outcome(held))
                return
            if lowering and before is not None:
                self.cut = (float(before), float(action.amps))
        super()._execute(action)

    def _outcome(self, event: core.ControllerEvent) -> None:
        cut, self.cut = self.cut, None
        # The road's health first, as the daemon's shell feeds it (safety.Escalator).
        if (
            isinstance(event, core.CommandDone)
            or (
                isinstance(event, core.VehicleUpdate)
                and event.snapshot.state is VehicleState.ONLINE
            )
            or (isinstance(event, core.VehicleUnavailable) and event.kind == "refused")
        ):
            self._feed(esc.RoadStatus(up=True))
        elif isinstance(event, core.VehicleUnavailable) and event.kind in ROAD_FAILURES:
            self._feed(esc.RoadStatus(up=False, retry_at=self.clock.now + event.retry_after))
        if cut is not None:
            if isinstance(event, core.CommandDone):
                self._feed(esc.CutAccepted("cloud", *cut))
            elif isinstance(event, core.VehicleUnavailable) and event.kind in CUT_FAILURES:
                self._feed(esc.CutErrored("cloud", cut[1], event.detail))
        super()._outcome(event)

    # --- the escalation's actions, with their latencies ----------------------------------------
    def _feed(self, item: esc.Input) -> None:
        if not self.escalate:
            return
        before = self.esc.level
        self.esc, actions = esc.step(self.esc, item, self.clock.now, self.esc_cfg)
        if self.esc.level not in (before, "none"):
            self.steps[self.esc.level] += 1
        for action in actions:
            self._act(action)

    def _send(self, name: str, body: dict[str, Any], then: Callable[[bool, str], None]) -> None:
        def done(reply: Reply) -> None:
            outcome, err = interpret_reply(*reply, what=name, command=name)
            then(
                outcome in ("ok", "refused") if name == "charge_stop" else outcome == "ok", str(err)
            )

        self.fleet.command(name, body, done)

    def _act(self, action: esc.Action) -> None:
        match action:
            case esc.RetryCut(road=road, amps=amps):
                frm = self.state.command_from
                self._send(
                    "set_charging_amps",
                    {"charging_amps": int(amps)},
                    lambda ok, err: self._feed(
                        esc.CutAccepted(road, float(frm if frm is not None else amps), amps)
                        if ok
                        else esc.CutErrored(road, amps, err)
                    ),
                )
            case esc.ChargeStop():
                self._send("charge_stop", {}, lambda ok, err: self._feed(esc.StopOutcome(ok, err)))
            case esc.SwitchRelay(on=on):

                def switch() -> None:
                    self.fleet.car.set_circuit(on, self.clock.now)
                    self._feed(esc.RelayOutcome(on=on, ok=True))

                self.clock.after(RELAY_LATENCY, switch)
            case esc.SetAmps(amps=amps):

                def landed(reply: Reply) -> None:
                    outcome, err = interpret_reply(
                        *reply, what="set_charging_amps", command="set_charging_amps"
                    )
                    if outcome == "ok":
                        self.state = resumed_at(self.state, int(amps), self.clock.now)
                    # As the daemon's shell says it: the car's own answer, or a road failure.
                    answer: Literal["", "asleep", "refused"] = (
                        outcome if outcome in ("asleep", "refused") else ""
                    )
                    self._feed(esc.AmpsOutcome(ok=outcome == "ok", error=str(err), answer=answer))

                self.fleet.command("set_charging_amps", {"charging_amps": int(amps)}, landed)
            case esc.Resume(restart_charging=restart):
                if restart and self.esc.road_up:
                    self._send("charge_start", {}, lambda _ok, _err: None)
                self.state = look_again(self.state)
            case esc.Alert():
                self.alerts += 1


@dataclass(frozen=True)
class OutageResult:
    """One variant on the outage hour."""

    variant: str
    result: Result
    charge_stops: int
    relay_offs: int
    alerts: int
    # The longest overload that began while the cloud road was down (the escalation's part;
    # an overload after it, with the car held at its minimum, is the controller's).
    longest_in_outage: int = 0


def run_variant(variant: Variant) -> OutageResult:
    """Drive the outage hour with one road/relay combination."""
    trace = outage_trace()
    clock = Clock()
    car = bench.make_car(trace)
    cloud = OutageFleet(car, clock, OUTAGE)
    policy = RoadsPolicy(
        clock,
        cloud,
        trace,
        ble=variant.startswith("ble"),
        relay=variant.endswith("relay"),
        escalate=variant != "no-escalation",
    )
    m = Metrics(trace.limit, trace.phases, (trace.house[0][0] + car.current_draw(0.0),))
    began: float | None = None  # the overload under way began at this second in the outage
    longest = 0
    for t, load in enumerate(trace.house):
        now = float(t)
        clock.run_until(now)
        draw = car.current_draw(now)
        supply = (load[0] + draw,)
        m.add(supply, draw)
        policy.on_reading(now, supply)
        if supply[0] <= trace.limit:
            began = None
        elif began is None and OUTAGE[0] <= now < OUTAGE[1]:
            began = now
        if began is not None:
            longest = max(longest, t + 1 - int(began))
    result = bench.result(variant, m, cloud, trace)  # billed = the cloud road only
    if variant.startswith("ble"):
        result = replace(
            result, commands=policy.fleet.commands + cloud.commands, data_calls=cloud.data_calls
        )
    return OutageResult(
        variant,
        result,
        policy.steps["charge_stop"],
        policy.steps["relay_off"],
        policy.alerts,
        longest,
    )


HEADER: Final = (
    f"{'roads':<16} {'A*s':>7} {'longest':>8} {'trips':>6} {'trips':>6} {'peak':>6}"
    f" {'energy':>7} {'charge':>7} {'relay':>6} {'alerts':>6} {'Fleet':>7} {'wakes':>5}"
)
UNITS: Final = (
    f"{'':<16} {'[A*s]':>7} {'[s]':>8} {'cons.':>6} {'typ.':>6} {'[%]':>6}"
    f" {'[kWh]':>7} {'stops':>7} {'offs':>6} {'':>6} {'calls $':>7} {'':>5}"
)


def report() -> str:
    """The outage table (deterministic)."""
    lines = [
        f"{outage_trace().title}, 1 h, seed 1; escalateAfterSecs {ESCALATE_AFTER:g};"
        f" BLE {BLE_LATENCY:g} s, relay {RELAY_LATENCY:g} s",
        HEADER,
        UNITS,
        "-" * len(HEADER),
    ]
    for variant in VARIANTS:
        o = run_variant(variant)
        r = o.result
        lines.append(
            f"{variant:<16} {r.overload_amp_secs:>7.0f} {r.longest_overload:>8} {r.trips:>6}"
            f" {r.trips_typical:>6} {r.peak_pct:>6.1f} {r.energy_kwh:>7.2f} {o.charge_stops:>7}"
            f" {o.relay_offs:>6} {o.alerts:>6} {r.cost:>7.3f} {r.wakes:>5}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
