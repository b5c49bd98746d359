"""The escalation inside the controller's loop, as one pure transition.

`escalation.step` is the state machine on its own inputs. This module decides everything around
it that the controller's loop needs, so the shell (runtime/safety.py) only carries out effects
and reports what came of them:

- which inputs a controller event makes (the reading, a tick, the controller's new target) and
  how a controller car call counts (a road up or down, a cut accepted or failed);
- the order in which the step's actions run and their outcomes are stepped: every action of a
  step first, then each outcome in turn, depth first (an outcome's own actions before the next
  outcome), as one recursive feed would;
- what the escalation writes into the controller's state (the amps it set become the
  setpoint; a car taken for asleep is looked at again once it has power or took a command);
- when a resume restarts charging, the words and the severity of each alert.

`react(supervision, controller, event, now, cfg)` returns the new supervision, the controller's
state and at most one effect; the shell carries it out and reacts with its outcome, until no
effect is left. `held` answers a raise the controller wants to send while escalated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final, Literal

from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control.events import MeterFailed, Reading
from tesla_smart_charger.control.models import VehicleSnapshot, VehicleState
from tesla_smart_charger.control.state import (
    Action,
    CommandDone,
    ControllerEvent,
    ControllerState,
    SetAmps,
    Tick,
    VehicleUnavailable,
    VehicleUpdate,
)

# Outcomes that say the road to the car failed (not the car's own refusal or its sleep).
ROAD_FAILURES: Final = frozenset({"transient", "error", "rate_limited", "auth", "token"})
# A cut answered with one of these did not land. "asleep" too: Tesla's cloud answers "vehicle
# unavailable" to commands while the car is visibly charging (vehicle-command issue 452), and
# the meter, not that answer, says whether the car still draws.
CUT_FAILURES: Final = ROAD_FAILURES | {"asleep"}
ESCALATION_LEVELS: Final = ("none", "charge_stop", "relay_off")


# --- effects: what the shell carries out ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendCut:
    """The failed cut once more, on `road` only; a `CommandResult` follows."""

    road: str
    amps: int


@dataclass(frozen=True, slots=True)
class SendStop:
    """`charge_stop` (BLE first, then the cloud); a `CommandResult` follows."""


@dataclass(frozen=True, slots=True)
class SendAmps:
    """The safe current before the charger is powered again; a `CommandResult` follows."""

    amps: int


@dataclass(frozen=True, slots=True)
class RestartCharging:
    """`charge_start` once the episode is over; a `CommandResult` follows (only noted)."""


@dataclass(frozen=True, slots=True)
class SetRelay:
    """Switch the charger circuit; a `RelayResult` follows."""

    on: bool


@dataclass(frozen=True, slots=True)
class AskCar:
    """One look at what the car draws (never a wake); a `CarSeen` follows."""


@dataclass(frozen=True, slots=True)
class SendAlert:
    """One alert for the webhook and the log; `Done` follows."""

    event: str
    message: str
    severity: Literal["info", "warning"]
    house_amps: tuple[float, ...]
    limit: float


Effect = SendCut | SendStop | SendAmps | RestartCharging | SetRelay | AskCar | SendAlert


# --- events: what the shell reports -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handled:
    """The controller has decided on `event` (its state is the one passed with it)."""

    event: ControllerEvent


@dataclass(frozen=True, slots=True)
class CommandAnswered:
    """A controller car call ended with `outcome`; `road` is the road that carried it last."""

    action: Action
    outcome: ControllerEvent
    road: str


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command effect ended: the car took it, refused it, was asleep, or a road failed.

    `detail`: the words for the alert; `retry_after`: the failing road's policy wait.
    """

    result: Literal["ok", "refused", "asleep", "error"]
    detail: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The relay switched (`ok`), did not (`failed`), or another car's episode holds it off."""

    result: Literal["ok", "failed", "held"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CarSeen:
    """The look at the car: its snapshot, or None and why it failed."""

    snapshot: VehicleSnapshot | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Done:
    """An effect without an outcome of its own (an alert) was carried out."""


SupervisorEvent = Handled | CommandAnswered | CommandResult | RelayResult | CarSeen | Done


# --- state ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Supervision:
    """The escalation's state and the work in progress of the current feed."""

    escalation: esc.EscalationState = field(default_factory=esc.EscalationState)
    # What the controller's car calls said, stepped with the next controller event.
    noted: tuple[esc.Input, ...] = ()
    # Inputs not stepped yet, first first; a time of None: the time they are stepped at.
    agenda: tuple[tuple[esc.Input, float | None], ...] = ()
    todo: tuple[esc.Action, ...] = ()  # the current step's actions not yet carried out
    outcomes: tuple[esc.Input, ...] = ()  # what those carried out came to, stepped after them
    doing: esc.Action | None = None  # the action whose effect the shell is carrying out
    house: tuple[float, ...] = ()  # the real supply, for the alerts
    relay_held: str | None = None  # why the last "relay on" was held (another car's episode)
    charge_stop_steps: int = 0  # episodes that reached each step (/metrics)
    relay_off_steps: int = 0

    @property
    def steps(self) -> dict[str, int]:
        """How often each level was reached (`none` never is)."""
        return {"none": 0, "charge_stop": self.charge_stop_steps, "relay_off": self.relay_off_steps}


@dataclass(frozen=True, slots=True)
class Reaction:
    """The new supervision, the controller's state, and the next effect (None: done)."""

    supervision: Supervision
    controller: ControllerState
    effect: Effect | None = None


# --- the controller's state as the escalation leaves it (pure) --------------------------------


def look_again(state: ControllerState) -> ControllerState:
    """The controller's state once the car has power again or took a command: a car it took
    for asleep (Tesla's cloud says that of a car it cannot reach) or never saw is looked at on
    the next reading, instead of being left uncontrolled while it charges."""
    if state.vehicle is None or state.vehicle.state is not VehicleState.ONLINE:
        return replace(state, vehicle=None, first_look_done=False)
    return state


def resumed_at(state: ControllerState, amps: int, now: float) -> ControllerState:
    """The controller's state after the escalation set the car to `amps`.

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


def _before(state: ControllerState) -> float | None:
    """What a cut lowers from: the setpoint before the last command, else what the car drew."""
    if state.command_from is not None:
        return float(state.command_from)
    charge = state.vehicle.charge if state.vehicle is not None else None
    return float(charge.charger_actual_current) if charge is not None else None


# --- queries ----------------------------------------------------------------------------------


def held(sv: Supervision, action: Action, state: ControllerState) -> VehicleUnavailable | None:
    """While escalated, a raise is not sent: the answer the controller gets instead (a
    refusal, so it keeps its setpoint). Lowering is never held."""
    if not sv.escalation.active or not isinstance(action, SetAmps):
        return None
    before = state.command_from
    if before is not None and action.amps < before:
        return None
    return VehicleUnavailable(
        "refused",
        f"raise to {action.amps} A held: escalation {sv.escalation.level} in force",
        command=True,
    )


def car_reported(seen: CarSeen) -> esc.CarReported:
    """The car's own word on what it draws: its charger current while charging, else 0."""
    snap = seen.snapshot
    if snap is None:
        return esc.CarReported(None, seen.error)
    if snap.charge is None:
        return esc.CarReported(None, f"the car is {snap.state.value}")
    amps = snap.charge.charger_actual_current if snap.charge.charging else 0
    return esc.CarReported(float(amps))


# --- the transition ---------------------------------------------------------------------------


def react(
    sv: Supervision,
    ctl: ControllerState,
    event: SupervisorEvent,
    now: float,
    cfg: esc.EscalationConfig,
) -> Reaction:
    """Advance by one event at time `now`: the next effect to carry out, if any."""
    if isinstance(event, CommandAnswered):
        return Reaction(_noted(sv, event, ctl, now), ctl)
    if isinstance(event, Handled):
        sv = _inputs_of(sv, event.event, ctl, now)
    else:
        sv, ctl = _outcome(sv, event, ctl, now)
    return _run(sv, ctl, now, cfg)


def _noted(
    sv: Supervision, answered: CommandAnswered, ctl: ControllerState, now: float
) -> Supervision:
    """A controller command ended: note the road's health and a cut (accepted or failed)."""
    action, outcome, road = answered.action, answered.outcome, answered.road
    notes: list[esc.Input] = []
    if (
        isinstance(outcome, CommandDone)
        or (isinstance(outcome, VehicleUpdate) and outcome.snapshot.state is VehicleState.ONLINE)
        or (isinstance(outcome, VehicleUnavailable) and outcome.kind == "refused")
    ):
        # The car answered (a refusal too). A look that finds the car "asleep" proves no
        # road: the cloud says that of a charging car when it cannot reach it
        # (vehicle-command issue 452).
        notes.append(esc.RoadStatus(up=True))
    elif isinstance(outcome, VehicleUnavailable) and outcome.kind in ROAD_FAILURES:
        # Tried again when the road's policy allows (its retry_after), not sooner.
        notes.append(esc.RoadStatus(up=False, retry_at=now + outcome.retry_after))
    if isinstance(action, SetAmps):
        before = _before(ctl)
        if before is not None and action.amps < before:
            if isinstance(outcome, CommandDone):
                notes.append(esc.CutAccepted(road, before, float(action.amps)))
            elif isinstance(outcome, VehicleUnavailable) and outcome.kind in CUT_FAILURES:
                notes.append(esc.CutErrored(road, float(action.amps), outcome.detail))
    return replace(sv, noted=sv.noted + tuple(notes))


def _inputs_of(
    sv: Supervision, event: ControllerEvent, ctl: ControllerState, now: float
) -> Supervision:
    """The inputs a controller event makes, then the noted command outcomes."""
    first: esc.Input | None = None
    house = sv.house
    if isinstance(event, Reading) and event.reading.valid:
        # With several cars: the real reading for the breaker, this car's share for its own
        # charger channel, and what its cut should lower.
        real = event.whole if event.whole is not None else event.reading
        house = tuple(real.phase_amps)
        first = esc.Measured(real.worst_phase_amps, event.reading.car_amps, event.room_worst)
    elif isinstance(event, Tick | MeterFailed) or (
        isinstance(event, Reading) and not event.reading.valid
    ):
        first = esc.Tick()
    inputs: list[esc.Input] = ([first] if first is not None else []) + list(sv.noted)
    target = ctl.target if ctl.target is not None else ctl.setpoint
    if target != sv.escalation.target:
        # First: a retry decided on this event never sends more than the controller's newest
        # target (a cut it sent meanwhile is not undone).
        inputs.insert(0, esc.ControllerTarget(None if target is None else float(target)))
    agenda = tuple((item, now) for item in inputs) + sv.agenda
    return replace(sv, noted=(), house=house, agenda=agenda)


def _outcome(
    sv: Supervision, event: SupervisorEvent, ctl: ControllerState, now: float
) -> tuple[Supervision, ControllerState]:
    """What the effect of `sv.doing` came to, as an input stepped after the step's actions, and
    what it did to the controller's state."""
    doing, sv = sv.doing, replace(sv, doing=None)
    found: esc.Input | None = None
    match doing, event:
        case esc.RetryCut(road=road, amps=amps), CommandResult(result=result, detail=detail):
            if result != "ok":
                found = esc.CutErrored(road, amps, detail)
            else:
                before = _before(ctl)
                found = esc.CutAccepted(road, before if before is not None else amps, amps)
                # The car is now set to this: the controller's state says so (one setpoint).
                ctl = resumed_at(ctl, int(amps), now)
        case esc.ChargeStop(), CommandResult(result=result, detail=detail):
            # A refusal (e.g. not_charging) says it is stopped.
            ok = result in ("ok", "refused")
            found = esc.StopOutcome(ok=ok, error="" if ok else detail)
        case esc.SetAmps(amps=amps), CommandResult(result=result, detail=detail):
            if result == "ok":
                found = esc.AmpsOutcome(ok=True)
                ctl = resumed_at(ctl, int(amps), now)
            elif result == "error":
                found = esc.AmpsOutcome(ok=False, error=detail, retry_at=now + event.retry_after)
            else:
                # The car answered but did not take it: `step()` decides when to ask again.
                found = esc.AmpsOutcome(ok=False, error=detail, answer=result)
        case esc.SwitchRelay(on=on), RelayResult(result=result, detail=detail):
            if result == "held":
                # Another car's episode keeps the circuit off: no fault, asked again later.
                sv = replace(sv, relay_held=detail)
            else:
                found = esc.RelayOutcome(on=on, ok=result == "ok", error=detail)
        case esc.LookAtCar(), CarSeen():
            found = car_reported(event)
        case _:
            pass  # a restart or an alert: nothing to step
    if found is not None:
        sv = replace(sv, outcomes=(*sv.outcomes, found))
    return sv, ctl


def _run(sv: Supervision, ctl: ControllerState, now: float, cfg: esc.EscalationConfig) -> Reaction:
    """Step inputs until an action needs the shell, or nothing is left."""
    while True:
        if sv.todo:
            action, sv = sv.todo[0], replace(sv, todo=sv.todo[1:])
            sv, ctl, effect = _effect(sv, ctl, action, cfg)
            if effect is not None:
                return Reaction(replace(sv, doing=action), ctl, effect)
        elif sv.outcomes:
            # The step's actions are done: what they came to is stepped next, in order.
            later = tuple((item, None) for item in sv.outcomes)
            sv = replace(sv, outcomes=(), agenda=later + sv.agenda)
        elif sv.agenda:
            (item, at), rest = sv.agenda[0], sv.agenda[1:]
            before = sv.escalation.level
            state, actions = esc.step(sv.escalation, item, now if at is None else at, cfg)
            sv = replace(sv, escalation=state, agenda=rest, todo=actions)
            if state.level == "charge_stop" and before != "charge_stop":
                sv = replace(sv, charge_stop_steps=sv.charge_stop_steps + 1)
            elif state.level == "relay_off" and before != "relay_off":
                sv = replace(sv, relay_off_steps=sv.relay_off_steps + 1)
        else:
            return Reaction(sv, ctl)


def _effect(
    sv: Supervision, ctl: ControllerState, action: esc.Action, cfg: esc.EscalationConfig
) -> tuple[Supervision, ControllerState, Effect | None]:
    """The effect that carries `action` out; a resume also hands the car back to the controller."""
    match action:
        case esc.RetryCut(road=road, amps=amps):
            return sv, ctl, SendCut(road, int(amps))
        case esc.ChargeStop():
            return sv, ctl, SendStop()
        case esc.SwitchRelay(on=on):
            return replace(sv, relay_held=None), ctl, SetRelay(on)
        case esc.SetAmps(amps=amps):
            return sv, ctl, SendAmps(int(amps))
        case esc.Resume(restart_charging=restart):
            ctl = look_again(ctl)
            # No road: a charge_start could not land (the controller starts it once it can).
            return sv, ctl, RestartCharging() if restart and sv.escalation.road_up else None
        case esc.LookAtCar():
            return sv, ctl, AskCar()
        case esc.Alert(event=event, message=message):
            if event == "relay_on" and sv.relay_held is not None:
                message = f"room for the car has lasted 60 s, but {sv.relay_held}"
            severity: Literal["info", "warning"] = (
                "info" if event in ("resolved", "relay_on") else "warning"
            )
            return sv, ctl, SendAlert(event, message, severity, sv.house, cfg.home_max_amps)
    return sv, ctl, None  # pragma: no cover - every action is matched above
