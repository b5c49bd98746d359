"""The escalation's imperative shell, and the wiring of the BLE road, the relay and alerts.

`escalation.step` decides (pure, virtual-time tested); `Escalator` feeds it from the charge
controller's coroutine and carries out its actions, so escalation commands never race the
controller's own. The service calls three hooks:

- `hold(action, state)` before a car command: while an escalation step is in force a raise is
  held off (answered locally as a refusal, so the controller keeps its setpoint); cuts still go;
- `command_outcome(action, outcome, state)` after it: a lowering `set_charging_amps` becomes
  `CutAccepted` / `CutErrored` on the road that answered;
- `after_event(event, state, now)` after the controller handled an event: the controller's
  target and the reading (or the tick) go to `step()`, the actions are executed, and what they
  did to the car is folded back into the controller's state (the amps we set), so the
  controller stays the one owner of the setpoint.

`AlertWatch` turns conditions that are not escalation steps (fail-safe, login required, a road
down for more than 5 minutes) into one alert per episode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from tesla_smart_charger import control as core
from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.failover import ROAD_DOWN_ALERT_SECS, ROAD_LABELS, FailoverVehicle
from tesla_smart_charger.car.fleet_api import TeslaClient
from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control.events import MeterFailed, Reading
from tesla_smart_charger.control.interfaces import Relay, Vehicle
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import (
    ChargerError,
    CommandRefused,
    RelayAuthError,
    RelayError,
    VehicleAsleep,
)
from tesla_smart_charger.retry import FailureKind, RetryPolicy
from tesla_smart_charger.runtime.alerts import AlertSender
from tesla_smart_charger.shelly.relay import ShellyRelay

_LOG = logging.getLogger(__name__)

# How often the alert watch looks at fail-safe, login and road health.
WATCH_SECS: Final = 1.0
# Outcomes that say the road to the car failed (not the car's own refusal or its sleep).
ROAD_FAILURES: Final = frozenset({"transient", "error", "rate_limited", "auth", "token"})
# A cut answered with one of these did not land. "asleep" too: Tesla's cloud answers "vehicle
# unavailable" to commands while the car is visibly charging (vehicle-command issue 452), and
# the meter, not that answer, says whether the car still draws.
CUT_FAILURES: Final = ROAD_FAILURES | {"asleep"}
ESCALATION_LEVELS: Final = ("none", "charge_stop", "relay_off")

Record = Callable[[str, int | None, str, str], None]


def escalation_config(
    s: Settings, car: core.ControlConfig | None = None, *, several: bool = False
) -> esc.EscalationConfig:
    """The escalation's settings, copied out of the validated settings: the car's own
    chargerMinAmps from its `vehicles` entry; with `several` cars on the meter a cut is judged
    by a look at the car."""
    low = car.charger_min_amps if car is not None else math.ceil(s.charger_min_amps)
    return esc.EscalationConfig(
        judge_by_look=several,
        home_max_amps=s.home_max_amps,
        charger_min_amps=float(low),
        car_settle_secs=s.car_settle_secs,
        escalate_after_secs=s.escalate_after_secs,
        relay_configured=s.safety_relay_ip is not None,
        safety_margin_amps=s.safety_margin_amps,
    )


# --- building the roads and the relay ---------------------------------------------------------


def _host(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url


def build_roads(
    session: aiohttp.ClientSession,
    url: str,
    cloud: TeslaClient,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[FailoverVehicle, RetryPolicy]:
    """`FailoverVehicle([ble, cloud])` with the BLE bridge at `url` (see `failover_roads`)."""
    vin = cloud.vin if cloud.vin is not None else cloud.resolve_vin
    ble = BleVehicle(session, url, vin, clock=clock)
    return failover_roads(ble, cloud, f"BLE bridge at {_host(url)}", clock=clock)


def failover_roads(
    ble: Vehicle,
    cloud: TeslaClient,
    label: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> tuple[FailoverVehicle, RetryPolicy]:
    """`FailoverVehicle([ble, cloud])`, each road paced and reported by its own policy.

    The cloud client keeps the policy it already has (it asks and tells it itself); the BLE
    road gets one here. A road whose policy is backing off is skipped while the other works.
    `clock` and `rand` are the policy's (the benchmark runs it on virtual time, seeded).
    """
    # The failover logs a road going down and coming back once each, in words; the policy
    # keeps the pace and the health, so its own lines would repeat them.
    quiet = logging.getLogger("tesla_smart_charger.runtime.safety.ble_policy")
    quiet.setLevel(logging.ERROR)
    policy = RetryPolicy(label, logger=quiet, clock=clock, rand=rand)

    def available(name: str) -> bool:
        return policy.allowed() if name == "ble" else cloud.policy.allowed()

    def on_result(name: str, ok: bool, error: BaseException | None) -> None:
        if name != "ble":
            return  # the cloud client tells its own policy
        if ok:
            policy.success()
        else:
            policy.failure("transient", str(error) if error else "failed")

    roads = FailoverVehicle(
        [("ble", ble), ("cloud", cloud)],
        road_available=available,
        on_result=on_result,
        clock=clock,
    )
    return roads, policy


def build_relay(
    session: aiohttp.ClientSession, s: Settings
) -> tuple[ShellyRelay, RetryPolicy] | None:
    """The safety relay and its policy (health only: the escalation paces the switching)."""
    if s.safety_relay_ip is None:
        return None
    password = s.safety_relay_password.get_secret_value() if s.safety_relay_password else None
    relay = ShellyRelay(
        s.safety_relay_ip,
        session,
        channel=s.safety_relay_channel,
        user=s.safety_relay_user,
        password=password,
    )
    policy = RetryPolicy(f"safety relay {relay.name}", logger=_LOG, backoff=False)
    return relay, policy


class RelayHeld(RelayError):
    """A car asked for the charger circuit back while another car's episode keeps it off."""


