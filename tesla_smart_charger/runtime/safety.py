"""The escalation's imperative shell, and the wiring of the BLE road, the relay and alerts.

The escalation decides in the pure core: `escalation.step` is its state machine and
`supervisor.react` everything around it in the controller's loop. `Escalator` runs in the
charge controller's coroutine (so escalation commands never race the controller's own),
carries out each effect `react` asks for and reports the outcome back as a typed event; it
decides nothing. The service calls three hooks:

- `hold(action, state)` before a car command: while an escalation step is in force a raise is
  held off (answered locally as a refusal, so the controller keeps its setpoint); cuts still go;
- `command_outcome(action, outcome, state)` after it: the core notes the road's health and a
  lowering `set_charging_amps` as a cut accepted or failed on the road that answered;
- `after_event(event, state, now)` after the controller handled an event: the core steps the
  escalation, the effects are carried out, and the controller's state comes back as the core
  left it (the amps the escalation set are its setpoint: the controller stays the one owner).

`AlertWatch` turns conditions that are not escalation steps (fail-safe, login required, a road
down for more than 5 minutes) into one alert per episode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from tesla_smart_charger import control as core
from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.failover import ROAD_DOWN_ALERT_SECS, ROAD_LABELS, FailoverVehicle
from tesla_smart_charger.car.fleet_api import TeslaClient
from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control import supervisor as sup
from tesla_smart_charger.control.interfaces import Relay, Vehicle
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
# What each escalation command is, in the command log, when the car took it.
_WHY: Final = {
    "charge_stop": "the car ignored the cut: escalation",
    "set_charging_amps": "before the charger is powered again",
    "charge_start": "escalation resolved",
}

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
    """Carries out the effects `control.supervisor.react` decides, inside the controller's
    coroutine, and reports what came of each; it decides nothing itself."""

    cfg: esc.EscalationConfig
    vehicle: Vehicle
    roads: FailoverVehicle | None = None
    relay: Relay | None = None
    relay_policy: RetryPolicy | None = None
    alerts: AlertSender | None = None
    record: Record | None = None
    clock: Callable[[], float] = time.monotonic
    label: str | None = None  # the car's name or VIN with several cars: alerts and logs name it
    guard: sup.Supervision = field(default_factory=sup.Supervision)

    @property
    def state(self) -> esc.EscalationState:
        """The escalation's own state (level, episode, road health)."""
        return self.guard.escalation

    @state.setter
    def state(self, value: esc.EscalationState) -> None:
        self.guard = replace(self.guard, escalation=value)

    @property
    def level(self) -> esc.Level:
        """`none`, `charge_stop` or `relay_off`: /status `controller.escalation`."""
        return self.guard.escalation.level

    @property
    def steps(self) -> dict[str, int]:
        """How often each level was reached (/metrics)."""
        return self.guard.steps

    def next_deadline(self) -> float | None:
        """When a tick may change the escalation without a new reading."""
        return esc.next_deadline(self.guard.escalation, self.cfg)

    # --- hooks called by the charge service ---------------------------------------------------
    def hold(self, action: core.Action, state: core.ControllerState) -> core.ControllerEvent | None:
        """While escalated, a raise is not sent: the answer the controller gets instead."""
        return sup.held(self.guard, action, state)

    def command_outcome(
        self, action: core.Action, outcome: core.ControllerEvent, state: core.ControllerState
    ) -> None:
        """A controller command ended: the core notes a cut (accepted or failed) and the road."""
        answered = sup.CommandAnswered(action, outcome, self._road())
        self.guard = sup.react(self.guard, state, answered, self.clock(), self.cfg).supervision

    async def after_event(
        self, event: core.ControllerEvent, state: core.ControllerState, now: float
    ) -> core.ControllerState:
        """Let the core react to the controller's event; carry out each effect it asks for and
        report its outcome, until it asks for none. Returns the controller's state as the
        escalation leaves it."""
        reaction = sup.react(self.guard, state, sup.Handled(event), now, self.cfg)
        while True:
            self.guard, state = reaction.supervision, reaction.controller
            if reaction.effect is None:
                return state
            result = await self._carry_out(reaction.effect)
            reaction = sup.react(self.guard, state, result, self.clock(), self.cfg)

    # --- internals ----------------------------------------------------------------------------
    def _road(self) -> str:
        if self.roads is not None and self.roads.last_road is not None:
            return self.roads.last_road
        return "cloud"

    def _on(self, road: str) -> Vehicle:
        if self.roads is not None and road in self.roads.road_names:
            return self.roads.on_road(road)
        return self.vehicle  # one road only: the retry goes the same way

    def _note(self, command: str, amps: int | None, result: str, why: str) -> None:
        if self.record is not None:
            self.record(command, amps, result, why)

    async def _carry_out(self, effect: sup.Effect) -> sup.SupervisorEvent:
        """One effect's I/O; its outcome in the core's terms (and a line in the command log)."""
        match effect:
            case sup.SendCut(road=road, amps=amps):
                return await self._retry_cut(road, amps)
            case sup.SendStop():
                return await self._command("charge_stop", None, self.vehicle.charge_stop())
            case sup.SendAmps(amps=amps):
                return await self._command(
                    "set_charging_amps", amps, self.vehicle.set_charging_amps(amps)
                )
            case sup.RestartCharging():
                return await self._command("charge_start", None, self.vehicle.charge_start())
            case sup.SetRelay(on=on):
                return await self._switch(on)
            case sup.AskCar():
                return await self._look()
            case sup.SendAlert():
                self._alert(effect)
        return sup.Done()

    async def _command(
        self, name: str, amps: int | None, call: Coroutine[Any, Any, None]
    ) -> sup.CommandResult:
        """An escalation command to the car; a sleeping car is never woken."""
        try:
            await call
        except CommandRefused as err:  # the car answered but did not take it
            if name == "charge_start":
                self._note(name, amps, "error", str(err))  # nothing follows from it
            else:
                self._note(name, amps, "refused", err.reason)
            return sup.CommandResult("refused", err.reason)
        except VehicleAsleep as err:  # never woken
            self._note(name, amps, "asleep" if name == "set_charging_amps" else "error", str(err))
            return sup.CommandResult("asleep", str(err))
        except ChargerError as err:
            self._note(name, amps, "error", str(err))
            return sup.CommandResult("error", str(err), err.retry_after)
        self._note(name, amps, "ok", _WHY[name])
        return sup.CommandResult("ok")

    async def _retry_cut(self, road: str, amps: int) -> sup.CommandResult:
        """The failed cut once more, on `road` only."""
        other = self.roads is not None and road in self.roads.road_names
        where = ROAD_LABELS.get(road, road) if other else "the same road (the only one)"
        try:
            await self._on(road).set_charging_amps(amps)
        except ChargerError as err:
            self._note("set_charging_amps", amps, "error", str(err))
            return sup.CommandResult("error", str(err), err.retry_after)
        self._note("set_charging_amps", amps, "ok", f"the cut did not land: retried on {where}")
        return sup.CommandResult("ok")

    async def _look(self) -> sup.CarSeen:
        """The car's own word on what it draws (one data call; a car that sleeps is not woken)."""
        try:
            snap = await self.vehicle.snapshot(with_charge_state=True, known_online=True)
        except ChargerError as err:
            return sup.CarSeen(None, str(err))
        return sup.CarSeen(snap)

    async def _switch(self, on: bool) -> sup.RelayResult:
        if self.relay is None:
            return sup.RelayResult("failed", "no safety relay configured")
        try:
            await self.relay.switch(on)
        except RelayHeld as err:
            return sup.RelayResult("held", str(err))
        except RelayError as err:
            if self.relay_policy is not None:
                kind: FailureKind = "fault" if isinstance(err, RelayAuthError) else "transient"
                self.relay_policy.failure(kind, str(err))
            return sup.RelayResult("failed", str(err))
        if self.relay_policy is not None:
            self.relay_policy.success()
        return sup.RelayResult("ok")

    def _alert(self, alert: sup.SendAlert) -> None:
        message = f"{self.label}: {alert.message}" if self.label is not None else alert.message
        level = logging.INFO if alert.severity == "info" else logging.WARNING
        _LOG.log(level, "escalation: %s", message)
        if self.alerts is not None:
            self.alerts.send(alert.event, message, house_amps=alert.house_amps, limit=alert.limit)


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