@dataclass
class SharedRelay:
    """One safety relay for several cars: off when any car's escalation asks, on only when
    every car that asked for it off has asked for it on again (each after its 60 s of room)."""

    relay: Relay
    holders: set[str] = field(default_factory=set)  # cars whose episode wants it off

    def for_car(self, car: str) -> CarRelay:
        """The relay as one car's escalation sees it."""
        return CarRelay(self, car)


@dataclass
class CarRelay:
    """One car's vote on the shared relay (implements `api.Relay`)."""

    shared: SharedRelay
    car: str

    @property
    def name(self) -> str:
        """The device's label."""
        return self.shared.relay.name

    async def is_on(self) -> bool:
        """Whether the charger circuit is powered now."""
        return await self.shared.relay.is_on()

    async def switch(self, on: bool) -> None:
        """Off at once; on only when no other car's episode still holds the circuit off."""
        holders = self.shared.holders
        if not on:
            holders.add(self.car)
            await self.shared.relay.switch(False)
            return
        holders.discard(self.car)
        if holders:
            raise RelayHeld(
                f"the charger circuit stays off until {', '.join(sorted(holders))} has room too"
            )
        await self.shared.relay.switch(True)


# --- the escalation's shell -----------------------------------------------------------------


@dataclass
class Escalator:
    """Runs `escalation.step` inside the controller coroutine and executes its actions."""

    cfg: esc.EscalationConfig
    vehicle: Vehicle
    roads: FailoverVehicle | None = None
    relay: Relay | None = None
    relay_policy: RetryPolicy | None = None
    alerts: AlertSender | None = None
    record: Record | None = None
    clock: Callable[[], float] = time.monotonic
    label: str | None = None  # the car's name or VIN with several cars: alerts and logs name it
    state: esc.EscalationState = field(default_factory=esc.EscalationState)
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ESCALATION_LEVELS, 0))
    _inputs: list[esc.Input] = field(default_factory=list)
    _house: tuple[float, ...] = ()
    _relay_held: str | None = None  # why the last "relay on" was held (another car's episode)

    @property
    def level(self) -> esc.Level:
        """`none`, `charge_stop` or `relay_off`: /status `controller.escalation`."""
        return self.state.level

    def next_deadline(self) -> float | None:
        """When a tick may change the escalation without a new reading."""
        return esc.next_deadline(self.state, self.cfg)

    # --- hooks called by the charge service ---------------------------------------------------
    def hold(self, action: core.Action, state: core.ControllerState) -> core.ControllerEvent | None:
        """While escalated, a raise is not sent: the answer the controller gets instead."""
        if not self.state.active or not isinstance(action, core.SetAmps):
            return None
        before = state.command_from
        if before is not None and action.amps < before:
            return None  # lowering is never held
        return core.VehicleUnavailable(
            "refused",
            f"raise to {action.amps} A held: escalation {self.state.level} in force",
            command=True,
        )

    def command_outcome(
        self, action: core.Action, outcome: core.ControllerEvent, state: core.ControllerState
    ) -> None:
        """A controller command ended: note a cut (accepted or failed) and the road's health."""
        road = self._road()
        if (
            isinstance(outcome, core.CommandDone)
            or (
                isinstance(outcome, core.VehicleUpdate)
                and outcome.snapshot.state is VehicleState.ONLINE
            )
            or (isinstance(outcome, core.VehicleUnavailable) and outcome.kind == "refused")
        ):
            # The car answered (a refusal too). A look that finds the car "asleep" proves no
            # road: the cloud says that of a charging car when it cannot reach it
            # (vehicle-command issue 452).
            self._inputs.append(esc.RoadStatus(up=True))
        elif isinstance(outcome, core.VehicleUnavailable) and outcome.kind in ROAD_FAILURES:
            # Tried again when the road's policy allows (its retry_after), not sooner.
            retry_at = self.clock() + outcome.retry_after
            self._inputs.append(esc.RoadStatus(up=False, retry_at=retry_at))
        if not isinstance(action, core.SetAmps):
            return
        before = self._before(state)
        if before is None or action.amps >= before:
            return
        if isinstance(outcome, core.CommandDone):
            self._inputs.append(esc.CutAccepted(road, before, float(action.amps)))
        elif isinstance(outcome, core.VehicleUnavailable) and outcome.kind in CUT_FAILURES:
            self._inputs.append(esc.CutErrored(road, float(action.amps), outcome.detail))

    async def after_event(
        self, event: core.ControllerEvent, state: core.ControllerState, now: float
    ) -> core.ControllerState:
        """Feed the event and the noted command outcomes to `step()`; run its actions."""
        first: esc.Input | None = None
        if isinstance(event, Reading) and event.reading.valid:
            # With several cars: the real reading for the breaker, this car's share for its
            # own charger channel, and what its cut should lower.
            real = event.whole if event.whole is not None else event.reading
            self._house = tuple(real.phase_amps)
            first = esc.Measured(real.worst_phase_amps, event.reading.car_amps, event.room_worst)
        elif isinstance(event, core.Tick | MeterFailed) or (
            isinstance(event, Reading) and not event.reading.valid
        ):
            first = esc.Tick()
        inputs = ([first] if first is not None else []) + self._inputs
        self._inputs = []
        target = state.target if state.target is not None else state.setpoint
        if target != self.state.target:
            # First: a retry decided on this event never sends more than the controller's
            # newest target (a cut it sent meanwhile is not undone).
            inputs.insert(0, esc.ControllerTarget(None if target is None else float(target)))
        for item in inputs:
            state = await self._feed(item, state, now)
        return state

    # --- internals ----------------------------------------------------------------------------
    def _road(self) -> str:
        if self.roads is not None and self.roads.last_road is not None:
            return self.roads.last_road
        return "cloud"

    @staticmethod
    def _before(state: core.ControllerState) -> float | None:
        if state.command_from is not None:
            return float(state.command_from)
        charge = state.vehicle.charge if state.vehicle is not None else None
        return float(charge.charger_actual_current) if charge is not None else None

    async def _feed(
        self, item: esc.Input, state: core.ControllerState, now: float
    ) -> core.ControllerState:
        before = self.state.level
        self.state, actions = esc.step(self.state, item, now, self.cfg)
        if self.state.level not in (before, "none"):
            self.steps[self.state.level] += 1
        # Every action of this step first (its alerts in order), then what came of them.
        outcomes: list[esc.Input] = []
        for action in actions:
            outcome, state = await self._execute(action, state, now)
            if outcome is not None:
                outcomes.append(outcome)
        for outcome in outcomes:
            state = await self._feed(outcome, state, self.clock())
        return state

    def _on(self, road: str) -> Vehicle:
        if self.roads is not None and road in self.roads.road_names:
            return self.roads.on_road(road)
        return self.vehicle  # one road only: the retry goes the same way

    def _note(self, command: str, amps: int | None, result: str, why: str) -> None:
        if self.record is not None:
            self.record(command, amps, result, why)

    async def _execute(
        self, action: esc.Action, state: core.ControllerState, now: float
    ) -> tuple[esc.Input | None, core.ControllerState]:
        match action:
            case esc.RetryCut(road=road, amps=amps):
                return await self._retry_cut(road, amps, state)
            case esc.ChargeStop():
                try:
                    await self.vehicle.charge_stop()
                except CommandRefused as err:  # e.g. not_charging: it is stopped
                    self._note("charge_stop", None, "refused", err.reason)
                    return esc.StopOutcome(ok=True), state
                except ChargerError as err:
                    self._note("charge_stop", None, "error", str(err))
                    return esc.StopOutcome(ok=False, error=str(err)), state
                self._note("charge_stop", None, "ok", "the car ignored the cut: escalation")
                return esc.StopOutcome(ok=True), state
            case esc.SwitchRelay(on=on):
                return await self._switch(on), state
            case esc.SetAmps(amps=amps):
                return await self._set_amps(amps, state)
            case esc.Resume(restart_charging=restart):
                if restart and self.state.road_up:
                    try:
                        await self.vehicle.charge_start()
                    except ChargerError as err:
                        self._note("charge_start", None, "error", str(err))
                    else:
                        self._note("charge_start", None, "ok", "escalation resolved")
                return None, look_again(state)
            case esc.LookAtCar():
                return await self._look(), state
            case esc.Alert(event=event, message=message):
                if event == "relay_on" and self._relay_held is not None:
                    message = f"room for the car has lasted 60 s, but {self._relay_held}"
                if self.label is not None:
                    message = f"{self.label}: {message}"
                level = logging.INFO if event in ("resolved", "relay_on") else logging.WARNING
                _LOG.log(level, "escalation: %s", message)
                if self.alerts is not None:
                    self.alerts.send(
                        event, message, house_amps=self._house, limit=self.cfg.home_max_amps
                    )
                return None, state
        return None, state  # pragma: no cover - every action is matched above

    async def _retry_cut(
        self, road: str, amps: float, state: core.ControllerState
    ) -> tuple[esc.Input, core.ControllerState]:
        """The failed cut once more, on `road` only."""
        other = self.roads is not None and road in self.roads.road_names
        where = ROAD_LABELS.get(road, road) if other else "the same road (the only one)"
        try:
            await self._on(road).set_charging_amps(int(amps))
        except ChargerError as err:
            self._note("set_charging_amps", int(amps), "error", str(err))
            return esc.CutErrored(road, amps, str(err)), state
        self._note(
            "set_charging_amps", int(amps), "ok", f"the cut did not land: retried on {where}"
        )
        before = self._before(state)
        # The car is now set to this: the controller's state says so (one setpoint).
        landed = resumed_at(state, int(amps), self.clock())
        return esc.CutAccepted(road, before if before is not None else amps, amps), landed

    async def _set_amps(
        self, amps: float, state: core.ControllerState
    ) -> tuple[esc.Input, core.ControllerState]:
        """The safe current before the charger is powered again; its outcome goes to `step()`."""
        try:
            await self.vehicle.set_charging_amps(int(amps))
        except CommandRefused as err:
            # The car answered but did not take it: `step()` decides when to ask again.
            self._note("set_charging_amps", int(amps), "refused", err.reason)
            return esc.AmpsOutcome(ok=False, error=err.reason, answer="refused"), state
        except VehicleAsleep as err:  # never woken
            self._note("set_charging_amps", int(amps), "asleep", str(err))
            return esc.AmpsOutcome(ok=False, error=str(err), answer="asleep"), state
        except ChargerError as err:
            self._note("set_charging_amps", int(amps), "error", str(err))
            retry_at = self.clock() + err.retry_after
            return esc.AmpsOutcome(ok=False, error=str(err), retry_at=retry_at), state
        self._note("set_charging_amps", int(amps), "ok", "before the charger is powered again")
        return esc.AmpsOutcome(ok=True), resumed_at(state, int(amps), self.clock())

    async def _look(self) -> esc.Input:
        """The car's own word on what it draws (one data call; a car that sleeps is not woken)."""
        try:
            snap = await self.vehicle.snapshot(with_charge_state=True, known_online=True)
        except ChargerError as err:
            return esc.CarReported(None, str(err))
        if snap.charge is None:
            return esc.CarReported(None, f"the car is {snap.state.value}")
        amps = snap.charge.charger_actual_current if snap.charge.charging else 0
        return esc.CarReported(float(amps))

    async def _switch(self, on: bool) -> esc.Input | None:
        self._relay_held = None
        if self.relay is None:
            return esc.RelayOutcome(on=on, ok=False, error="no safety relay configured")
        try:
            await self.relay.switch(on)
        except RelayHeld as err:
            # Another car's episode keeps the circuit off: no fault, asked again later.
            self._relay_held = str(err)
            return None
        except RelayError as err:
            if self.relay_policy is not None:
                kind: FailureKind = "fault" if isinstance(err, RelayAuthError) else "transient"
                self.relay_policy.failure(kind, str(err))
            return esc.RelayOutcome(on=on, ok=False, error=str(err))
        if self.relay_policy is not None:
            self.relay_policy.success()
        return esc.RelayOutcome(on=on, ok=True)


def look_again(state: core.ControllerState) -> core.ControllerState:
    """The controller's state once the car has power again or took a command (pure): a car it
    took for asleep (Tesla's cloud says that of a car it cannot reach) or never saw is looked
    at on the next reading, instead of being left uncontrolled while it charges."""
    if state.vehicle is None or state.vehicle.state is not VehicleState.ONLINE:
        return replace(state, vehicle=None, first_look_done=False)
    return state


def resumed_at(state: core.ControllerState, amps: int, now: float) -> core.ControllerState:
    """The controller's state after the escalation set the car to `amps` (pure).

    The escalation's own settings (a retried cut, the safe current before the relay goes on)
    become the controller's setpoint, so it never sends an older value after them; a car that
    took a command is awake (`look_again`).
    """
    return replace(
        look_again(state),
        command_from=state.setpoint,
        setpoint=amps,
        commanded_at=now,
        target=amps,
        raise_since=None,
        raise_floor=None,
    )


# --- alerts that are not escalation steps ---------------------------------------------------


@dataclass
class AlertWatch:
    """One alert per episode for fail-safe, login required and a road down > 5 minutes."""

    alerts: AlertSender
    failsafe: Callable[[], bool]
    login_required: Callable[[], bool]
    house_amps: Callable[[], Sequence[float]]
    limit: float
    roads: FailoverVehicle | None = None
    # Several cars: each car's own roads, with the name the alerts give it.
    car_roads: tuple[tuple[str, FailoverVehicle], ...] = ()
    clock: Callable[[], float] = time.monotonic
    _failsafe: bool = False
    _login: bool = False
    _roads_down: set[tuple[str, str]] = field(default_factory=set)  # (car, road)

    def _send(self, event: str, message: str) -> None:
        self.alerts.send(event, message, house_amps=tuple(self.house_amps()), limit=self.limit)

    def check(self) -> None:
        """Compare the conditions with the last check; alert on every change."""
        failsafe = self.failsafe()
        if failsafe != self._failsafe:
            self._failsafe = failsafe
            if failsafe:
                self._send("failsafe", "the meter is silent: the car is held at its minimum")
            else:
                self._send("failsafe_left", "meter readings are back: normal control resumes")
        login = self.login_required()
        if login != self._login:
            self._login = login
            if login:
                self._send(
                    "login_required",
                    "Tesla login required: run `tesla-smart-charger auth url`, then "
                    "`auth exchange CODE`",
                )
        watched = ((("", self.roads),) if self.roads is not None else ()) + self.car_roads
        now = self.clock()
        down = {
            (car, name)
            for car, roads in watched
            for name in roads.roads_down_longer_than(ROAD_DOWN_ALERT_SECS, now)
        }
        for car, name in sorted(down - self._roads_down):
            label = ROAD_LABELS.get(name, name)
            self._send(
                "road_down",
                f"{car + ': ' if car else ''}{label} has not reached the car for more than 5 minutes",
            )
        for car, name in sorted(self._roads_down - down):
            label = ROAD_LABELS.get(name, name)
            self._send("road_up", f"{car + ': ' if car else ''}{label} reaches the car again")
        self._roads_down = down

    async def run(self, period: float = WATCH_SECS) -> None:
        """Check forever (a tracked task)."""
        while True:
            self.check()
            await asyncio.sleep(period)
